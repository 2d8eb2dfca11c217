// Time sources of the bus. Arrival times must be strictly increasing within a process so that the
// file-name order keeps per-sender order even for two sends in the same microsecond.

import { randomBytes } from "node:crypto";
import { hostname } from "node:os";

let lastArrivalUs = 0;

// Read once: the performance.timeOrigin getter costs about a microsecond, and sends and claims
// read the clock on every message.
const TIME_ORIGIN_MS = performance.timeOrigin;

/** Wall-clock microseconds since the epoch (performance clock for sub-millisecond precision). */
export function wallClockUs(): number {
  return Math.floor((TIME_ORIGIN_MS + performance.now()) * 1000);
}

/** Strictly increasing wall-clock microseconds within this process. */
export function nextArrivalUs(): number {
  const now = wallClockUs();
  lastArrivalUs = now > lastArrivalUs ? now : lastArrivalUs + 1;
  return lastArrivalUs;
}

/** This host's name reduced to the characters allowed in a file name's UNIQ field. */
export function hostTag(): string {
  const tag = hostname()
    .replace(/[^A-Za-z0-9-]/g, "-")
    .slice(0, 48);
  return tag.length > 0 ? tag : "host";
}

/**
 * Generator of UNIQ fields: <host>-<pid>-<random>-<counter>. Host and pid separate processes and
 * hosts; the random part separates a restarted process that reuses a pid.
 */
export class UniqueNames {
  private readonly prefix: string;
  private counter = 0;

  constructor() {
    this.prefix = `${hostTag()}-${process.pid}-${randomBytes(4).toString("hex")}`;
  }

  next(): string {
    this.counter += 1;
    return `${this.prefix}-${this.counter.toString(36)}`;
  }
}

/** True when a process with this pid exists on this host. */
export function isProcessAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
