// Shared pieces of the coordination tests: a unique bus root per test under /dev/shm, the compiled
// CLI (tests run `npx tsc -p .` first), and polling helpers.

import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Bus } from "../../src/bus/index.js";

export const REPO = join(fileURLToPath(new URL(".", import.meta.url)), "..", "..");
export const CLI = join(REPO, "dist", "src", "cli", "main.js");

export function tempRoot(): string {
  const base = existsSync("/dev/shm") ? "/dev/shm" : tmpdir();
  const root = join(base, `cfn-test-${randomBytes(6).toString("hex")}`);
  mkdirSync(root, { recursive: true });
  return root;
}

export function removeRoot(root: string): void {
  rmSync(root, { recursive: true, force: true });
}

/**
 * A bus "t" under a fresh root (removed by `cleanups`), and the global CLI flags that point a
 * `cfn` child at it.
 */
export function testBus(cleanups: Array<() => Promise<void> | void>) {
  const root = tempRoot();
  cleanups.push(() => removeRoot(root));
  const bus = new Bus({ config: { root, name: "t" } });
  const global = ["--bus-root", root, "--bus", "t", "--log-level", "warn"];
  return { root, bus, global, busDir: join(root, "t") };
}

/** Starts the CLI and SIGKILLs it (waiting for its exit) at cleanup if it still runs. */
export function startCliUntilCleanup(
  cleanups: Array<() => Promise<void> | void>,
  args: string[],
): ChildProcess {
  const child = startCli(args);
  cleanups.push(async () => {
    child.kill("SIGKILL");
    await exited(child);
  });
  return child;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the compiled CLI and resolves with its exit code and output. */
export function runCli(
  args: string[],
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      {
        env: { ...process.env, ...options.env },
        timeout: options.timeoutMs ?? 60_000,
        maxBuffer: 16 * 1024 * 1024,
      },
      (error, stdout, stderr) => {
        const code = error
          ? typeof (error as { code?: unknown }).code === "number"
            ? (error as { code: number }).code
            : 1
          : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** Starts the compiled CLI as a child process (for SIGTERM / SIGKILL tests). */
export function startCli(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  return spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
}

export async function waitFor(
  condition: () => boolean,
  timeoutMs = 20_000,
  what = "condition",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
}

export function collect(child: ChildProcess): { stdout: () => string; stderr: () => string } {
  let out = "";
  let err = "";
  child.stdout?.on("data", (chunk) => (out += chunk));
  child.stderr?.on("data", (chunk) => (err += chunk));
  return { stdout: () => out, stderr: () => err };
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
