// Recovery of an agent's mailbox (docs/PROTOCOL.md sections 7 and 10): claims whose visibility
// deadline passed or whose process died go back to the inbox (or to dead-letter after
// deliveriesMax); temp files of writers that died mid-write are removed; an empty mailbox is removed
// on shutdown without losing a message that races in.

import { readdirSync, renameSync, rmdirSync, rmSync, statSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import type { Bus } from "./bus.js";
import { hostTag, isProcessAlive } from "./clock.js";
import { type DeadLetterContext, moveToDeadLetter } from "./dead-letter.js";
import type { AgentPaths } from "./layout.js";
import { formatQueuedName, parseClaimedName, parseQueuedName } from "./names.js";

/** Age after which a temp file whose writer cannot be told from its name is removed. */
export const STALE_TEMP_AGE_MS = 60_000;

export interface ClaimRecoveryHost {
  bus: Bus;
  paths: AgentPaths;
  deadLetterContext: DeadLetterContext;
  /** Deadline of this mailbox's own unsettled claim at `path`, or undefined when it holds none. */
  ownClaimDeadlineMs(path: string): number | undefined;
  /** This mailbox's own claim passed its deadline: forget it, so it is returned like any other. */
  expireOwnClaim(path: string): void;
}

/**
 * Returns expired claims (any claimant) and claims of processes that no longer exist (crashed
 * consumers) to the inbox, or to dead-letter after deliveriesMax. Returns true when a file went
 * back to the inbox (the receiver's listing is then stale).
 */
export function recoverClaims(host: ClaimRecoveryHost): boolean {
  const { bus, paths } = host;
  let names: string[];
  try {
    names = readdirSync(paths.claimed);
  } catch {
    return false;
  }
  const now = Date.now();
  let returned = false;
  for (const fileName of names) {
    try {
      if (recoverClaim(host, fileName, now)) returned = true;
    } catch (error) {
      // One claim that cannot be moved (a read-only or broken bus) must not keep the others in
      // claimed/: it is tried again on the next sweep.
      bus.logger.warn("cannot return a claim to the inbox; trying again on the next sweep", {
        agent: paths.agentId,
        file: fileName,
        error,
      });
    }
  }
  return returned;
}

/** recoverClaims for one name in claimed/: true when it went back to the inbox. */
function recoverClaim(host: ClaimRecoveryHost, fileName: string, now: number): boolean {
  const { bus, paths } = host;
  const path = join(paths.claimed, fileName);
  const ownDeadlineMs = host.ownClaimDeadlineMs(path);
  if (ownDeadlineMs !== undefined) {
    if (ownDeadlineMs > now) return false;
    host.expireOwnClaim(path);
  }
  const name = parseClaimedName(fileName);
  if (!name) {
    moveToDeadLetter(
      host.deadLetterContext,
      path,
      fileName,
      "foreign",
      "file name in claimed/ does not follow the protocol",
      0,
      bus.uniqueNames.next(),
    );
    return false;
  }
  const expired = name.deadlineMs <= now;
  const crashed = !expired && name.pid !== process.pid && !isProcessAlive(name.pid);
  if (!expired && !crashed) return false;
  if (name.deliveries >= bus.config.deliveriesMax) {
    moveToDeadLetter(
      host.deadLetterContext,
      path,
      fileName,
      "deliveries_exhausted",
      `${expired ? "visibility timeout" : "consumer died"} after ${name.deliveries} deliveries`,
      name.deliveries,
      bus.uniqueNames.next(),
    );
    return false;
  }
  try {
    renameSync(path, join(paths.inbox, formatQueuedName(name)));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    return false;
  }
  bus.busMetrics.redeliveries.inc({ cause: expired ? "visibility_timeout" : "consumer_died" }, name.count);
  return true;
}

/** Removes files left in tmp/ by processes that died mid-write. */
export function removeStaleTemps(paths: AgentPaths): void {
  const now = Date.now();
  for (const fileName of readdirSafe(paths.tmp)) {
    const path = join(paths.tmp, fileName);
    const pid = pidOfTemp(fileName);
    try {
      if (pid !== undefined) {
        if (pid === process.pid || isProcessAlive(pid)) continue;
      } else if (now - statSync(path).mtimeMs < STALE_TEMP_AGE_MS) {
        continue; // a name we cannot attribute: only remove it once it is clearly abandoned
      }
      unlinkSync(path);
    } catch {}
  }
}

/** Rounds of moving late files back before a trashed directory is given up on (left in place). */
export const TRASH_EMPTY_ROUNDS_MAX = 100;

/**
 * Removes the agent's directory when its inbox and claims are empty: renames it to a trash dir,
 * moves back anything renamed in meanwhile, then deletes the trash (PROTOCOL.md section 10). Each
 * of inbox/, claimed/ and dead/ is removed with rmdir, which fails while anything is in it; once it
 * is gone nothing can land in it any more (a rename into it, even through a directory descriptor
 * held by another consumer, fails with ENOENT), so nothing is deleted that was not moved back.
 */
export function removeDirsIfEmpty(bus: Bus, paths: AgentPaths): void {
  if (readdirSafe(paths.inbox).length > 0 || readdirSafe(paths.claimed).length > 0) return;
  const trash = join(bus.dir, `.trash-${bus.uniqueNames.next()}`);
  try {
    renameSync(paths.dir, trash);
  } catch {
    return;
  }
  bus.layout.forgetAgent(paths.agentId);
  const homes: [string, string][] = [
    ["inbox", paths.inbox],
    ["claimed", paths.claimed],
    ["dead", paths.dead],
  ];
  for (const [sub, home] of homes) {
    if (!emptyAndRemove(bus, paths, join(trash, sub), home)) {
      bus.logger.warn("files kept arriving in a removed mailbox; its trash directory is left in place", {
        agent: paths.agentId,
        trash,
      });
      return;
    }
  }
  rmSync(trash, { recursive: true, force: true });
}

/** Moves every file of `dir` to `home` and removes `dir`; false if it never stayed empty. */
function emptyAndRemove(bus: Bus, paths: AgentPaths, dir: string, home: string): boolean {
  for (let round = 0; round < TRASH_EMPTY_ROUNDS_MAX; round++) {
    const late = readdirSafe(dir);
    if (late.length > 0) bus.layout.ensureAgent(paths, true);
    for (const fileName of late) {
      try {
        renameSync(join(dir, fileName), join(home, fileName));
      } catch (error) {
        // Claimed meanwhile by a consumer holding descriptors of these directories.
        if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      }
    }
    try {
      rmdirSync(dir);
      return true;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return true;
      if (code !== "ENOTEMPTY" && code !== "EEXIST") throw error;
    }
  }
  return false;
}

/**
 * The pid in a temp file's UNIQ field when it is exactly this host's `<host>-<pid>-<8 hex>-<counter>`
 * (UniqueNames, the bash agent): a UNIQ of another form — a UUID, a writer on another host or in
 * another pid namespace sharing the directory — names no pid of ours, and its file is only
 * removed once clearly abandoned (STALE_TEMP_AGE_MS).
 */
function pidOfTemp(fileName: string): number | undefined {
  let unique: string | undefined;
  if (fileName.startsWith(".reason.")) unique = fileName.slice(".reason.".length);
  else unique = parseQueuedName(fileName)?.unique;
  if (!unique?.startsWith(`${HOST_TAG}-`)) return undefined;
  const match = /^([0-9]+)-[0-9a-f]{8}-[0-9a-z]+$/.exec(unique.slice(HOST_TAG.length + 1));
  const pid = match ? Number(match[1]) : Number.NaN;
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

const HOST_TAG = hostTag();

export function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
