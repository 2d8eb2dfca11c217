// What every command builds from the global options (src/cli/context.ts): here, that a metrics
// JSONL write failing after start is logged through the command's logger, at the configured level.

import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Command } from "commander";
import { afterEach, describe, expect, it, vi } from "vitest";
import { buildContext, demotedLogger } from "../../src/cli/context.js";
import { issuedTo } from "../../src/cli/swarm-commands.js";
import { createLogger } from "../../src/obs/logger.js";

const roots: string[] = [];
afterEach(() => {
  vi.restoreAllMocks();
  vi.unstubAllEnvs();
  for (const root of roots.splice(0)) rmSync(root, { recursive: true, force: true });
});

/** The global option buildContext reads here, parsed like `cfn --log-level <level> …`. */
function programWith(logLevel: string): Command {
  const program = new Command().option("--log-level <level>").allowUnknownOption();
  program.parse(["--log-level", logLevel], { from: "user" });
  return program;
}

/** Builds a context whose JSONL path then turns into a directory, emits once, returns stderr. */
function stderrOfFailingWrite(logLevel: string): string {
  const root = mkdtempSync(join(tmpdir(), "cfn-context-"));
  roots.push(root);
  const path = join(root, "metrics.jsonl");
  vi.stubEnv("CFN_METRICS_JSONL_PATH", path);
  vi.stubEnv("CFN_LOG_LEVEL", "");
  const { metrics } = buildContext(programWith(logLevel));
  mkdirSync(path); // the file replaced by a directory: the next append fails (EISDIR)
  const written: string[] = [];
  vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
    written.push(String(chunk));
    return true;
  });
  metrics.emit("cfn_test_total", 1);
  vi.mocked(process.stderr.write).mockRestore();
  return written.join("");
}

describe("buildContext", () => {
  it("logs a failed metrics JSONL write through its logger: shown at warn, silent at error", () => {
    const shown = stderrOfFailingWrite("warn");
    expect(shown).toContain('"ns":"cfn:metrics"');
    expect(shown).toContain("metrics JSONL stream: write failed");
    expect(stderrOfFailingWrite("error")).toBe("");
    expect(stderrOfFailingWrite("silent")).toBe("");
  });
});

describe("CLI output helpers", () => {
  it("demotedLogger logs the chosen lines at debug, the others as they were, children too", () => {
    const lines: string[] = [];
    const base = createLogger("cfn", { level: "info", write: (line) => lines.push(JSON.parse(line).msg) });
    const logger = demotedLogger(base, (message) => message === "noise");
    logger.warn("noise");
    logger.child("bus").info("noise");
    logger.warn("news");
    logger.child("bus").info("more news");
    expect(lines).toEqual(["news", "more news"]);
  });

  it("a round with items is issued to the agents that get one, not to the whole swarm", () => {
    expect(issuedTo(undefined, 20)).toBe("issued to 20 agents");
    expect(issuedTo([1, 2, 3, 4, 5], 20)).toBe("issued: 5 items to 5 of 20 agents");
    expect(issuedTo(Array.from({ length: 30 }), 20)).toBe("issued: 30 items to 20 of 20 agents");
  });
});
