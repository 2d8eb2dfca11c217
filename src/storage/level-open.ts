// Opening a LevelDB directory at most once per process. classic-level's LOCK file guards against
// other processes only: a second open of the same path in this process would succeed and the two
// handles would corrupt each other. One registry for every LevelDB user of the process (Raft log,
// delivery spool, inbox mirror, audit log) refuses that with CFN_ERR_DATA_DIR_LOCKED.
//
// Writes stop at the first failure. When LevelDB cannot append to its log (ENOSPC, EIO) it may
// leave part of a record there and still take the next writes on the same handle — and report them
// written, synced ones too — but a later open drops everything after the torn record in that log
// block (its LOG says "dropping N bytes; Corruption: checksum mismatch"): writes the caller was
// told are durable vanish. So every handle from openLevel issues its writes one at a time, and after
// one fails it refuses every later one (CFN_ERR_STORAGE) and tells the storage-failure listeners
// (a node stops: docs/STORAGE.md "A write that fails"). A new open recovers the log up to the torn
// record, which was reported failed.

//
// Before LevelDB opens a directory, its write-ahead logs are checked (wal-check.ts): LevelDB drops
// a damaged block without an error, so a damaged log refuses the open unless the process salvages
// (`cfn node start --salvage-damaged-logs`), which keeps a copy of each damaged log and logs what
// is dropped.

import { resolve } from "node:path";
import { ClassicLevel } from "classic-level";
import { CfnError, isCfnError } from "../errors.js";
import { checkLogs, describeDamage, keepDamagedLogs } from "./wal-check.js";

const openPaths = new Set<string>();

/** What an open does with a damaged write-ahead log. */
export type DamagedLogPolicy =
  | { salvage: false }
  | { salvage: true; report: (message: string, details: Record<string, unknown>) => void };

let damagedLogPolicy: DamagedLogPolicy = { salvage: false };

/** Sets, for every later openLevel of this process, what a damaged write-ahead log does. */
export function setDamagedLogPolicy(policy: DamagedLogPolicy): void {
  damagedLogPolicy = policy;
}

/** Refuses (or, salvaging, reports and keeps a copy of) damaged write-ahead logs in `path`. */
function checkBeforeOpen(path: string, what: string): void {
  const damage = checkLogs(path);
  if (damage.length === 0) return;
  const described = describeDamage(damage);
  if (!damagedLogPolicy.salvage) {
    throw new CfnError(
      "CFN_ERR_STORAGE",
      `${what} ${path}: its write-ahead log is damaged (${described}). LevelDB would drop the damaged blocks without an error, acknowledged writes with them, so it is not opened: restore the data dir from a backup, replace the member (docs/RUNBOOKS.md "A damaged write-ahead log"), or start with --salvage-damaged-logs to keep what can be read`,
      { path, damage },
    );
  }
  const copies = keepDamagedLogs(path, damage);
  damagedLogPolicy.report(`${what}: salvaging a damaged write-ahead log; the damaged blocks are dropped`, {
    path,
    damage: described,
    copies,
  });
}

export type LevelValueEncoding = "utf8" | "view";
type ValueOf<E extends LevelValueEncoding> = E extends "utf8" ? string : Uint8Array;

/**
 * Opens (creating) the LevelDB at `path` with utf8 keys. `what` names it in errors ("spool").
 * Already open in this process, or locked by another → CFN_ERR_DATA_DIR_LOCKED; anything else →
 * CFN_ERR_STORAGE. On success the caller owns the handle and releases it with `closeLevel`.
 */
export async function openLevel<E extends LevelValueEncoding>(
  path: string,
  what: string,
  valueEncoding: E,
): Promise<{ db: ClassicLevel<string, ValueOf<E>>; path: string }> {
  const resolved = resolve(path);
  if (openPaths.has(resolved)) {
    throw new CfnError("CFN_ERR_DATA_DIR_LOCKED", `${what} ${resolved} is already open in this process`, {
      path: resolved,
    });
  }
  openPaths.add(resolved);
  try {
    checkBeforeOpen(resolved, what);
  } catch (error) {
    openPaths.delete(resolved);
    if (isCfnError(error)) throw error;
    throw new CfnError(
      "CFN_ERR_STORAGE",
      `cannot read the logs of ${what} ${resolved}: ${causeChain(error)}`,
      {
        path: resolved,
        cause: error,
      },
    );
  }
  const db = new ClassicLevel<string, ValueOf<E>>(resolved, { keyEncoding: "utf8", valueEncoding });
  try {
    await db.open({ createIfMissing: true });
  } catch (error) {
    openPaths.delete(resolved);
    await db.close().catch(() => undefined);
    if (hasCode(error, "LEVEL_LOCKED")) {
      throw new CfnError(
        "CFN_ERR_DATA_DIR_LOCKED",
        `${what} ${resolved} is locked by another process: is another cfn node running on this data dir?`,
        {
          path: resolved,
          cause: error,
        },
      );
    }
    if (isCfnError(error)) throw error;
    throw new CfnError("CFN_ERR_STORAGE", `cannot open ${what} ${resolved}: ${causeChain(error)}`, {
      path: resolved,
      cause: error,
    });
  }
  fenceWrites(db as unknown as Writable, what, resolved);
  return { db, path: resolved };
}

interface Writable {
  put(...args: unknown[]): Promise<void>;
  del(...args: unknown[]): Promise<void>;
  batch(...args: unknown[]): unknown;
}

const failureListeners = new Set<(error: CfnError) => void>();

/**
 * Calls `listener` with the CFN_ERR_STORAGE of every LevelDB handle of this process that stops
 * taking writes (its details carry the `path`). Returns the unsubscribe function.
 */
export function onStorageFailure(listener: (error: CfnError) => void): () => void {
  failureListeners.add(listener);
  return () => failureListeners.delete(listener);
}

/**
 * Serializes the handle's writes (put, del, batch with operations) and refuses every write after
 * the first that failed (see the top of this file). The chained form of batch() is not used here.
 */
function fenceWrites(db: Writable, what: string, path: string): void {
  const original = { put: db.put.bind(db), del: db.del.bind(db), batch: db.batch.bind(db) };
  let tail: Promise<unknown> = Promise.resolve();
  let failed: CfnError | undefined;
  const guarded = (write: () => Promise<void>): Promise<void> => {
    const run = tail.then(async () => {
      if (failed) throw failed;
      try {
        await write();
      } catch (error) {
        // A write to a closed handle says nothing about the disk.
        if (hasCode(error, "LEVEL_DATABASE_NOT_OPEN") || hasCode(error, "LEVEL_DATABASE_NOT_CLOSED"))
          throw error;
        failed = new CfnError(
          "CFN_ERR_STORAGE",
          `${what} ${path}: a write failed (${causeChain(error)}); LevelDB may have left a torn record in its log, so this handle takes no more writes — free the disk and start again`,
          { path, cause: error },
        );
        for (const listener of failureListeners) listener(failed);
        throw failed;
      }
    });
    tail = run.catch(() => undefined);
    return run;
  };
  db.put = (...args: unknown[]) => guarded(() => original.put(...args));
  db.del = (...args: unknown[]) => guarded(() => original.del(...args));
  db.batch = (...args: unknown[]) =>
    args.length === 0 ? original.batch() : guarded(() => original.batch(...args) as Promise<void>);
}

/** The messages of an error and its causes ("Database failed to open: IO error: …: No space left"). */
export function causeChain(error: unknown): string {
  const parts: string[] = [];
  for (
    let e = error as { message?: unknown; cause?: unknown } | undefined;
    e && parts.length < 5;
    e = e.cause as typeof e
  ) {
    const message = typeof e.message === "string" ? e.message : String(e);
    if (!parts.includes(message)) parts.push(message);
  }
  return parts.join(": ") || String(error);
}

/** Closes a handle from `openLevel` and frees its path for a later open (errors are the caller's). */
export async function closeLevel(db: { close(): Promise<void> }, path: string): Promise<void> {
  try {
    await db.close();
  } finally {
    openPaths.delete(path);
  }
}

function hasCode(error: unknown, code: string): boolean {
  for (let e = error as { code?: unknown; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
    if (e.code === code) return true;
  }
  return false;
}
