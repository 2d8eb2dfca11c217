// metrics.jsonlPath: a path that cannot hold the stream is a typed configuration error at start
// (in `cfn config validate` too), and a write that fails later is counted and logged once, never
// thrown, so a refused send still fails with its own typed error. The CLI cases run the compiled
// code (dist/): build first.

import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config/load.js";
import { isCfnError } from "../../src/errors.js";
import { jsonlPathProblem } from "../../src/obs/jsonl-path.js";
import { type Logger, silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { openTestBus, REPO, tempRoot } from "../bus/helpers.js";

const CLI = join(REPO, "dist", "src", "cli", "main.js");

let root: string;
let cleanup: () => void;

beforeEach(() => {
  ({ root, cleanup } = tempRoot());
});

afterEach(() => {
  cleanup();
});

/** The bad paths the exploratory test found: a directory, a parent that is a file, /proc. */
function badPaths(): Record<string, { path: string; problem: RegExp }> {
  mkdirSync(join(root, "a-directory"));
  writeFileSync(join(root, "a-file"), "");
  return {
    directory: { path: join(root, "a-directory"), problem: /is a directory/ },
    "trailing slash": { path: `${join(root, "new")}/`, problem: /names a directory/ },
    "file as parent": { path: join(root, "a-file", "sub", "metrics.jsonl"), problem: /is not a directory/ },
    "under /proc": { path: "/proc/cfn/metrics.jsonl", problem: /under \/proc, a kernel pseudo file system/ },
    "a /proc file": { path: "/proc/self/status", problem: /under \/proc/ },
    "under /sys": { path: "/sys/cfn.jsonl", problem: /under \/sys/ },
  };
}

function recordingLogger(lines: string[]): Logger {
  const logger: Logger = {
    ...silentLogger,
    warn: (message) => {
      lines.push(message);
    },
    child: () => logger,
  };
  return logger;
}

function cli(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { ...process.env, CFN_BUS_ROOT: join(root, "bus"), ...env }, timeout: 20_000 },
      (error, stdout, stderr) => {
        const code = error ? ((error as { code?: number }).code ?? null) : 0;
        resolve({ code: typeof code === "number" ? code : null, stdout, stderr });
      },
    );
  });
}

describe("metrics.jsonlPath is checked at start", () => {
  it("accepts a new file in new directories, an existing file, and /dev/stdout", () => {
    expect(jsonlPathProblem(join(root, "new", "deeper", "metrics.jsonl"))).toBeUndefined();
    writeFileSync(join(root, "existing.jsonl"), "");
    expect(jsonlPathProblem(join(root, "existing.jsonl"))).toBeUndefined();
    if (existsSync("/dev/stdout")) expect(jsonlPathProblem("/dev/stdout")).toBeUndefined();
    const path = join(root, "new", "deeper", "metrics.jsonl");
    new Metrics({ jsonlPath: path, logger: silentLogger }).emit("cfn_x_total", 1);
    expect(JSON.parse(readFileSync(path, "utf8"))).toMatchObject({ name: "cfn_x_total", value: 1 });
  });

  it("refuses each bad path with CFN_ERR_CONFIG_INVALID naming metrics.jsonlPath, from the config and from Metrics", () => {
    for (const [what, { path, problem }] of Object.entries(badPaths())) {
      expect(jsonlPathProblem(path), what).toMatch(problem);
      for (const attempt of [
        () => loadConfig({ env: { CFN_METRICS_JSONL_PATH: path } }),
        () => new Metrics({ jsonlPath: path, logger: silentLogger }),
      ]) {
        let caught: unknown;
        try {
          attempt();
        } catch (error) {
          caught = error;
        }
        expect(isCfnError(caught, "CFN_ERR_CONFIG_INVALID"), `${what}: ${String(caught)}`).toBe(true);
        expect((caught as Error).message, what).toContain("metrics.jsonlPath");
        expect((caught as Error).message, what).toMatch(problem);
        expect((caught as { details?: { field?: string } }).details?.field, what).toBe("metrics.jsonlPath");
      }
    }
    expect(loadConfig({ env: {} }).metrics.jsonlPath).toBe("");
  });

  it("cfn config validate and cfn send report the bad path as a configuration error, promptly and without a stack", async () => {
    if (!existsSync(CLI)) throw new Error("dist/src/cli/main.js is missing: run npm run build first");
    for (const [what, { path }] of Object.entries(badPaths())) {
      for (const args of [
        ["config", "validate"],
        ["send", "worker", "hello"],
      ]) {
        const started = Date.now();
        const result = await cli(args, { CFN_METRICS_JSONL_PATH: path });
        expect(result.code, `${what}: ${args.join(" ")}: ${result.stderr}`).toBe(2);
        expect(result.stderr).toMatch(
          /^cfn: CFN_ERR_CONFIG_INVALID invalid configuration: metrics\.jsonlPath: /,
        );
        expect(result.stderr).not.toContain("unexpected error");
        expect(result.stderr).not.toMatch(/\n\s+at /);
        expect(Date.now() - started, `${what}: ${args.join(" ")} returns`).toBeLessThan(15_000);
      }
    }
  });
});

describe("a JSONL write that fails later", () => {
  it("never replaces a send's typed error: it is counted and logged once, and the stream resumes", async () => {
    const jsonlPath = join(root, "stream", "metrics.jsonl");
    const lines: string[] = [];
    const metrics = new Metrics({ jsonlPath, logger: recordingLogger(lines) });
    const bus = openTestBus(root, { inboxDepthMax: 1, batchMessagesMax: 1 }, { metrics });
    bus.sendSync("lead", "worker", { type: "t" });
    // The stream's file is replaced by a directory (EISDIR on every append from now on).
    rmSync(join(root, "stream"), { recursive: true });
    mkdirSync(jsonlPath, { recursive: true });
    for (const agent of ["worker", "worker-2"]) {
      if (agent !== "worker") bus.sendSync("lead", agent, { type: "t" });
      let caught: unknown;
      try {
        bus.sendSync("lead", agent, { type: "t" });
      } catch (error) {
        caught = error;
      }
      expect(isCfnError(caught, "CFN_ERR_INBOX_FULL"), String(caught)).toBe(true);
    }
    metrics.emit("cfn_x_total", 1);
    expect(await metrics.value("cfn_metrics_jsonl_write_failures_total")).toBe(3);
    expect(lines.filter((line) => line.includes("JSONL stream: write failed"))).toHaveLength(1);
    expect(await metrics.value("cfn_bus_inbox_overflows_total")).toBe(2);
    // The path is a file again: lines are written, and a later failure is logged again.
    rmSync(jsonlPath, { recursive: true });
    metrics.emit("cfn_x_total", 2);
    expect(JSON.parse(readFileSync(jsonlPath, "utf8"))).toMatchObject({ name: "cfn_x_total", value: 2 });
    bus.close();
  });
});
