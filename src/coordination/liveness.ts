// Is a process alive? kill(pid, 0) says whether the pid exists; on Linux a zombie (exited, not yet
// reaped — orphans whose new parent does not reap) still exists, so /proc/<pid>/stat is read too.

import { readFileSync } from "node:fs";

export function isProcessAlive(pid: number | undefined): boolean {
  if (pid === undefined || !Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  if (process.platform !== "linux") return true;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    const state = stat.charAt(stat.lastIndexOf(")") + 2);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** Rings a worker's doorbell (SIGUSR2): a wake-up hint, never required for delivery. */
export function ringDoorbell(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, "SIGUSR2");
  } catch {}
}
