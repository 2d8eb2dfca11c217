// Is a process alive, and is it still the process we started? kill(pid, 0) says whether the pid
// exists; on Linux a zombie (exited, not yet reaped — orphans whose new parent does not reap)
// still exists, so /proc/<pid>/stat is read too. Pids are reused: a pid recorded with the
// kernel's start time of its process (field 22 of that file) is judged by both, so a pid the
// kernel has since given to another process counts as gone rather than alive.

import { readFileSync } from "node:fs";

/** A process as a registry or a lock file records it: its pid and, when known, its start time. */
export interface ProcessIdentity {
  pid: number;
  /** Start time in clock ticks since boot (/proc/<pid>/stat field 22; Linux only). */
  processStart?: number;
}

interface ProcessStat {
  /** State letter: R, S, D, T, Z (zombie), X (dead), … */
  state: string;
  startTicks: number | undefined;
}

/** Field 3 (state) and field 22 (starttime) of /proc/<pid>/stat; undefined when it is gone or off Linux. */
function readProcessStat(pid: number): ProcessStat | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    // The command name (field 2) is in parentheses and may hold spaces: count from its end.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const startTicks = Number(fields[19]); // fields[0] is field 3, fields[19] field 22
    return { state: fields[0], startTicks: Number.isFinite(startTicks) ? startTicks : undefined };
  } catch {
    return undefined;
  }
}

/** The kernel's start time of a process (clock ticks since boot), or undefined off Linux or when gone. */
export function processStartOf(pid: number): number | undefined {
  return readProcessStat(pid)?.startTicks;
}

/**
 * True while `pid` runs and is not a zombie. With `processStart` (recorded when the process was
 * started) it must also still be that process: a different start time means the pid was reused.
 * Without one (records of older versions, other systems) the pid alone decides, as before.
 */
export function isProcessAlive(pid: number | undefined, processStart?: number): boolean {
  if (pid === undefined || !Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  if (process.platform !== "linux") return true;
  const stat = readProcessStat(pid);
  if (!stat || stat.state === "Z" || stat.state === "X") return false;
  return processStart === undefined || stat.startTicks === undefined || stat.startTicks === processStart;
}

/**
 * Rings a worker's doorbell (SIGUSR2): a wake-up hint, never required for delivery. With
 * `processStart`, only while the pid is still that process: SIGUSR2 ends a process that does not
 * handle it, and a recycled pid may belong to anyone.
 */
export function ringDoorbell(pid: number | undefined, processStart?: number): void {
  if (pid === undefined) return;
  if (processStart !== undefined && !isProcessAlive(pid, processStart)) return;
  try {
    process.kill(pid, "SIGUSR2");
  } catch {}
}
