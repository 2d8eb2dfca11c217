// Shared helpers of the bus tests: a unique tmpfs root per test, and child processes running the
// compiled example agents (build first: `npx tsc -p .`).

import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Bus, type BusOptions } from "../../src/bus/index.js";
import type { BusConfig } from "../../src/config/schema.js";

export const REPO = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const NODE_AGENT = join(REPO, "dist", "examples", "bus-node-agent.js");
export const BASH_AGENT = join(REPO, "examples", "bash-agent.sh");

/** A fresh root under /dev/shm (or the OS temp dir), removed by the returned cleanup. */
export function tempRoot(): { root: string; cleanup: () => void } {
  const base = existsSync("/dev/shm") ? "/dev/shm" : tmpdir();
  const root = join(base, `cfn-test-${process.pid}-${randomBytes(4).toString("hex")}`);
  mkdirSync(root, { recursive: true });
  return { root, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

export function openTestBus(
  root: string,
  config: Partial<BusConfig> = {},
  options: Omit<BusOptions, "config"> = {},
): Bus {
  return new Bus({ config: { root, name: "test", ...config }, ...options });
}

export interface ChildResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion. */
export function run(command: string, args: string[], timeoutMs = 30_000): Promise<ChildResult> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error ? ((error as { code?: number }).code ?? null) : 0;
      resolve({ code: typeof code === "number" ? code : null, stdout, stderr });
    });
  });
}

/** Starts a command and returns its completion promise (for concurrent children). */
export function start(command: string, args: string[]): Promise<ChildResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
    });
    child.stderr.on("data", (chunk) => {
      stderr += chunk;
    });
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

export function nodeAgent(args: string[]): Promise<ChildResult> {
  return start(process.execPath, [NODE_AGENT, ...args]);
}

// biome-ignore lint/suspicious/noExplicitAny: test output of arbitrary JSON shape
export function jsonLines(stdout: string): Record<string, any>[] {
  return stdout
    .split("\n")
    .filter((line) => line.trim().length > 0)
    .map((line) => JSON.parse(line));
}

/** A protocol envelope from s1 (or `from`) to `to` with a payload of `payloadBytes` x's. */
export function envelopeOf(id: string, payloadBytes: number, from = "s1", to = "r1") {
  return {
    v: 1,
    id,
    from,
    to,
    type: "t",
    priority: "normal",
    ts: 1,
    seq: 1,
    headers: {},
    payload: "x".repeat(payloadBytes),
  };
}
