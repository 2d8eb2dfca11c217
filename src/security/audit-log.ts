// The durable audit log of a node (LevelDB at <dataDir>/audit): who did what, when, with which
// outcome, for every state-changing API request this node served and every refused request.
//
// Tamper evidence: each entry records the hash of the previous one and its own hash over its
// fields (SHA-256), so changing, inserting or removing an entry breaks the chain at that point;
// `verify` walks it. Retention (auditRetentionDays, auditEntriesMax) deletes the oldest entries
// and moves the anchor (first kept seq and the prev hash it must carry) in the same batch.
// A chain cannot prove nothing was cut off its end: export the head hash elsewhere to anchor it.
//
// Keys:  e!<seq:16>   an entry (JSON)
//        meta!anchor  {seq, prev} of the first kept entry
//
// Appends are group-committed: entries are chained in call order at once, written in synced
// batches of at most batchEntriesMax; `append` resolves when its entry is durable.
//
// A stopped node's log is verified on a copy (verifyAuditLogCopy): opening a LevelDB writes to
// it (LOCK, LOG, a new write-ahead log, a compaction that can drop a damaged one's evidence), so
// the original is only read, and a read-only or full disk verifies too.

import { createHash } from "node:crypto";
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { ClassicLevel } from "classic-level";
import { CfnError, isCfnError } from "../errors.js";
import { type Logger, silentLogger } from "../obs/logger.js";
import { closeLevel, openLevel } from "../storage/level-open.js";

type Db = ClassicLevel<string, string>;

export type AuditOutcome = "ok" | "denied" | "failed";

/** What a caller records; the log adds seq, time, chain hashes. */
export interface AuditRecord {
  node: string;
  requestId: string;
  principal: string;
  /** `METHOD /path` of the request, or a named action such as `token.create`. */
  action: string;
  outcome: AuditOutcome;
  /** HTTP status of the answer. */
  status: number;
  remote: string;
  /** How the caller authenticated (entries before 2026-12-07 lack it): a token may be named "cluster". */
  principalKind?: "cluster" | "token" | "anonymous";
  /** The API token's id, for a token principal. */
  tokenId?: string;
  detail?: Record<string, unknown>;
}

/** Every field an entry may have: verify() refuses others (they would not be covered by the hash). */
const ENTRY_FIELDS = new Set([
  "seq",
  "at",
  "node",
  "requestId",
  "principal",
  "principalKind",
  "tokenId",
  "action",
  "outcome",
  "status",
  "remote",
  "detail",
  "prev",
  "hash",
]);

export interface AuditEntry extends AuditRecord {
  seq: number;
  at: string;
  prev: string;
  hash: string;
}

export interface AuditQuery {
  sinceMs?: number;
  principal?: string;
  /** Prefix of the action (e.g. "POST /v1/members", "token."). */
  action?: string;
  outcome?: AuditOutcome;
  /** Most recent matching entries returned (oldest first). */
  limit: number;
}

export interface AuditVerifyReport {
  ok: boolean;
  entries: number;
  firstSeq: number;
  headSeq: number;
  headHash: string;
  /** The first entry where the chain breaks. */
  problem?: { seq: number; reason: string };
}

export interface AuditLogOptions {
  path: string;
  logger: Logger;
  retentionDays: number;
  entriesMax: number;
  batchEntriesMax: number;
  /** Clock for entry times and retention (tests move it). */
  now?: () => number;
}

const GENESIS = "0".repeat(64);
const SEQ_DIGITS = 16;
/** Entries chained but not yet written; past this an append is refused (the disk is stuck). */
export const AUDIT_PENDING_ENTRIES_MAX = 10_000;

function entryKey(seq: number): string {
  return `e!${String(seq).padStart(SEQ_DIGITS, "0")}`;
}

/** The hash of an entry: over the previous hash and its fields in a fixed order. */
export function hashEntry(entry: Omit<AuditEntry, "hash">): string {
  const fields = [
    entry.seq,
    entry.at,
    entry.node,
    entry.requestId,
    entry.principal,
    entry.action,
    entry.outcome,
    entry.status,
    entry.remote,
    entry.detail ?? null,
  ];
  // Hashed only when present, so entries written before these fields existed still verify.
  if (entry.principalKind !== undefined || entry.tokenId !== undefined)
    fields.push(entry.principalKind ?? null, entry.tokenId ?? null);
  return createHash("sha256").update(entry.prev).update("\n").update(JSON.stringify(fields)).digest("hex");
}

export class AuditLog {
  private readonly db: Db;
  private readonly path: string;
  private readonly options: AuditLogOptions;
  private readonly logger: Logger;
  private readonly now: () => number;
  private anchor: { seq: number; prev: string };
  private headSeq: number;
  private headHash: string;
  private firstSeq: number;
  private pending: { entry: AuditEntry; done: (error?: unknown) => void }[] = [];
  private writing: Promise<void> | undefined;
  private pruning: Promise<number> = Promise.resolve(0);
  private closed = false;

  private constructor(
    db: Db,
    path: string,
    options: AuditLogOptions,
    state: { anchor: { seq: number; prev: string }; first: number; head: number; headHash: string },
  ) {
    this.db = db;
    this.path = path;
    this.options = options;
    this.logger = options.logger.child("audit");
    this.now = options.now ?? Date.now;
    this.anchor = state.anchor;
    this.firstSeq = state.first;
    this.headSeq = state.head;
    this.headHash = state.headHash;
  }

  /** Opens (creating) the log; CFN_ERR_DATA_DIR_LOCKED when it is open already. */
  static async open(options: AuditLogOptions): Promise<AuditLog> {
    const { db, path } = await openLevel(options.path, "audit log", "utf8");
    try {
      const anchorText = await db.get("meta!anchor");
      const anchor = anchorText
        ? (JSON.parse(anchorText) as { seq: number; prev: string })
        : { seq: 1, prev: GENESIS };
      let head = anchor.seq - 1;
      let headHash = anchor.prev;
      for await (const value of db.values({ gte: "e!", lt: "e!\xff", reverse: true, limit: 1 })) {
        const last = JSON.parse(value) as AuditEntry;
        head = last.seq;
        headHash = last.hash;
      }
      return new AuditLog(db, path, options, { anchor, first: anchor.seq, head, headHash });
    } catch (error) {
      await closeLevel(db, path).catch(() => undefined);
      throw error;
    }
  }

  /** Entries kept now (written or pending). */
  get size(): number {
    return this.headSeq - this.firstSeq + 1;
  }

  get head(): { seq: number; hash: string } {
    return { seq: this.headSeq, hash: this.headHash };
  }

  /** Chains the record now and resolves with the entry once it is on disk. */
  append(record: AuditRecord): Promise<AuditEntry> {
    if (this.closed) return Promise.reject(new CfnError("CFN_ERR_CLOSED", "the audit log is closed"));
    if (this.pending.length >= AUDIT_PENDING_ENTRIES_MAX)
      return Promise.reject(new CfnError("CFN_ERR_STORAGE", "audit log writes are stuck; entry refused"));
    const unhashed = {
      ...record,
      seq: this.headSeq + 1,
      at: new Date(this.now()).toISOString(),
      prev: this.headHash,
    };
    const entry: AuditEntry = { ...unhashed, hash: hashEntry(unhashed) };
    this.headSeq = entry.seq;
    this.headHash = entry.hash;
    return new Promise<AuditEntry>((resolveEntry, reject) => {
      this.pending.push({ entry, done: (error) => (error ? reject(error) : resolveEntry(entry)) });
      if (!this.writing) this.writing = this.writeLoop();
    });
  }

  /** Waits until every entry appended so far is on disk. */
  async flush(): Promise<void> {
    while (this.writing) await this.writing;
  }

  private async writeLoop(): Promise<void> {
    try {
      // Entries appended while a batch or the prune is written are picked up by the next turn.
      while (this.pending.length > 0) {
        await this.writeBatch(this.pending.splice(0, this.options.batchEntriesMax));
        // Pruning waits for a batch's worth of excess, so it runs once per batch, not per entry.
        if (this.size >= this.options.entriesMax + this.options.batchEntriesMax) await this.prune();
      }
    } finally {
      this.writing = undefined;
    }
  }

  private async writeBatch(batch: { entry: AuditEntry; done: (error?: unknown) => void }[]): Promise<void> {
    const ops = batch.map(({ entry }) => ({
      type: "put" as const,
      key: entryKey(entry.seq),
      value: JSON.stringify(entry),
    }));
    try {
      await this.db.batch(ops, { sync: true });
      for (const item of batch) item.done();
    } catch (error) {
      this.logger.error("audit entries not written", { error, entries: batch.length });
      for (const item of batch)
        item.done(new CfnError("CFN_ERR_STORAGE", `audit write failed: ${String(error)}`));
    }
  }

  /**
   * Deletes entries past retention (older than retentionDays, or beyond entriesMax, oldest first)
   * and moves the anchor in the same batch. Returns how many were deleted.
   */
  prune(): Promise<number> {
    // Serialized: two overlapping sweeps could move the anchor backwards.
    const run = this.pruning.then(() => this.pruneNow());
    this.pruning = run.catch(() => 0);
    return run;
  }

  private async pruneNow(): Promise<number> {
    const cutoff = this.now() - this.options.retentionDays * 86_400_000;
    const countCut = this.headSeq - this.options.entriesMax; // delete seq ≤ countCut
    let newFirst = this.firstSeq;
    let newPrev = this.anchor.prev;
    for await (const value of this.db.values({ gte: entryKey(this.firstSeq), lt: "e!\xff" })) {
      const entry = JSON.parse(value) as AuditEntry;
      if (entry.seq > countCut && Date.parse(entry.at) >= cutoff) break;
      newFirst = entry.seq + 1;
      newPrev = entry.hash;
    }
    if (newFirst === this.firstSeq) return 0;
    const ops: ({ type: "del"; key: string } | { type: "put"; key: string; value: string })[] = [];
    for (let seq = this.firstSeq; seq < newFirst; seq++) ops.push({ type: "del", key: entryKey(seq) });
    const anchor = { seq: newFirst, prev: newPrev };
    ops.push({ type: "put", key: "meta!anchor", value: JSON.stringify(anchor) });
    await this.db.batch(ops, { sync: true });
    const deleted = newFirst - this.firstSeq;
    this.anchor = anchor;
    this.firstSeq = newFirst;
    return deleted;
  }

  /** The most recent entries matching the query, oldest first. */
  async query(query: AuditQuery): Promise<AuditEntry[]> {
    await this.flush();
    const found: AuditEntry[] = [];
    for await (const value of this.db.values({ gte: "e!", lt: "e!\xff", reverse: true })) {
      const entry = JSON.parse(value) as AuditEntry;
      if (query.sinceMs !== undefined && Date.parse(entry.at) < query.sinceMs) break;
      if (query.principal !== undefined && entry.principal !== query.principal) continue;
      if (query.action !== undefined && !entry.action.startsWith(query.action)) continue;
      if (query.outcome !== undefined && entry.outcome !== query.outcome) continue;
      found.push(entry);
      if (found.length >= query.limit) break;
    }
    return found.reverse();
  }

  /** Walks the chain from the anchor to the head; reports the first break. */
  async verify(): Promise<AuditVerifyReport> {
    await this.flush();
    let expectedSeq = this.anchor.seq;
    let prev = this.anchor.prev;
    let entries = 0;
    const report = (problem?: { seq: number; reason: string }): AuditVerifyReport => ({
      ok: problem === undefined,
      entries,
      firstSeq: this.anchor.seq,
      headSeq: expectedSeq - 1,
      headHash: prev,
      ...(problem ? { problem } : {}),
    });
    for await (const [key, value] of this.db.iterator({ gte: "e!", lt: "e!\xff" })) {
      let entry: AuditEntry;
      try {
        entry = JSON.parse(value) as AuditEntry;
      } catch {
        return report({ seq: expectedSeq, reason: "entry is not JSON" });
      }
      if (key !== entryKey(expectedSeq) || entry.seq !== expectedSeq)
        return report({ seq: expectedSeq, reason: `entry ${expectedSeq} missing (found ${key})` });
      if (entry.prev !== prev)
        return report({ seq: entry.seq, reason: "prev does not match the previous entry's hash" });
      const foreign = Object.keys(entry).find((field) => !ENTRY_FIELDS.has(field));
      if (foreign !== undefined)
        return report({ seq: entry.seq, reason: `field ${JSON.stringify(foreign)} is not part of an entry` });
      const { hash, ...unhashed } = entry;
      if (hashEntry(unhashed) !== hash)
        return report({ seq: entry.seq, reason: "hash does not match the entry's content" });
      prev = hash;
      expectedSeq++;
      entries++;
    }
    if (expectedSeq - 1 !== this.headSeq)
      return report({
        seq: expectedSeq,
        reason: `entries after ${expectedSeq - 1} missing (head ${this.headSeq})`,
      });
    return report();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush();
    this.closed = true;
    await closeLevel(this.db, this.path);
  }
}

/**
 * Verifies the audit log at `path` (a stopped node's <dataDir>/audit) without writing to it: its
 * files but LOCK are copied to a temp dir under `tempRoot` (default: the OS's, TMPDIR), the copy
 * is opened and walked, then removed. A log a running node holds (its LOCK locked, read from
 * /proc/locks on Linux) → CFN_ERR_DATA_DIR_LOCKED: that node's API verifies its live log.
 */
export async function verifyAuditLogCopy(path: string, tempRoot = tmpdir()): Promise<AuditVerifyReport> {
  const original = resolve(path);
  const holder = lockHolder(join(original, "LOCK"));
  if (holder !== undefined) {
    throw new CfnError(
      "CFN_ERR_DATA_DIR_LOCKED",
      `audit log ${original} is open in a running node (process ${holder}): verify its live log through that node's API (\`cfn audit verify --api <its API URL>\`), or stop it first`,
      { path: original, pid: holder },
    );
  }
  const copy = mkdtempSync(join(tempRoot, "cfn-audit-verify-"));
  try {
    try {
      for (const entry of readdirSync(original, { withFileTypes: true })) {
        if (entry.name === "LOCK" || !entry.isFile()) continue;
        copyFileSync(join(original, entry.name), join(copy, entry.name));
      }
    } catch (error) {
      throw new CfnError(
        "CFN_ERR_STORAGE",
        `cannot copy audit log ${original} to ${copy}: ${String(error)}`,
        {
          path: original,
          cause: error,
        },
      );
    }
    // Retention settings do not matter for a read-only walk; the copy is not appended to.
    let log: AuditLog;
    try {
      log = await AuditLog.open({
        path: copy,
        logger: silentLogger,
        retentionDays: 36_500,
        entriesMax: Number.MAX_SAFE_INTEGER,
        batchEntriesMax: 1,
      });
    } catch (error) {
      // A refusal of the copy (a damaged write-ahead log) names the original.
      if (!isCfnError(error)) throw error;
      throw new CfnError(error.code, error.message.replaceAll(copy, original), {
        ...(error.details as Record<string, unknown> | undefined),
        path: original,
      });
    }
    try {
      return await log.verify();
    } finally {
      await log.close();
    }
  } finally {
    rmSync(copy, { recursive: true, force: true });
  }
}

/**
 * The process holding a POSIX lock on `lockPath` (LevelDB's LOCK), from /proc/locks; undefined
 * when none does, the file is missing, or the system has no /proc/locks.
 */
function lockHolder(lockPath: string): number | undefined {
  let text: string;
  let stat: { dev: bigint; ino: bigint };
  try {
    stat = statSync(lockPath, { bigint: true });
    text = readFileSync("/proc/locks", "utf8");
  } catch {
    return undefined;
  }
  // Linux's dev_t encoding (glibc gnu_dev_major / gnu_dev_minor); /proc/locks prints them in hex.
  const major = ((stat.dev >> 8n) & 0xfffn) | ((stat.dev >> 32n) & ~0xfffn);
  const minor = (stat.dev & 0xffn) | ((stat.dev >> 12n) & ~0xffn);
  for (const line of text.split("\n")) {
    // "1: POSIX  ADVISORY  WRITE 1234 00:2c:5678 0 EOF" (a waiter's line has "->" and is skipped)
    const match =
      /^\d+:\s+(?:POSIX|OFDLCK|FLOCK)\s+\S+\s+\S+\s+(-?\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s/.exec(line);
    if (!match) continue;
    if (
      BigInt(`0x${match[2]}`) === major &&
      BigInt(`0x${match[3]}`) === minor &&
      BigInt(match[4]) === stat.ino
    )
      return Number(match[1]);
  }
  return undefined;
}
