// Exclusive locks of a local swarm, as files in the swarm registry dir (<bus dir>/swarms/):
//   <swarm>.round.lock   held by the one `cfn swarm round` (or `swarm stop`) working on the swarm
//   <swarm>.spawn.lock   the name reserved by the `cfn swarm spawn` that is creating the swarm
// A lock file is created with O_EXCL and holds its owner's pid, the kernel's start time of that
// process (so a reused pid is not mistaken for the owner) and a random token. A lock whose owner
// is gone (SIGKILL, Ctrl-C: no cleanup ran) is stale and taken over:
//   1. rename the stale file to a name of our own (atomic: one taker wins);
//   2. read what was renamed: still stale → remove it and create ours with O_EXCL again;
//      a live owner's lock (it was replaced between our read and the rename) → link it back.
// The registry's listSwarms only lists *.json, so these files never look like swarms.

import { randomBytes } from "node:crypto";
import {
  closeSync,
  linkSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { CfnError } from "../errors.js";
import { isProcessAlive, processStartOf } from "./liveness.js";
import { swarmsDir } from "./registry.js";

/** Times a stale lock is taken over before giving up (each try loses only to a live owner). */
const TAKEOVER_TRIES_MAX = 3;
/** An unreadable lock file older than this was left by a writer that died mid-write, ms. */
const HALF_WRITTEN_STALE_MS = 1000;

export type SwarmLockKind = "round" | "spawn";

/** What a lock file holds. */
export interface SwarmLockOwner {
  pid: number;
  /** The owner's start time in clock ticks since boot (/proc/<pid>/stat field 22; Linux only). */
  processStart?: number;
  acquiredAtMs: number;
  /** What holds it, for the error message: "round", "stop", "spawn". */
  purpose: string;
  token: string;
}

/** True while the process that wrote `owner` still runs (not a zombie, not a reused pid). */
export function isLockOwnerAlive(owner: SwarmLockOwner): boolean {
  return isProcessAlive(owner.pid, owner.processStart);
}

export function swarmLockPath(busDir: string, swarm: string, kind: SwarmLockKind): string {
  return join(swarmsDir(busDir), `${swarm}.${kind}.lock`);
}

/** The owner of a lock file, or undefined when there is none (or it is unreadable: half-written). */
export function readSwarmLock(
  busDir: string,
  swarm: string,
  kind: SwarmLockKind,
): SwarmLockOwner | undefined {
  return readOwner(swarmLockPath(busDir, swarm, kind));
}

/** A held lock; release() removes the file if it is still ours (also at process exit). */
export class SwarmLock {
  readonly path: string;
  readonly owner: SwarmLockOwner;
  private released = false;
  private readonly onExit = () => this.release();

  constructor(path: string, owner: SwarmLockOwner) {
    this.path = path;
    this.owner = owner;
    process.once("exit", this.onExit);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    process.off("exit", this.onExit);
    if (readOwner(this.path)?.token === this.owner.token) rmSync(this.path, { force: true });
  }
}

/**
 * Takes the `kind` lock of `swarm` for `purpose` ("round", "stop", "spawn"), or throws
 * CFN_ERR_SWARM_BUSY naming the live owner's pid and purpose.
 */
export function acquireSwarmLock(
  busDir: string,
  swarm: string,
  kind: SwarmLockKind,
  purpose: string,
): SwarmLock {
  const path = swarmLockPath(busDir, swarm, kind);
  mkdirSync(swarmsDir(busDir), { recursive: true, mode: 0o700 });
  const owner: SwarmLockOwner = {
    pid: process.pid,
    processStart: processStartOf(process.pid),
    acquiredAtMs: Date.now(),
    purpose,
    token: randomBytes(8).toString("hex"),
  };
  for (let attempt = 0; attempt <= TAKEOVER_TRIES_MAX; attempt++) {
    if (createExclusive(path, owner)) return new SwarmLock(path, owner);
    const holder = readOwner(path);
    if (holder) {
      if (isLockOwnerAlive(holder)) throw busy(swarm, kind, holder);
      takeOverStale(path, holder);
      continue;
    }
    // Unreadable: its writer is between open and write (microseconds), or died there.
    const ageMs = fileAgeMs(path);
    if (ageMs === undefined) continue; // it went away meanwhile
    if (ageMs < HALF_WRITTEN_STALE_MS) throw busy(swarm, kind, undefined);
    takeOverStale(path, undefined);
  }
  throw busy(swarm, kind, readOwner(path));
}

function busy(swarm: string, kind: SwarmLockKind, holder: SwarmLockOwner | undefined): CfnError {
  const who = holder
    ? `pid ${holder.pid} (${holder.purpose}, since ${new Date(holder.acquiredAtMs).toISOString()})`
    : "another process";
  const what =
    kind === "spawn"
      ? `swarm ${swarm} is being spawned by ${who}; choose another --name`
      : `swarm ${swarm} is busy: ${who} works on it; wait for it to end`;
  return new CfnError("CFN_ERR_SWARM_BUSY", what, {
    swarm,
    lock: kind,
    ...(holder ? { pid: holder.pid, purpose: holder.purpose } : {}),
  });
}

/** O_EXCL create with the owner's JSON; false when the file exists. */
function createExclusive(path: string, owner: SwarmLockOwner): boolean {
  let fd: number;
  try {
    fd = openSync(path, "wx", 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw error;
  }
  try {
    writeSync(fd, `${JSON.stringify(owner)}\n`);
  } finally {
    closeSync(fd);
  }
  return true;
}

function readOwner(path: string): SwarmLockOwner | undefined {
  try {
    const owner = JSON.parse(readFileSync(path, "utf8")) as SwarmLockOwner;
    return Number.isInteger(owner?.pid) && typeof owner.token === "string" ? owner : undefined;
  } catch {
    return undefined;
  }
}

function fileAgeMs(path: string): number | undefined {
  try {
    return Date.now() - statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

/** Steps 1–2 of the takeover (top of the file). */
function takeOverStale(path: string, seen: SwarmLockOwner | undefined): void {
  const aside = `${path}.stale-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    renameSync(path, aside);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return; // someone else took it over
    throw error;
  }
  const taken = readOwner(aside);
  if (taken && taken.token !== seen?.token && isLockOwnerAlive(taken)) {
    // A live owner's fresh lock: put it back (unless a third process created one meanwhile).
    try {
      linkSync(aside, path);
    } catch {}
  }
  rmSync(aside, { force: true });
}
