// The Raft core reads its stable log through `Storage` (synchronous, like etcd's). MemoryStorage
// implements it; in production the LevelDB adapter loads its data into a MemoryStorage at start
// and, for each Ready, writes the same changes to disk (one synced batch) and to the
// MemoryStorage (append / setHardState / applySnapshot), so the core always reads memory.

import { assert, CfnError } from "../errors.js";
import { entryBytes } from "./entry-size.js";
import type { ConfState, Entry, HardState, Snapshot } from "./types.js";
import { EntryType } from "./types.js";

export interface InitialState {
  hardState: HardState;
  confState: ConfState;
}

/**
 * Read access to the stable log. Errors are typed: CFN_ERR_COMPACTED for an index at or before
 * the last snapshot, CFN_ERR_UNAVAILABLE for an index past the last entry (or, from snapshot(),
 * a snapshot that is being produced and should be asked for later).
 */
export interface Storage {
  initialState(): InitialState;
  /** Entries [lo, hi), limited to `maxBytes` but at least one entry when lo < hi. */
  entries(lo: number, hi: number, maxBytes: number): Entry[];
  /** Term of entry `index`; valid for firstIndex()-1 ..= lastIndex(). */
  term(index: number): number;
  /** Index of the first entry still in the log (the snapshot index + 1). */
  firstIndex(): number;
  lastIndex(): number;
  snapshot(): Snapshot;
}

export function emptyConfState(): ConfState {
  return { voters: [], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };
}

export function emptyHardState(): HardState {
  return { term: 0, vote: "", commit: 0 };
}

export function emptySnapshot(): Snapshot {
  return { metadata: { index: 0, term: 0, conf: emptyConfState() }, data: new Uint8Array(0) };
}

function compacted(index: number, firstIndex: number): CfnError {
  return new CfnError("CFN_ERR_COMPACTED", `log index ${index} is compacted (first index ${firstIndex})`, {
    index,
    firstIndex,
  });
}

function unavailable(index: number, lastIndex: number): CfnError {
  return new CfnError(
    "CFN_ERR_UNAVAILABLE",
    `log index ${index} is not in the log (last index ${lastIndex})`,
    {
      index,
      lastIndex,
    },
  );
}

/** An in-memory Storage; also the write side the shell drives after each Ready. */
export class MemoryStorage implements Storage {
  /**
   * Storage for a founding member of a new cluster: a snapshot at index 1, term 1 holding the
   * initial membership (and empty application state), so that members added later learn the
   * founders from a snapshot. Every founder must bootstrap with the same `conf`; nodes that
   * join later start from an empty `new MemoryStorage()`.
   */
  static bootstrap(conf: Partial<ConfState> & { voters: string[] }): MemoryStorage {
    const storage = new MemoryStorage();
    const full: ConfState = { ...emptyConfState(), ...conf };
    storage.applySnapshot({ metadata: { index: 1, term: 1, conf: full }, data: new Uint8Array(0) });
    storage.setHardState({ term: 1, vote: "", commit: 1 });
    return storage;
  }

  private hardState: HardState = emptyHardState();
  private snap: Snapshot = emptySnapshot();
  /** ents[0] is a dummy entry holding the index and term of the last compacted entry. */
  private ents: Entry[] = [{ term: 0, index: 0, type: EntryType.Normal, data: new Uint8Array(0) }];

  initialState(): InitialState {
    return { hardState: { ...this.hardState }, confState: this.snap.metadata.conf };
  }

  setHardState(hardState: HardState): void {
    this.hardState = { ...hardState };
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    const offset = this.ents[0].index;
    if (lo <= offset) throw compacted(lo, offset + 1);
    if (hi > this.lastIndex() + 1) throw unavailable(hi - 1, this.lastIndex());
    assert(lo <= hi, `storage.entries: lo ${lo} > hi ${hi}`);
    if (lo === hi) return [];
    // Walk only as far as the byte budget allows: a far-behind follower must not cost a copy
    // of the whole log per message.
    const result: Entry[] = [this.ents[lo - offset]];
    let size = entryBytes(this.ents[lo - offset]);
    for (let i = lo + 1; i < hi; i++) {
      const entry = this.ents[i - offset];
      size += entryBytes(entry);
      if (size > maxBytes) break;
      result.push(entry);
    }
    return result;
  }

  term(index: number): number {
    const offset = this.ents[0].index;
    if (index < offset) throw compacted(index, offset + 1);
    if (index - offset >= this.ents.length) throw unavailable(index, this.lastIndex());
    return this.ents[index - offset].term;
  }

  firstIndex(): number {
    return this.ents[0].index + 1;
  }

  lastIndex(): number {
    return this.ents[0].index + this.ents.length - 1;
  }

  snapshot(): Snapshot {
    return this.snap;
  }

  /** Replaces the whole log with a snapshot received from the leader. An older snapshot than
   *  the one held fails with CFN_ERR_COMPACTED. */
  applySnapshot(snapshot: Snapshot): void {
    const current = this.snap.metadata.index;
    if (snapshot.metadata.index <= current) {
      throw new CfnError(
        "CFN_ERR_COMPACTED",
        `snapshot at ${snapshot.metadata.index} is out of date (have ${current})`,
        {
          index: snapshot.metadata.index,
          snapshotIndex: current,
        },
      );
    }
    this.snap = snapshot;
    const { index, term } = snapshot.metadata;
    this.ents = [{ term, index, type: EntryType.Normal, data: new Uint8Array(0) }];
  }

  /**
   * Records a snapshot of the application's state at `index` (<= applied, so <= lastIndex).
   * Does not drop entries; call compact() for that (usually a little behind, so slow
   * followers can still catch up from the log).
   */
  createSnapshot(index: number, conf: ConfState | undefined, data: Uint8Array): Snapshot {
    if (index <= this.snap.metadata.index) {
      throw new CfnError("CFN_ERR_COMPACTED", `snapshot at ${index} is out of date`, {
        index,
        snapshotIndex: this.snap.metadata.index,
      });
    }
    assert(index <= this.lastIndex(), `storage.createSnapshot: ${index} > last index ${this.lastIndex()}`);
    const offset = this.ents[0].index;
    this.snap = {
      metadata: { index, term: this.ents[index - offset].term, conf: conf ?? this.snap.metadata.conf },
      data,
    };
    return this.snap;
  }

  /** Drops entries up to and including `compactIndex` (which must be <= lastIndex). */
  compact(compactIndex: number): void {
    const offset = this.ents[0].index;
    if (compactIndex <= offset) throw compacted(compactIndex, offset + 1);
    assert(
      compactIndex <= this.lastIndex(),
      `storage.compact: ${compactIndex} > last index ${this.lastIndex()}`,
    );
    const i = compactIndex - offset;
    const dummy: Entry = {
      term: this.ents[i].term,
      index: this.ents[i].index,
      type: EntryType.Normal,
      data: new Uint8Array(0),
    };
    this.ents = [dummy, ...this.ents.slice(i + 1)];
  }

  /**
   * Appends entries (persisted from a Ready). Entries that overlap the log replace the
   * conflicting suffix; entries before firstIndex are ignored; a gap is a bug.
   */
  append(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    const first = this.firstIndex();
    const last = entries[0].index + entries.length - 1;
    if (last < first) return;
    let toAppend = entries;
    if (first > entries[0].index) toAppend = entries.slice(first - entries[0].index);
    const offset = toAppend[0].index - this.ents[0].index;
    assert(
      offset <= this.ents.length,
      `storage.append: missing entries before ${toAppend[0].index} (last ${this.lastIndex()})`,
    );
    // Truncate any conflicting suffix in place, then append (amortized O(appended)).
    this.ents.length = offset;
    for (const entry of toAppend) this.ents.push(entry);
  }
}
