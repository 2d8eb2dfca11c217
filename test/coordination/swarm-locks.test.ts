// The exclusive lock files of a local swarm (round lock, spawn reservation): O_EXCL, the owner's
// pid and start time, refusal naming a live owner, takeover of a stale one.

import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { processStartOf } from "../../src/coordination/liveness.js";
import { swarmsDir } from "../../src/coordination/registry.js";
import { acquireSwarmLock, readSwarmLock, swarmLockPath } from "../../src/coordination/swarm-locks.js";
import { isCfnError } from "../../src/errors.js";
import { exited, removeRoot, tempRoot } from "./helpers.js";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function busDir(): string {
  const root = tempRoot();
  cleanups.push(() => removeRoot(root));
  return root;
}

function writeLock(dir: string, owner: Record<string, unknown>): void {
  mkdirSync(swarmsDir(dir), { recursive: true });
  writeFileSync(
    swarmLockPath(dir, "s", "round"),
    JSON.stringify({ token: "other", acquiredAtMs: 1, ...owner }),
  );
}

function busyError(run: () => unknown): { message: string; details: Record<string, unknown> } {
  try {
    run();
  } catch (error) {
    expect(isCfnError(error, "CFN_ERR_SWARM_BUSY")).toBe(true);
    return error as { message: string; details: Record<string, unknown> };
  }
  throw new Error("expected CFN_ERR_SWARM_BUSY");
}

describe("swarm locks", () => {
  it("is exclusive: a second taker is refused with the holder's pid; release frees it", () => {
    const dir = busDir();
    const lock = acquireSwarmLock(dir, "s", "round", "round");
    expect(readSwarmLock(dir, "s", "round")).toMatchObject({ pid: process.pid, purpose: "round" });
    const error = busyError(() => acquireSwarmLock(dir, "s", "round", "round"));
    expect(error.message).toContain(`pid ${process.pid} (round`);
    expect(error.details).toMatchObject({ pid: process.pid, swarm: "s", lock: "round" });
    // Another kind of lock of the same swarm is independent.
    acquireSwarmLock(dir, "s", "spawn", "spawn").release();
    lock.release();
    expect(existsSync(swarmLockPath(dir, "s", "round"))).toBe(false);
    acquireSwarmLock(dir, "s", "round", "round").release();
  });

  it("takes over a lock whose process is gone", () => {
    const dir = busDir();
    const gone = spawnSync("true").pid as number; // exited and reaped
    writeLock(dir, { pid: gone, purpose: "round" });
    const lock = acquireSwarmLock(dir, "s", "round", "round");
    expect(readSwarmLock(dir, "s", "round")?.pid).toBe(process.pid);
    lock.release();
  });

  it("takes over a lock whose pid was reused by another process (start time differs)", () => {
    const dir = busDir();
    const start = processStartOf(process.pid);
    expect(start).toBeDefined();
    writeLock(dir, { pid: process.pid, processStart: (start as number) - 1, purpose: "round" });
    acquireSwarmLock(dir, "s", "round", "round").release();
  });

  it("refuses while a live process holds it", async () => {
    const dir = busDir();
    const holder = spawn("sleep", ["30"], { stdio: "ignore" });
    cleanups.push(async () => {
      holder.kill("SIGKILL");
      await exited(holder);
    });
    const pid = holder.pid as number;
    writeLock(dir, { pid, processStart: processStartOf(pid), purpose: "round" });
    const error = busyError(() => acquireSwarmLock(dir, "s", "round", "stop"));
    expect(error.details.pid).toBe(pid);
    expect(JSON.parse(readFileSync(swarmLockPath(dir, "s", "round"), "utf8")).pid).toBe(pid); // untouched
  });

  it("release leaves a lock alone that is no longer its own", () => {
    const dir = busDir();
    const lock = acquireSwarmLock(dir, "s", "round", "round");
    writeLock(dir, { pid: process.pid, purpose: "round", token: "someone-else" });
    lock.release();
    expect(readSwarmLock(dir, "s", "round")?.token).toBe("someone-else");
  });
});
