// The `cfn` command end to end: the compiled CLI in a child process, a real bus on tmpfs.

import { execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { BUSY_PROCESS_NODE_FLAGS } from "../../src/runtime-flags.js";

const run = promisify(execFile);
const cli = join(import.meta.dirname, "..", "..", "dist", "src", "cli", "main.js");

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

let root: string;

async function cfn(args: string[], env: Record<string, string> = {}): Promise<Result> {
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, ...args], {
      env: { ...process.env, CFN_BUS_ROOT: root, CFN_LOG_LEVEL: "warn", ...env },
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

beforeEach(() => {
  root = mkdtempSync(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "cfn-cli-test-"));
});
afterEach(() => {
  rmSync(root, { recursive: true, force: true });
});

describe("cfn CLI", () => {
  it("starts through its shebang with the busy-process Node flags", () => {
    // `cfn node start` from a shell gets cfn's heap settings this way (src/runtime-flags.ts).
    const firstLine = readFileSync(cli, "utf8").split("\n", 1)[0];
    expect(firstLine).toBe(`#!/usr/bin/env -S node ${BUSY_PROCESS_NODE_FLAGS.join(" ")}`);
  });

  it("sends and receives in priority order, acknowledging what it printed", async () => {
    expect((await cfn(["send", "worker-1", '{"n":1}', "--from", "lead"])).code).toBe(0);
    expect((await cfn(["send", "worker-1", "urgent", "--priority", "high", "--type", "task"])).code).toBe(0);

    const first = await cfn(["recv", "worker-1", "--max", "10", "--json"]);
    expect(first.code).toBe(0);
    const messages = first.stdout
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    expect(messages.map((message) => message.payload)).toEqual(["urgent", { n: 1 }]);
    expect(messages[0]).toMatchObject({ from: "cli", to: "worker-1", type: "task", priority: "high" });
    expect(messages[1]).toMatchObject({ from: "lead", priority: "normal" });

    const again = await cfn(["recv", "worker-1", "--wait", "100"]);
    expect(again.code).toBe(3);
    // An empty inbox is reported as the error it is, as text or JSON.
    expect(again.stderr).toContain("cfn: CFN_ERR_TIMEOUT no message for worker-1 within 100 ms");
    const againJson = await cfn(["recv", "worker-1", "--json"]);
    expect(againJson.code).toBe(3);
    expect(JSON.parse(againJson.stderr).error).toMatchObject({ code: "CFN_ERR_TIMEOUT" });
    // A header that would vanish as an object key, or is given twice, is refused, not dropped.
    for (const header of [
      ["--header", "__proto__=x"],
      ["--header", "a=1", "--header", "a=2"],
    ]) {
      const refused = await cfn(["send", "worker-1", '"x"', ...header]);
      expect(refused.code, refused.stderr).toBe(2);
      expect(refused.stderr).toContain("CFN_ERR_INVALID_MESSAGE");
    }
    expect(again.stdout).toBe("");
  });

  it("shows inbox depth and dead letters in status, as text and JSON", async () => {
    for (let i = 0; i < 3; i++) await cfn(["send", "agent-a", String(i)]);
    const json = await cfn(["status", "--json"]);
    expect(json.code).toBe(0);
    const status = JSON.parse(json.stdout);
    expect(status.agents).toEqual([
      expect.objectContaining({ agentId: "agent-a", inboxDepth: 3, deadLetters: 0 }),
    ]);

    const text = await cfn(["status"]);
    expect(text.stdout).toMatch(/agent-a\s+3\s+0\s+0/);

    const unknown = await cfn(["status", "--agent", "nobody", "--json"]);
    expect(unknown.code).toBe(1);
    expect(JSON.parse(unknown.stderr).error.code).toBe("CFN_ERR_UNKNOWN_AGENT");
  });

  it("refuses a full inbox with CFN_ERR_INBOX_FULL and keeps what was queued", async () => {
    const env = { CFN_BUS_INBOX_DEPTH_MAX: "2", CFN_BUS_BATCH_MESSAGES_MAX: "2" };
    expect((await cfn(["send", "w", "1"], env)).code).toBe(0);
    expect((await cfn(["send", "w", "2"], env)).code).toBe(0);
    const full = await cfn(["send", "w", "3", "--json"], env);
    expect(full.code).toBe(1);
    // One line: the command's error, not also the bus's JSON warning about the same refusal.
    expect(full.stderr.trim().split("\n")).toHaveLength(1);
    expect(JSON.parse(full.stderr).error.code).toBe("CFN_ERR_INBOX_FULL");
    const text = await cfn(["send", "w", "3"], { ...env, CFN_LOG_LEVEL: "info" });
    expect(text.stderr).toBe("cfn: CFN_ERR_INBOX_FULL inbox of w holds 2 of 2 messages\n");
    const status = JSON.parse((await cfn(["status", "--json"], env)).stdout);
    expect(status.agents[0].inboxDepth).toBe(2);
  });

  it("rejects invalid agent ids and invalid settings with exit status 2 and a named field", async () => {
    const traversal = await cfn(["send", "../etc", "x"]);
    expect(traversal.code).toBe(2);
    expect(traversal.stderr).toContain("CFN_ERR_INVALID_AGENT_ID");
    const statusTraversal = await cfn(["status", "--agent", "../x"]);
    expect(statusTraversal.code).toBe(2);
    expect(statusTraversal.stderr).toContain("CFN_ERR_INVALID_AGENT_ID");
    // A malformed command line is a usage error; with --json it is one JSON line, no help text.
    for (const args of [
      ["send", "--json"],
      ["recv", "w", "--bogus", "--json"],
      ["send", "a", "b", "c", "--json"],
    ]) {
      const usage = await cfn(args);
      expect(usage.code, args.join(" ")).toBe(2);
      expect(JSON.parse(usage.stderr).error.code, args.join(" ")).toBe("CFN_ERR_USAGE");
    }

    const badConfig = await cfn(["config", "validate"], { CFN_BUS_SHARDS: "0" });
    expect(badConfig.code).toBe(2);
    expect(badConfig.stderr).toContain("bus.shards");

    const good = await cfn(["config", "validate", "--json"]);
    expect(JSON.parse(good.stdout)).toEqual({ valid: true, profile: "dev" });
  });

  it("warns about a misspelt CFN_* variable, and config validate refuses it (exit 2)", async () => {
    const env = { CFN_BUS_INBOX_DEPT_MAX: "5" };
    const hint =
      "CFN_BUS_INBOX_DEPT_MAX is not a cfn setting or variable (did you mean CFN_BUS_INBOX_DEPTH_MAX?)";
    const sent = await cfn(["send", "w", "1"], env);
    expect(sent.code).toBe(0);
    expect(sent.stderr).toBe(`cfn: warning: ${hint}; it is ignored\n`);
    const validate = await cfn(["config", "validate"], env);
    expect(validate.code).toBe(2);
    expect(validate.stdout).toBe("");
    expect(validate.stderr).toBe(`cfn: CFN_ERR_CONFIG_INVALID ${hint}; it is ignored\n`);
    const json = await cfn(["config", "validate", "--json"], env);
    expect(json.code).toBe(2);
    expect(JSON.parse(json.stdout)).toMatchObject({
      valid: false,
      problems: [expect.stringContaining(hint)],
    });
    // Client variables and the agent contract's variables are known: no warning.
    const clients = {
      CFN_API_TOKEN: "x",
      CFN_NODE_API: "http://127.0.0.1:1",
      CFN_TOPOLOGY: "flat:2",
      CFN_TEAM: "t",
    };
    expect((await cfn(["config", "validate"], clients)).code).toBe(0);
  });

  it("refuses --wait-ms past bus.sendWaitMsMax and recv --max 0 as usage errors (exit 2)", async () => {
    const long = await cfn(["send", "w", "1", "--wait-ms", "99999999"]);
    expect(long.code).toBe(2);
    expect(long.stderr).toMatch(
      /^cfn: CFN_ERR_CONFIG_INVALID --wait-ms: at most bus.sendWaitMsMax \(30000 ms/,
    );
    const none = await cfn(["recv", "w", "--max", "0"]);
    expect(none.code).toBe(2);
    expect(none.stderr).toBe("cfn: CFN_ERR_CONFIG_INVALID --max: expected a whole number ≥ 1, got 0\n");
  });

  it("status of a bus that does not exist says so, exits 2 and creates nothing", async () => {
    expect((await cfn(["send", "w", "1"])).code).toBe(0); // the bus "default" exists now
    const typo = await cfn(["--bus", "typo", "status"]);
    expect(typo.code).toBe(2);
    expect(typo.stdout).toBe("");
    expect(typo.stderr).toMatch(
      /^cfn: CFN_ERR_CONFIG_INVALID no bus typo under \S+ \(bus\.name, --bus; buses there: /,
    );
    expect(existsSync(join(root, "typo"))).toBe(false);
    const swarms = await cfn(["--bus", "typo", "swarm", "status"]);
    expect(swarms.code).toBe(2);
    expect(existsSync(join(root, "typo"))).toBe(false);
  });

  it("recv on an agent nothing was sent to creates no mailbox, with or without --wait", async () => {
    const missingBus = await cfn(["--bus", "typo", "recv", "w"]);
    expect(missingBus.code).toBe(2);
    expect(missingBus.stderr).toMatch(/^cfn: CFN_ERR_CONFIG_INVALID no bus typo under /);
    expect(existsSync(join(root, "typo"))).toBe(false);
    expect((await cfn(["send", "w", "1"])).code).toBe(0); // the bus "default" exists now
    const unknown = await cfn(["recv", "nobody"]);
    expect(unknown.code).toBe(3);
    expect(unknown.stderr).toBe(
      "cfn: CFN_ERR_TIMEOUT no message for nobody (no mailbox yet: nothing was sent to it)\n",
    );
    const waited = await cfn(["recv", "nobody-either", "--wait", "50"]);
    expect(waited.code).toBe(3);
    const status = JSON.parse((await cfn(["status", "--json"])).stdout);
    expect(status.agents.map((agent: { agentId: string }) => agent.agentId)).toEqual(["w"]);
    const bad = await cfn(["recv", "../x"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("CFN_ERR_INVALID_AGENT_ID");
  });

  it("status logs its housekeeping at debug, not info", async () => {
    expect((await cfn(["send", "w", "1"])).code).toBe(0);
    const busDir = join(root, readdirSync(root)[0]);
    // A spare file of a process that is gone (pid 2^22 + 1 is above Linux's pid_max).
    writeFileSync(join(busDir, "tmp", "spare_4194305_x"), "");
    const status = await cfn(["status"], { CFN_LOG_LEVEL: "info" });
    expect(status.code).toBe(0);
    expect(status.stderr).toBe("");
    expect(existsSync(join(busDir, "tmp", "spare_4194305_x"))).toBe(false); // still swept
  });

  it("swarm stop without --name names the default it looked for; send --id says where dedup happens", async () => {
    const stop = await cfn(["swarm", "stop"]);
    expect(stop.code).toBe(1);
    expect(stop.stderr).toMatch(
      /^cfn: CFN_ERR_UNKNOWN_AGENT no swarm named "swarm" \(the default; pass --name\) on bus \S+ \(no swarms there\)\n$/,
    );
    expect((await cfn(["swarm", "stop", "--help"])).stdout).toContain('swarm to stop (default "swarm")');
    expect((await cfn(["send", "--help"])).stdout).toMatch(/dedup is\s+downstream/);
  });

  it("config show never prints the cluster token", async () => {
    const secret = "a-secret-cluster-token-4242";
    for (const env of [{ CFN_CLUSTER_TOKEN: secret }, { CFN_NODE_CLUSTER_TOKEN: secret }] as Record<
      string,
      string
    >[]) {
      const shown = await cfn(["config", "show"], env);
      expect(shown.code).toBe(0);
      expect(shown.stdout).not.toContain(secret);
      expect(JSON.parse(shown.stdout).node.clusterToken).toBe("(redacted)");
    }
    expect(JSON.parse((await cfn(["config", "show"])).stdout).node.clusterToken).toContain(
      "single-node default",
    );
  });

  it("ends quietly when the reader of its output goes away (cfn … | head)", async () => {
    const child = spawn(process.execPath, [cli, "config", "docs"], {
      env: { ...process.env, CFN_BUS_ROOT: root },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout.destroy(); // the reader is gone before the first write: every write is EPIPE
    let stderr = "";
    child.stderr.on("data", (chunk) => {
      stderr += String(chunk);
    });
    const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
    expect(stderr).toBe("");
    expect(code).toBe(0);
  });
});
