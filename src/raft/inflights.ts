// The bounded window of append messages in flight to one follower (flow control). Each entry
// records the last log index of a message and its bytes; an acknowledgement frees every message
// up to the acknowledged index.

import { assert } from "../errors.js";

export class Inflights {
  private readonly indexes: number[] = [];
  private readonly sizes: number[] = [];
  private start = 0; // position of the oldest live element (amortized queue)
  private totalBytes = 0;

  constructor(
    /** Max messages in the window. */
    readonly msgsMax: number,
    /** Max bytes in the window. */
    readonly bytesMax: number,
  ) {
    assert(msgsMax >= 1, "inflights: msgsMax >= 1");
  }

  /** Records a message whose last entry is `index`. Indexes must increase. */
  add(index: number, bytes: number): void {
    assert(!this.full(), "inflights: add to a full window");
    const count = this.count();
    if (count > 0) assert(index > this.indexes[this.indexes.length - 1], "inflights: index must increase");
    this.indexes.push(index);
    this.sizes.push(bytes);
    this.totalBytes += bytes;
  }

  /** Frees every message whose last index is <= `index`. */
  freeLE(index: number): void {
    while (this.start < this.indexes.length && this.indexes[this.start] <= index) {
      this.totalBytes -= this.sizes[this.start];
      this.start++;
    }
    if (this.start === this.indexes.length) this.reset();
    else if (this.start > 64 && this.start * 2 > this.indexes.length) {
      this.indexes.splice(0, this.start);
      this.sizes.splice(0, this.start);
      this.start = 0;
    }
  }

  full(): boolean {
    return this.count() >= this.msgsMax || this.totalBytes >= this.bytesMax;
  }

  count(): number {
    return this.indexes.length - this.start;
  }

  bytes(): number {
    return this.totalBytes;
  }

  reset(): void {
    this.indexes.length = 0;
    this.sizes.length = 0;
    this.start = 0;
    this.totalBytes = 0;
  }

  clone(): Inflights {
    const copy = new Inflights(this.msgsMax, this.bytesMax);
    for (let i = this.start; i < this.indexes.length; i++) copy.add(this.indexes[i], this.sizes[i]);
    return copy;
  }
}
