// The Raft log as the core sees it: stable entries in Storage followed by unstable ones, plus
// the commit and applied indexes. Invariant: applied <= committed <= lastIndex.

import { assert, CfnError, isCfnError } from "../errors.js";
import { limitSize } from "./entry-size.js";
import type { Storage } from "./storage.js";
import type { Entry, Snapshot } from "./types.js";
import { Unstable } from "./unstable.js";

export class RaftLog {
  readonly storage: Storage;
  readonly unstable: Unstable;
  /** Highest index known to be committed (stored on a quorum). */
  committed: number;
  /** Highest index the application has applied. */
  applied: number;

  constructor(storage: Storage) {
    this.storage = storage;
    const firstIndex = storage.firstIndex();
    const lastIndex = storage.lastIndex();
    this.unstable = new Unstable(lastIndex + 1);
    this.committed = firstIndex - 1;
    this.applied = firstIndex - 1;
  }

  firstIndex(): number {
    return this.unstable.maybeFirstIndex() ?? this.storage.firstIndex();
  }

  lastIndex(): number {
    return this.unstable.maybeLastIndex() ?? this.storage.lastIndex();
  }

  /** Term of `index`; throws CFN_ERR_COMPACTED / CFN_ERR_UNAVAILABLE outside the log. */
  term(index: number): number {
    const dummyIndex = this.firstIndex() - 1;
    if (index < dummyIndex) {
      throw new CfnError("CFN_ERR_COMPACTED", `log index ${index} is compacted`, { index });
    }
    if (index > this.lastIndex()) {
      throw new CfnError("CFN_ERR_UNAVAILABLE", `log index ${index} is not in the log`, { index });
    }
    const unstableTerm = this.unstable.maybeTerm(index);
    if (unstableTerm !== undefined) return unstableTerm;
    return this.storage.term(index);
  }

  /** Term of `index`, or 0 when it is outside the log (no entry has term 0 except the origin). */
  termOrZero(index: number): number {
    try {
      return this.term(index);
    } catch (error) {
      if (isCfnError(error, "CFN_ERR_COMPACTED") || isCfnError(error, "CFN_ERR_UNAVAILABLE")) return 0;
      throw error;
    }
  }

  lastTerm(): number {
    const term = this.term(this.lastIndex());
    return term;
  }

  matchTerm(index: number, term: number): boolean {
    if (index < this.firstIndex() - 1 || index > this.lastIndex()) return false;
    return this.termOrZero(index) === term;
  }

  /** Raft §5.4.1: is a log ending at (lastIndex, term) at least as up to date as ours? */
  isUpToDate(lastIndex: number, term: number): boolean {
    const ourTerm = this.lastTerm();
    return term > ourTerm || (term === ourTerm && lastIndex >= this.lastIndex());
  }

  /**
   * The follower side of AppendEntries: when our entry at `index` has `logTerm`, append
   * `entries` (dropping any conflicting suffix) and commit up to min(commit, last new index).
   * Returns the last new index, or undefined when the terms do not match.
   */
  maybeAppend(index: number, logTerm: number, commit: number, entries: readonly Entry[]): number | undefined {
    if (!this.matchTerm(index, logTerm)) return undefined;
    const lastNewIndex = index + entries.length;
    const conflictIndex = this.findConflict(entries);
    if (conflictIndex !== 0) {
      assert(
        conflictIndex > this.committed,
        `log: entry ${conflictIndex} conflicts with committed ${this.committed}`,
      );
      this.append(entries.slice(conflictIndex - (index + 1)));
    }
    this.commitTo(Math.min(commit, lastNewIndex));
    return lastNewIndex;
  }

  /** Appends after truncating any conflicting suffix; returns the new last index. */
  append(entries: readonly Entry[]): number {
    if (entries.length === 0) return this.lastIndex();
    const after = entries[0].index - 1;
    assert(after >= this.committed, `log: append after ${after} would overwrite committed ${this.committed}`);
    assert(after <= this.lastIndex(), `log: append after ${after} leaves a gap (last ${this.lastIndex()})`);
    this.unstable.truncateAndAppend(entries);
    return this.lastIndex();
  }

  /** First entry whose term differs from ours (or that we lack); 0 when all match. */
  findConflict(entries: readonly Entry[]): number {
    for (const entry of entries) {
      if (!this.matchTerm(entry.index, entry.term)) return entry.index;
    }
    return 0;
  }

  /**
   * The largest index <= `index` whose term is <= `term`, with that term: where the leader
   * and a rejecting follower may agree (fast log back-off).
   */
  findConflictByTerm(index: number, term: number): { index: number; term: number } {
    for (let i = index; i > 0; i--) {
      let ourTerm: number;
      try {
        ourTerm = this.term(i);
      } catch {
        return { index: i, term: 0 };
      }
      if (ourTerm <= term) return { index: i, term: ourTerm };
    }
    return { index: 0, term: 0 };
  }

  commitTo(commit: number): void {
    if (this.committed >= commit) return; // never decrease
    assert(commit <= this.lastIndex(), `log: commit ${commit} beyond last index ${this.lastIndex()}`);
    this.committed = commit;
  }

  /** Commits `maxIndex` if its entry has `term` (only current-term entries commit by count). */
  maybeCommit(maxIndex: number, term: number): boolean {
    if (maxIndex > this.committed && maxIndex <= this.lastIndex() && this.termOrZero(maxIndex) === term) {
      this.commitTo(maxIndex);
      return true;
    }
    return false;
  }

  appliedTo(index: number): void {
    if (index === 0) return;
    assert(
      index <= this.committed && index >= this.applied,
      `log: applied ${index} outside [${this.applied}, ${this.committed}]`,
    );
    this.applied = index;
  }

  stableTo(index: number, term: number): void {
    this.unstable.stableTo(index, term);
  }

  stableSnapTo(index: number): void {
    this.unstable.stableSnapTo(index);
  }

  hasPendingSnapshot(): boolean {
    return this.unstable.snapshot !== undefined;
  }

  unstableEntries(): Entry[] {
    return this.unstable.entries;
  }

  /** Committed entries not yet applied, up to `maxBytes` (at least one). None while an
   *  unstable snapshot waits to be installed first. */
  nextCommittedEntries(maxBytes: number): Entry[] {
    if (this.hasPendingSnapshot()) return [];
    const lo = Math.max(this.applied + 1, this.firstIndex());
    if (this.committed + 1 <= lo) return [];
    return this.slice(lo, this.committed + 1, maxBytes);
  }

  hasNextCommittedEntries(): boolean {
    if (this.hasPendingSnapshot()) return false;
    return this.committed + 1 > Math.max(this.applied + 1, this.firstIndex());
  }

  /** Entries from `index` to the end, limited to `maxBytes` (at least one). */
  entries(index: number, maxBytes: number): Entry[] {
    if (index > this.lastIndex()) return [];
    return this.slice(index, this.lastIndex() + 1, maxBytes);
  }

  /** Entries [lo, hi) across storage and unstable. Throws CFN_ERR_COMPACTED when lo is gone. */
  slice(lo: number, hi: number, maxBytes: number): Entry[] {
    assert(lo <= hi, `log.slice: lo ${lo} > hi ${hi}`);
    const firstIndex = this.firstIndex();
    if (lo < firstIndex) {
      throw new CfnError("CFN_ERR_COMPACTED", `log index ${lo} is compacted`, { index: lo, firstIndex });
    }
    assert(hi <= this.lastIndex() + 1, `log.slice: hi ${hi} beyond last index ${this.lastIndex()}`);
    if (lo === hi) return [];
    let result: Entry[] = [];
    const offset = this.unstable.offset;
    if (lo < offset) {
      const stableHi = Math.min(hi, offset);
      const stored = this.storage.entries(lo, stableHi, maxBytes);
      if (stored.length < stableHi - lo) return stored; // hit the byte limit
      result = stored;
    }
    if (hi > offset) {
      const fresh = this.unstable.slice(Math.max(lo, offset), hi);
      result = result.length > 0 ? result.concat(fresh) : fresh;
    }
    return limitSize(result, maxBytes);
  }

  /** All entries from `lo` (for tests and debugging). */
  allEntries(): Entry[] {
    return this.slice(this.firstIndex(), this.lastIndex() + 1, Number.MAX_SAFE_INTEGER);
  }

  /** The snapshot to send a follower: an incoming unstable one, else the stored one. */
  snapshot(): Snapshot {
    return this.unstable.snapshot ?? this.storage.snapshot();
  }

  /** Replaces the log by a snapshot (the follower received it). */
  restore(snapshot: Snapshot): void {
    this.committed = snapshot.metadata.index;
    this.unstable.restore(snapshot);
  }
}
