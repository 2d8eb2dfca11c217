// The LevelDB adapter of the LogStore port (classic-level). One `save` is one
// `batch(ops, { sync: true })`: LevelDB appends the batch to its write-ahead log and fdatasyncs
// it before the promise resolves, so an acknowledged save survives kill -9 and power loss, and a
// batch is all-or-nothing after a crash.
//
// Writes are serialized through one promise chain: the adapter keeps the log's bounds in memory
// to compute which stale entries a batch deletes, and two interleaved batches would race on them.

import type { ClassicLevel } from "classic-level";
import { CfnError, isCfnError } from "../errors.js";
import type { Logger } from "../obs/logger.js";
import type { Metrics } from "../obs/metrics.js";
import type { Entry, Snapshot } from "../raft/types.js";
import {
  BLOCK_KEY_END,
  BLOCK_KEY_PREFIX,
  blockKey,
  decodeEntry,
  decodeHardState,
  decodeIdentity,
  decodeSnapshot,
  ENTRY_KEY_END,
  ENTRY_KEY_PREFIX,
  encodeHardState,
  encodeIdentity,
  encodeSnapshot,
  HARD_STATE_KEY,
  IDENTITY_KEY,
  SNAPSHOT_KEY,
} from "./codec.js";
import { type BlockBounds, decodeEntryBlock, encodeEntryBlock, entryBlockBounds } from "./entry-block.js";
import { closeLevel, openLevel } from "./level-open.js";
import {
  assertSaveBatch,
  checkSnapshotNewer,
  foreignDataDirError,
  LOG_STORE_FORMAT_VERSION,
  type LoadedLog,
  type LogStore,
  type SaveBatch,
  type StoreIdentity,
  validateIdentity,
  ZERO_HARD_STATE,
} from "./log-store.js";
import { LogStoreMetrics } from "./log-store-metrics.js";

type Db = ClassicLevel<string, Uint8Array>;
type BatchOp = { type: "put"; key: string; value: Uint8Array } | { type: "del"; key: string };

/** A SaveBatch encoded at call time; `shape` keeps what the invariant checks need (its first
 *  entry: the block encoder has checked the rest are contiguous). */
interface EncodedBatch {
  entries: { first: number; last: number; bytes: Uint8Array } | undefined;
  hardState: Uint8Array | undefined;
  snapshot: { index: number; bytes: Uint8Array } | undefined;
  shape: SaveBatch;
}

const NO_BYTES = new Uint8Array(0);

/**
 * Paths held open by this process. classic-level's LOCK only guards against other processes:
 * a second open of the same path in one process would share the lock and corrupt the store.
 */

export interface LevelLogStoreOptions {
  /** The data dir (created when missing). */
  path: string;
  identity: StoreIdentity;
  logger: Logger;
  metrics: Metrics;
}

export class LevelLogStore implements LogStore {
  private readonly db: Db;
  private readonly path: string;
  private readonly logger: Logger;
  private readonly storeMetrics: LogStoreMetrics;
  private readonly identity: StoreIdentity;
  private snapshotIndex = 0;
  private lastIndex = 0;
  /** The stored entry blocks, in index order (non-overlapping; a block may start at or below
   *  the snapshot index: load() skips entries the snapshot covers). */
  private blocks: BlockBounds[] = [];
  private writeChain: Promise<unknown> = Promise.resolve();
  private closed = false;

  private constructor(db: Db, path: string, options: LevelLogStoreOptions) {
    this.db = db;
    this.path = path;
    this.identity = { clusterId: options.identity.clusterId, nodeId: options.identity.nodeId };
    this.logger = options.logger.child("storage");
    this.storeMetrics = new LogStoreMetrics(options.metrics, "leveldb");
  }

  /**
   * Opens (creating when missing) the store at `path`, checks the identity record and reads the
   * log's bounds. Another cluster's or node's dir → CFN_ERR_DATA_DIR_FOREIGN; a dir already open
   * in this or another process → CFN_ERR_DATA_DIR_LOCKED.
   */
  static async open(options: LevelLogStoreOptions): Promise<LevelLogStore> {
    validateIdentity(options.identity);
    const { db, path } = await openLevel(options.path, "data dir", "view");
    try {
      const store = new LevelLogStore(db, path, options);
      await store.checkIdentity();
      await store.readBounds();
      store.logger.info("log store opened", {
        path,
        snapshotIndex: store.snapshotIndex,
        lastIndex: store.lastIndex,
      });
      return store;
    } catch (error) {
      await closeLevel(db, path).catch(() => undefined);
      throw error;
    }
  }

  async load(): Promise<LoadedLog> {
    this.assertOpen();
    // Through the write chain, so a load never sees half of the saves issued before it.
    return this.serialize(() => this.readAll());
  }

  private async readAll(): Promise<LoadedLog> {
    try {
      const hardStateBytes = await this.db.get(HARD_STATE_KEY);
      const snapshotBytes = await this.db.get(SNAPSHOT_KEY);
      const snapshot = snapshotBytes ? decodeSnapshot(snapshotBytes) : undefined;
      const entries: Entry[] = [];
      for await (const [, value] of this.db.iterator({ gte: BLOCK_KEY_PREFIX, lt: BLOCK_KEY_END })) {
        for (const entry of decodeEntryBlock(value)) {
          if (entry.index > this.snapshotIndex) entries.push(entry);
        }
      }
      return {
        hardState: hardStateBytes ? decodeHardState(hardStateBytes) : { ...ZERO_HARD_STATE },
        ...(snapshot ? { snapshot } : {}),
        entries,
        meta: {
          ...this.identity,
          formatVersion: LOG_STORE_FORMAT_VERSION,
          firstIndex: this.snapshotIndex + 1,
          lastIndex: this.lastIndex,
        },
      };
    } catch (error) {
      throw storageError(`cannot read data dir ${this.path}`, error);
    }
  }

  async save(batch: SaveBatch): Promise<void> {
    this.assertOpen();
    // Encode now: the caller may reuse its buffers as soon as save() returns.
    const count = batch.entries.length;
    const encoded: EncodedBatch = {
      entries:
        count > 0
          ? {
              first: batch.entries[0].index,
              last: batch.entries[count - 1].index,
              bytes: encodeEntryBlock(batch.entries),
            }
          : undefined,
      hardState: batch.hardState ? encodeHardState(batch.hardState) : undefined,
      snapshot: batch.snapshot
        ? { index: batch.snapshot.metadata.index, bytes: encodeSnapshot(batch.snapshot) }
        : undefined,
      shape: {
        entries: batch.entries
          .slice(0, 1)
          .map(({ index, term, type }) => ({ index, term, type, data: NO_BYTES })),
        snapshot: batch.snapshot ? { metadata: batch.snapshot.metadata, data: NO_BYTES } : undefined,
      },
    };
    return this.serialize(() => this.writeSave(encoded));
  }

  async compact(snapshot: Snapshot): Promise<void> {
    this.assertOpen();
    const bytes = encodeSnapshot(snapshot);
    const shape: Snapshot = { metadata: structuredClone(snapshot.metadata), data: NO_BYTES };
    return this.serialize(() => this.writeCompact(shape, bytes));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.writeChain.catch(() => undefined);
    await closeLevel(this.db, this.path);
  }

  private async writeSave(batch: EncodedBatch): Promise<void> {
    assertSaveBatch(batch.shape, { snapshotIndex: this.snapshotIndex, lastIndex: this.lastIndex });
    const ops: BatchOp[] = [];
    let snapshotIndex = this.snapshotIndex;
    let lastIndex = this.lastIndex;
    let blocks = this.blocks;
    if (batch.snapshot && batch.shape.snapshot) {
      checkSnapshotNewer(batch.shape.snapshot, this.snapshotIndex);
      for (const block of blocks) ops.push({ type: "del", key: blockKey(block.first) });
      blocks = [];
      ops.push({ type: "put", key: SNAPSHOT_KEY, value: batch.snapshot.bytes });
      snapshotIndex = batch.snapshot.index;
      lastIndex = snapshotIndex;
    }
    const appended = batch.entries;
    if (appended) {
      // The conflicting suffix: blocks from the first new index on go; a block straddling it is
      // rewritten without its tail (rare: a follower whose log diverged from a new leader's).
      const kept: BlockBounds[] = [];
      for (const block of blocks) {
        if (block.last < appended.first) {
          kept.push(block);
          continue;
        }
        ops.push({ type: "del", key: blockKey(block.first) });
        if (block.first < appended.first && appended.first - 1 > snapshotIndex) {
          const head = await this.readBlockHead(block.first, appended.first - 1);
          ops.push({ type: "put", key: blockKey(block.first), value: head });
          kept.push({ first: block.first, last: appended.first - 1 });
        }
      }
      ops.push({ type: "put", key: blockKey(appended.first), value: appended.bytes });
      kept.push({ first: appended.first, last: appended.last });
      blocks = kept;
      lastIndex = appended.last;
    }
    if (batch.hardState) ops.push({ type: "put", key: HARD_STATE_KEY, value: batch.hardState });
    if (ops.length === 0) return;
    await this.writeSynced(ops, appended ? appended.last - appended.first + 1 : 0);
    this.snapshotIndex = snapshotIndex;
    this.lastIndex = lastIndex;
    this.blocks = blocks;
  }

  /** The entries first..last of the stored block starting at `first`, re-encoded as a block. */
  private async readBlockHead(first: number, last: number): Promise<Uint8Array> {
    const bytes = await this.db.get(blockKey(first));
    if (bytes === undefined) throw storageError(`entry block ${first} is missing`, "not found");
    return encodeEntryBlock(decodeEntryBlock(bytes).slice(0, last - first + 1));
  }

  private async writeCompact(shape: Snapshot, bytes: Uint8Array): Promise<void> {
    checkSnapshotNewer(shape, this.snapshotIndex);
    const index = shape.metadata.index;
    const ops: BatchOp[] = [{ type: "put", key: SNAPSHOT_KEY, value: bytes }];
    // Blocks wholly covered by the snapshot go; one straddling it stays until a later
    // compaction covers it (load() skips its covered entries).
    const kept = this.blocks.filter((block) => block.last > index);
    for (const block of this.blocks)
      if (block.last <= index) ops.push({ type: "del", key: blockKey(block.first) });
    await this.writeSynced(ops, 0);
    this.blocks = kept;
    this.snapshotIndex = index;
    this.lastIndex = Math.max(this.lastIndex, index);
  }

  private async writeSynced(ops: BatchOp[], entryCount: number): Promise<void> {
    const startedAt = performance.now();
    let bytes = 0;
    for (const op of ops) if (op.type === "put") bytes += op.value.byteLength;
    try {
      await this.db.batch(ops, { sync: true });
    } catch (error) {
      this.storeMetrics.recordFailure();
      throw storageError(`synced write to ${this.path} failed`, error);
    }
    this.storeMetrics.recordBatch((performance.now() - startedAt) / 1000, entryCount, bytes);
  }

  private async checkIdentity(): Promise<void> {
    const bytes = await this.db.get(IDENTITY_KEY);
    if (bytes === undefined) {
      const record = { ...this.identity, formatVersion: LOG_STORE_FORMAT_VERSION };
      await this.db.put(IDENTITY_KEY, encodeIdentity(record), { sync: true });
      return;
    }
    const stored = decodeIdentity(bytes);
    if (stored.clusterId !== this.identity.clusterId || stored.nodeId !== this.identity.nodeId) {
      throw foreignDataDirError(this.path, stored, this.identity);
    }
    if (stored.formatVersion === 1) {
      await this.migrateFromFormat1();
      return;
    }
    if (stored.formatVersion !== LOG_STORE_FORMAT_VERSION) {
      throw new CfnError(
        "CFN_ERR_STORAGE",
        `data dir ${this.path} has format version ${stored.formatVersion}; this build reads ${LOG_STORE_FORMAT_VERSION}`,
        { path: this.path },
      );
    }
  }

  private async readBounds(): Promise<void> {
    const snapshotBytes = await this.db.get(SNAPSHOT_KEY);
    this.snapshotIndex = snapshotBytes ? decodeSnapshot(snapshotBytes).metadata.index : 0;
    this.blocks = [];
    for await (const value of this.db.values({ gte: BLOCK_KEY_PREFIX, lt: BLOCK_KEY_END })) {
      this.blocks.push(entryBlockBounds(value));
    }
    const last = this.blocks.at(-1)?.last ?? 0;
    this.lastIndex = Math.max(last, this.snapshotIndex);
  }

  /**
   * Rewrites a format-1 data dir (one key per entry) as format 2 (one block) in one synced
   * batch, so a node upgraded in place keeps its log.
   */
  private async migrateFromFormat1(): Promise<void> {
    const entries: Entry[] = [];
    const ops: BatchOp[] = [];
    for await (const [key, value] of this.db.iterator({ gte: ENTRY_KEY_PREFIX, lt: ENTRY_KEY_END })) {
      entries.push(decodeEntry(value));
      ops.push({ type: "del", key });
    }
    if (entries.length > 0)
      ops.push({ type: "put", key: blockKey(entries[0].index), value: encodeEntryBlock(entries) });
    const record = { ...this.identity, formatVersion: LOG_STORE_FORMAT_VERSION };
    ops.push({ type: "put", key: IDENTITY_KEY, value: encodeIdentity(record) });
    await this.writeSynced(ops, entries.length);
    this.logger.info("data dir migrated to format 2", { path: this.path, entries: entries.length });
  }

  private serialize<T>(operation: () => Promise<T>): Promise<T> {
    const run = this.writeChain.then(operation, operation);
    this.writeChain = run.catch(() => undefined);
    return run;
  }

  private assertOpen(): void {
    if (this.closed) throw new CfnError("CFN_ERR_CLOSED", `log store ${this.path} is closed`);
  }
}

function _hasCode(error: unknown, code: string): boolean {
  for (let e = error as { code?: unknown; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
    if (e.code === code) return true;
  }
  return false;
}

function storageError(message: string, cause: unknown): CfnError {
  if (isCfnError(cause)) return cause;
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new CfnError("CFN_ERR_STORAGE", `${message}: ${reason}`, { cause });
}
