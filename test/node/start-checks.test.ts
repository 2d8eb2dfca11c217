// Start-up refusals with real node processes (exit status 2, a typed CFN_ERR_CONFIG_INVALID
// naming the fix): the built-in single-node token on an address others can reach, and too few
// file descriptors (ulimit -n). Plus the checks themselves, in process.

import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  FD_LIMIT_MIN,
  preflightFileDescriptors,
  readFileDescriptorLimit,
} from "../../src/cli/fd-preflight.js";
import { checkFileDescriptorLimit } from "../../src/node/listen-probe.js";
import { isLoopbackHost, parseNodeConfig, SINGLE_NODE_TOKEN } from "../../src/node/node-config.js";
import { silentLogger } from "../../src/obs/logger.js";
import { CLI, freePort, refusal, scratchDir } from "./harness.js";

const roots: string[] = [];
afterEach(() => {
  for (const root of roots.splice(0)) rmSync(root, { recursive: true, force: true });
});

/**
 * Runs `cfn node start` (optionally under `prlimit`) with no --token; resolves with the exit code
 * and stderr, or "started" once it printed its started line (then it is killed).
 */
async function startNode(
  args: string[],
  prefix: string[] = [],
): Promise<{ code: number | null; started: boolean; stderr: string }> {
  const root = scratchDir("cfn-start-checks-");
  roots.push(root);
  const env = { ...process.env };
  delete env.CFN_CLUSTER_TOKEN;
  delete env.CFN_NODE_CLUSTER_TOKEN;
  const command = [
    process.execPath,
    CLI,
    "--bus-root",
    join(root, "bus"),
    "--log-level",
    "warn",
    "node",
    "start",
    "--data-dir",
    join(root, "data"),
    ...args,
  ];
  const all = [...prefix, ...command];
  const child = spawn(all[0], all.slice(1), { env, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  let started = false;
  child.stderr.on("data", (chunk) => {
    stderr += String(chunk);
  });
  child.stdout.on("data", (chunk) => {
    if (String(chunk).includes('"event":"started"')) {
      started = true;
      child.kill("SIGKILL");
    }
  });
  const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
  return { code, started, stderr };
}

describe("the built-in token on a non-loopback address", () => {
  it("is refused for the API or the peer listener off loopback, accepted on loopback", () => {
    for (const settings of [{ apiListen: "0.0.0.0:7201" }, { peerListen: "10.1.2.3:7101" }]) {
      const message = refusal(() => parseNodeConfig(settings));
      expect(message).toContain("CFN_ERR_CONFIG_INVALID");
      expect(message).toContain("single-node default");
      expect(message).toContain(Object.keys(settings)[0]);
      expect(message).toContain("--token");
      expect(message).toContain("CFN_NODE_CLUSTER_TOKEN");
    }
    for (const host of ["127.0.0.1", "127.8.9.10", "localhost", "LOCALHOST"]) {
      const config = parseNodeConfig({ apiListen: `${host}:7201`, peerListen: `${host}:7101` });
      expect(config.clusterToken).toBe(SINGLE_NODE_TOKEN);
    }
    // Its own secret: any address.
    expect(parseNodeConfig({ apiListen: "0.0.0.0:7201", clusterToken: "z".repeat(24) }).apiListen).toBe(
      "0.0.0.0:7201",
    );
    expect(isLoopbackHost("127.0.0.256")).toBe(false);
    expect(isLoopbackHost("128.0.0.1")).toBe(false);
    expect(isLoopbackHost("0.0.0.0")).toBe(false);
    expect(isLoopbackHost("localhost.example.com")).toBe(false);
  });

  it("refuses `cfn node start --api-listen 0.0.0.0:…` without a token (exit 2), starts on loopback", async () => {
    const [api, peer] = [await freePort(), await freePort()];
    const exposed = await startNode(["--api-listen", `0.0.0.0:${api}`, "--peer-listen", `127.0.0.1:${peer}`]);
    expect(exposed.started).toBe(false);
    expect(exposed.code).toBe(2);
    expect(exposed.stderr).toContain("CFN_ERR_CONFIG_INVALID");
    expect(exposed.stderr).toContain(`node.apiListen 0.0.0.0:${api} is not a loopback address`);
    expect(exposed.stderr).toContain("--token");

    const loopback = await startNode([
      "--api-listen",
      `127.0.0.1:${api}`,
      "--peer-listen",
      `127.0.0.1:${peer}`,
    ]);
    expect(loopback.started, loopback.stderr).toBe(true);
  });
});

describe("the open-files limit", () => {
  it("reads /proc/self/limits and refuses below the minimum, warns below the caps plus a reserve", () => {
    const text =
      "Max cpu time   unlimited  unlimited  seconds\nMax open files            64                   4096                 files\n";
    expect(readFileDescriptorLimit(text)).toEqual({ soft: 64, hard: 4096 });
    expect(readFileDescriptorLimit()?.soft).toBeGreaterThan(0);
    const caps = { apiConnectionsMax: 512, peerPendingConnectionsMax: 64 };
    const message = refusal(() => checkFileDescriptorLimit(caps, silentLogger, { soft: 64, hard: 64 }));
    expect(message).toContain("CFN_ERR_CONFIG_INVALID");
    expect(message).toContain("ulimit -n) is 64");
    expect(message).toContain(`at least ${FD_LIMIT_MIN}`);
    const warnings: Record<string, unknown>[] = [];
    const logger = {
      ...silentLogger,
      warn: (_m: string, f?: Record<string, unknown>) => warnings.push(f ?? {}),
    };
    checkFileDescriptorLimit(caps, logger, { soft: 300, hard: 300 });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ soft: 300, wanted: 512 + 64 + 256 });
    checkFileDescriptorLimit(caps, logger, { soft: 65_536, hard: 65_536 });
    expect(warnings).toHaveLength(1);
    // The pre-flight touches only `cfn node start`.
    expect(() =>
      preflightFileDescriptors(["node", "cfn", "bus", "status"], { soft: 10, hard: 10 }),
    ).not.toThrow();
  });

  it("warns at start when `ulimit -n` is below the connection caps plus a reserve", async () => {
    const [api, peer] = [await freePort(), await freePort()];
    const low = await startNode(
      ["--api-listen", `127.0.0.1:${api}`, "--peer-listen", `127.0.0.1:${peer}`],
      ["prlimit", "--nofile=300:300"],
    );
    expect(low.started, low.stderr).toBe(true);
    expect(low.stderr).toContain("the open-files limit (ulimit -n) is below the connection caps");
  });

  it("refuses `cfn node start` under `ulimit -n 64` with a typed error naming the limit (exit 2)", async () => {
    const [api, peer] = [await freePort(), await freePort()];
    const tiny = await startNode(
      ["--api-listen", `127.0.0.1:${api}`, "--peer-listen", `127.0.0.1:${peer}`],
      ["prlimit", "--nofile=64:64"],
    );
    expect(tiny.started).toBe(false);
    expect(tiny.stderr).not.toContain("EMFILE");
    expect(tiny.stderr).toContain("CFN_ERR_CONFIG_INVALID too few file descriptors");
    expect(tiny.stderr).toContain("(ulimit -n) is 64");
    expect(tiny.stderr).toContain(`at least ${FD_LIMIT_MIN}`);
    expect(tiny.code).toBe(2);
  });
});
