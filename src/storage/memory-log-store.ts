// The memory twin of the LogStore port: same contract as LevelLogStore (test/storage/compliance.ts),
// no disk, deterministic (no timers: a write becomes durable one microtask after `save`), so the
// simulator and unit tests can use it. It also models what a crash keeps: `MemoryDataDir` holds
// only synced state; `crash()` drops writes not yet durable and reopens from the dir.

import { CfnError } from "../errors.js";
import type { Logger } from "../obs/logger.js";
import type { Metrics } from "../obs/metrics.js";
import type { Entry, HardState, Snapshot } from "../raft/types.js";
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

interface DurableState {
  identity?: StoreIdentity;
  hardState?: HardState;
  snapshot?: Snapshot;
  /** Entries after the snapshot, contiguous. */
  entries: Entry[];
}

/** The "disk" of a memory store: only durable (synced) state lives here. Survives crash(). */
export class MemoryDataDir {
  /** @internal */ state: DurableState = { entries: [] };
  /** @internal */ inUse = false;
  constructor(readonly name = "memory") {}
}

export interface MemoryLogStoreOptions {
  dir: MemoryDataDir;
  identity: StoreIdentity;
  logger: Logger;
  metrics: Metrics;
}

interface PendingWrite {
  apply: () => number;
  resolve: () => void;
  reject: (error: unknown) => void;
}

export class MemoryLogStore implements LogStore {
  private readonly dir: MemoryDataDir;
  private readonly options: MemoryLogStoreOptions;
  private readonly storeMetrics: LogStoreMetrics;
  private readonly pending: PendingWrite[] = [];
  private syncPaused = false;
  private flushScheduled = false;
  private failuresToInject = 0;
  private closed = false;

  private constructor(options: MemoryLogStoreOptions) {
    this.dir = options.dir;
    this.options = options;
    this.storeMetrics = new LogStoreMetrics(options.metrics, "memory");
  }

  /** Opens the dir, writing the identity record on first open and checking it afterwards. */
  static async open(options: MemoryLogStoreOptions): Promise<MemoryLogStore> {
    validateIdentity(options.identity);
    const { dir, identity } = options;
    if (dir.inUse) {
      throw new CfnError("CFN_ERR_DATA_DIR_LOCKED", `memory data dir ${dir.name} is already open`, {
        path: dir.name,
      });
    }
    const stored = dir.state.identity;
    if (stored && (stored.clusterId !== identity.clusterId || stored.nodeId !== identity.nodeId)) {
      throw foreignDataDirError(dir.name, stored, identity);
    }
    if (!stored)
      dir.state = { ...dir.state, identity: { clusterId: identity.clusterId, nodeId: identity.nodeId } };
    dir.inUse = true;
    return new MemoryLogStore(options);
  }

  async load(): Promise<LoadedLog> {
    this.assertOpen();
    const state = structuredClone(this.dir.state);
    const snapshotIndex = state.snapshot?.metadata.index ?? 0;
    const lastIndex =
      state.entries.length > 0 ? state.entries[state.entries.length - 1].index : snapshotIndex;
    return {
      hardState: state.hardState ?? { ...ZERO_HARD_STATE },
      ...(state.snapshot ? { snapshot: state.snapshot } : {}),
      entries: state.entries,
      meta: {
        clusterId: this.options.identity.clusterId,
        nodeId: this.options.identity.nodeId,
        formatVersion: LOG_STORE_FORMAT_VERSION,
        firstIndex: snapshotIndex + 1,
        lastIndex,
      },
    };
  }

  async save(batch: SaveBatch): Promise<void> {
    this.assertOpen();
    const copy = structuredClone(batch);
    return this.enqueue(() => {
      this.dir.state = applySave(this.dir.state, copy);
      return copy.entries.length;
    });
  }

  async compact(snapshot: Snapshot): Promise<void> {
    this.assertOpen();
    const copy = structuredClone(snapshot);
    return this.enqueue(() => {
      this.dir.state = applyCompact(this.dir.state, copy);
      return 0;
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.syncPaused = false;
    this.flush();
    this.closed = true;
    this.dir.inUse = false;
  }

  /**
   * Simulates kill -9: writes not yet durable are lost (their promises reject with
   * CFN_ERR_CLOSED), this store is dead, and a fresh store over the same dir is returned.
   */
  crash(): MemoryLogStore {
    this.closed = true;
    const lost = this.pending.splice(0);
    for (const write of lost)
      write.reject(new CfnError("CFN_ERR_CLOSED", "log store crashed before the write synced"));
    this.dir.inUse = true;
    return new MemoryLogStore(this.options);
  }

  /** Holds writes un-synced (their promises stay pending) until resumeSync(); for crash tests. */
  pauseSync(): void {
    this.syncPaused = true;
  }

  resumeSync(): void {
    this.syncPaused = false;
    this.scheduleFlush();
  }

  /** The next `count` writes fail with CFN_ERR_STORAGE and change nothing (fault injection). */
  injectWriteFailures(count: number): void {
    this.failuresToInject = count;
  }

  private enqueue(apply: () => number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ apply, resolve, reject });
      this.scheduleFlush();
    });
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || this.syncPaused) return;
    this.flushScheduled = true;
    queueMicrotask(() => {
      this.flushScheduled = false;
      if (!this.closed && !this.syncPaused) this.flush();
    });
  }

  private flush(): void {
    for (let write = this.pending.shift(); write; write = this.pending.shift()) {
      if (this.failuresToInject > 0) {
        this.failuresToInject--;
        this.storeMetrics.recordFailure();
        write.reject(new CfnError("CFN_ERR_STORAGE", "injected write failure"));
        continue;
      }
      try {
        const entryCount = write.apply();
        this.storeMetrics.recordBatch(0, entryCount, 0);
        write.resolve();
      } catch (error) {
        write.reject(error);
      }
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new CfnError("CFN_ERR_CLOSED", `log store ${this.dir.name} is closed`);
  }
}

function boundsOf(state: DurableState): { snapshotIndex: number; lastIndex: number } {
  const snapshotIndex = state.snapshot?.metadata.index ?? 0;
  const lastIndex = state.entries.length > 0 ? state.entries[state.entries.length - 1].index : snapshotIndex;
  return { snapshotIndex, lastIndex };
}

/** The durable state after one save; throws (changing nothing) when the batch is invalid. */
function applySave(state: DurableState, batch: SaveBatch): DurableState {
  assertSaveBatch(batch, boundsOf(state));
  let { snapshot, entries } = state;
  if (batch.snapshot) {
    checkSnapshotNewer(batch.snapshot, boundsOf(state).snapshotIndex);
    snapshot = batch.snapshot;
    entries = [];
  }
  if (batch.entries.length > 0) {
    const first = batch.entries[0].index;
    entries = [...entries.filter((entry) => entry.index < first), ...batch.entries];
  }
  return { ...state, snapshot, entries, hardState: batch.hardState ?? state.hardState };
}

function applyCompact(state: DurableState, snapshot: Snapshot): DurableState {
  checkSnapshotNewer(snapshot, boundsOf(state).snapshotIndex);
  const index = snapshot.metadata.index;
  return { ...state, snapshot, entries: state.entries.filter((entry) => entry.index > index) };
}
