// Opening a LevelDB directory at most once per process. classic-level's LOCK file guards against
// other processes only: a second open of the same path in this process would succeed and the two
// handles would corrupt each other. One registry for every LevelDB user of the process (Raft log,
// delivery spool, audit log) refuses that with CFN_ERR_DATA_DIR_LOCKED.

import { resolve } from "node:path";
import { ClassicLevel } from "classic-level";
import { CfnError, isCfnError } from "../errors.js";

const openPaths = new Set<string>();

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
    const reason = error instanceof Error ? error.message : String(error);
    throw new CfnError("CFN_ERR_STORAGE", `cannot open ${what} ${resolved}: ${reason}`, {
      path: resolved,
      cause: error,
    });
  }
  return { db, path: resolved };
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
