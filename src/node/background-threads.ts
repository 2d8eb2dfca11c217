// A node daemon's helper threads (V8's platform workers for concurrent GC and compilation, libuv's
// thread pool under LevelDB, LevelDB's compaction thread) under SCHED_IDLE: a normal thread woken
// on the same CPU — the main thread of this node, of its peer, or of an agent — preempts them at
// once. Without it, on a small machine, a woken main thread waits behind a helper's multi-ms slice
// (Linux's EEVDF scheduler lets the running thread finish its slice; nice values do not change
// that), which was the largest share of the cross-node latency tail measured here
// (docs/PERFORMANCE.md, "Cross-node"). Helpers still get every otherwise idle CPU cycle — and
// almost nothing while normal threads keep every CPU busy, when the main thread then waits for
// them (GC joins, LevelDB on the pool): hence opt-in (node.idleBackgroundThreads), for hosts with
// CPU to spare.
//
// Linux only, main thread only (a node embedded in a worker thread leaves its process alone), and
// through the compiled helper (src/native/bus-io.c): without it the daemon says why and goes on.

import { readdirSync } from "node:fs";
import { isMainThread } from "node:worker_threads";
import { setIdleScheduling } from "../bus/file-io.js";

export interface BackgroundThreadsResult {
  /** Threads moved to SCHED_IDLE by this call. */
  moved: number;
  /** Why nothing was done, when nothing could be. */
  skipped?: string;
}

/**
 * Moves every thread of this process except the main thread to SCHED_IDLE, skipping those in
 * `done` (and adding the moved ones to it): call it again to catch threads started since.
 */
export function idleBackgroundThreads(done: Set<number> = new Set()): BackgroundThreadsResult {
  if (process.platform !== "linux") return { moved: 0, skipped: "not Linux" };
  if (!isMainThread) return { moved: 0, skipped: "not the process's main thread" };
  let tids: number[];
  try {
    tids = readdirSync("/proc/self/task").map(Number);
  } catch (error) {
    return { moved: 0, skipped: `cannot list /proc/self/task: ${(error as Error).message}` };
  }
  let moved = 0;
  for (const tid of tids) {
    if (tid === process.pid || done.has(tid) || !Number.isInteger(tid)) continue;
    try {
      setIdleScheduling(tid);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ESRCH") continue; // the thread ended meanwhile
      return { moved, skipped: (error as Error).message };
    }
    done.add(tid);
    moved++;
  }
  return { moved };
}
