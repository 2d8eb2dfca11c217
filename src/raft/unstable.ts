// Entries and a snapshot the core has accepted but the shell has not yet persisted. They are
// handed out in Ready and dropped here once advance() reports them stable.

import { assert } from "../errors.js";
import type { Entry, Snapshot } from "./types.js";

export class Unstable {
  /** An incoming snapshot not yet persisted; precedes `entries`. */
  snapshot: Snapshot | undefined;
  entries: Entry[] = [];
  /** The index of entries[0] (even when entries is empty). */
  offset: number;

  constructor(offset: number) {
    this.offset = offset;
  }

  maybeFirstIndex(): number | undefined {
    return this.snapshot ? this.snapshot.metadata.index + 1 : undefined;
  }

  maybeLastIndex(): number | undefined {
    if (this.entries.length > 0) return this.offset + this.entries.length - 1;
    return this.snapshot ? this.snapshot.metadata.index : undefined;
  }

  maybeTerm(index: number): number | undefined {
    if (index < this.offset) {
      if (this.snapshot && this.snapshot.metadata.index === index) return this.snapshot.metadata.term;
      return undefined;
    }
    const last = this.maybeLastIndex();
    if (last === undefined || index > last) return undefined;
    return this.entries[index - this.offset].term;
  }

  /** Entries up to (index, term) are persisted. A mismatching term means they were replaced
   *  after the Ready was taken; then nothing is stable yet. */
  stableTo(index: number, term: number): void {
    const actual = this.maybeTerm(index);
    if (actual === undefined || actual !== term || index < this.offset) return;
    this.entries = this.entries.slice(index + 1 - this.offset);
    this.offset = index + 1;
  }

  stableSnapTo(index: number): void {
    if (this.snapshot && this.snapshot.metadata.index === index) this.snapshot = undefined;
  }

  restore(snapshot: Snapshot): void {
    this.offset = snapshot.metadata.index + 1;
    this.entries = [];
    this.snapshot = snapshot;
  }

  truncateAndAppend(entries: readonly Entry[]): void {
    const after = entries[0].index;
    if (after === this.offset + this.entries.length) {
      for (const entry of entries) this.entries.push(entry);
    } else if (after <= this.offset) {
      // Replace everything unstable: the new entries start at or before our first one.
      this.offset = after;
      this.entries = entries.slice();
    } else {
      this.entries = this.slice(this.offset, after).concat(entries);
    }
  }

  slice(lo: number, hi: number): Entry[] {
    assert(lo <= hi, `unstable.slice: lo ${lo} > hi ${hi}`);
    const upper = this.offset + this.entries.length;
    assert(
      lo >= this.offset && hi <= upper,
      `unstable.slice: [${lo}, ${hi}) out of [${this.offset}, ${upper})`,
    );
    return this.entries.slice(lo - this.offset, hi - this.offset);
  }
}
