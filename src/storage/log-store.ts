// The LogStore port (STYLE.md item 2): where a Raft node keeps its hard state, its log and its
// latest snapshot. One `save` per Ready round is one synced write batch, so the Raft driver gets
// group commit for free: every proposal of the round shares one fsync.
//
// Adapters: LevelLogStore (classic-level, src/storage/level-log-store.ts) and the memory twin
// MemoryLogStore (src/storage/memory-log-store.ts). Both pass test/storage/compliance.ts.

import { assert, CfnError } from "../errors.js";
import type { Entry, HardState, NodeId, Snapshot } from "../raft/types.js";

/** Who a data dir belongs to: written at first open, checked at every later open. */
export interface StoreIdentity {
  clusterId: string;
  nodeId: NodeId;
}

/** Facts about the stored log, handed back by `load()` alongside the data. */
export interface LogStoreMeta extends StoreIdentity {
  /** On-disk format version of this store. */
  formatVersion: number;
  /** Index of the first stored entry (snapshot index + 1, or 1 when there is no snapshot). */
  firstIndex: number;
  /** Index of the last stored entry, or the snapshot index when the log after it is empty. */
  lastIndex: number;
}

/** Everything a restarting node needs to rebuild its Raft state. */
export interface LoadedLog {
  /** The zero hard state `{ term: 0, vote: "", commit: 0 }` when nothing was ever saved. */
  hardState: HardState;
  snapshot?: Snapshot;
  /** Entries after the snapshot, in index order, contiguous. */
  entries: Entry[];
  meta: LogStoreMeta;
}

/** What one Ready round persists; written as one synced, atomic batch. */
export interface SaveBatch {
  hardState?: HardState;
  /**
   * Contiguous entries. The first one may overwrite stored entries: every stored entry with
   * index ≥ entries[0].index is replaced or deleted (Raft's conflicting-suffix rule).
   */
  entries: Entry[];
  /**
   * A snapshot received from the leader. It replaces the whole log (as etcd's
   * MemoryStorage.ApplySnapshot does): stored entries are all dropped, then `entries` (which must
   * follow the snapshot's index) are appended.
   */
  snapshot?: Snapshot;
}

export interface LogStore {
  /** Reads the whole persisted state. Cheap enough at start; not meant for the hot path. */
  load(): Promise<LoadedLog>;
  /** Persists one Ready round in one synced batch; resolves only once the data is durable. */
  save(batch: SaveBatch): Promise<void>;
  /**
   * Stores a snapshot the application took and drops entries with index ≤ snapshot index
   * (log compaction). A snapshot not newer than the stored one → CFN_ERR_COMPACTED.
   */
  compact(snapshot: Snapshot): Promise<void>;
  /** Releases the store (and its lock on the data dir). Idempotent. */
  close(): Promise<void>;
}

/** 2: entries stored as one block per save (format 1, one key per entry, is migrated at open). */
export const LOG_STORE_FORMAT_VERSION = 2;

export const ZERO_HARD_STATE: HardState = { term: 0, vote: "", commit: 0 };

/** Checks that a batch can be appended to a log whose bounds are given; a failure is a bug. */
export function assertSaveBatch(
  batch: SaveBatch,
  bounds: { snapshotIndex: number; lastIndex: number },
): void {
  const { entries } = batch;
  for (let i = 1; i < entries.length; i++) {
    assert(entries[i].index === entries[i - 1].index + 1, "LogStore.save: entries must be contiguous");
  }
  if (entries.length === 0) return;
  const first = entries[0].index;
  const snapshotIndex = batch.snapshot ? batch.snapshot.metadata.index : bounds.snapshotIndex;
  const lastIndex = batch.snapshot ? batch.snapshot.metadata.index : bounds.lastIndex;
  assert(first > snapshotIndex, `LogStore.save: entry ${first} is not after snapshot index ${snapshotIndex}`);
  assert(first <= lastIndex + 1, `LogStore.save: entry ${first} leaves a gap after last index ${lastIndex}`);
}

/** A snapshot older than (or as old as) the stored one cannot be stored again. */
export function checkSnapshotNewer(snapshot: Snapshot, storedSnapshotIndex: number): void {
  if (snapshot.metadata.index <= storedSnapshotIndex && storedSnapshotIndex > 0) {
    throw new CfnError(
      "CFN_ERR_COMPACTED",
      `snapshot at index ${snapshot.metadata.index} is not newer than the stored snapshot at ${storedSnapshotIndex}`,
      { index: snapshot.metadata.index, storedIndex: storedSnapshotIndex },
    );
  }
}

/** The typed error for a data dir opened with another cluster's or node's identity. */
export function foreignDataDirError(where: string, stored: StoreIdentity, expected: StoreIdentity): CfnError {
  return new CfnError(
    "CFN_ERR_DATA_DIR_FOREIGN",
    `data dir ${where} belongs to cluster "${stored.clusterId}" node "${stored.nodeId}", ` +
      `not cluster "${expected.clusterId}" node "${expected.nodeId}"; point this node at its own data dir ` +
      "or remove the old one if it is no longer needed",
    { path: where, stored, expected },
  );
}

export function validateIdentity(identity: StoreIdentity): void {
  if (typeof identity?.clusterId !== "string" || identity.clusterId.length === 0) {
    throw new CfnError("CFN_ERR_CONFIG_INVALID", "LogStore: clusterId must be a non-empty string");
  }
  if (typeof identity.nodeId !== "string" || identity.nodeId.length === 0) {
    throw new CfnError("CFN_ERR_CONFIG_INVALID", "LogStore: nodeId must be a non-empty string");
  }
}
