// The receiving node's window of recently delivered (agent, message id) pairs, which drops a
// message re-sent under another sequence (a sender that re-spooled it, an agent retrying with the
// same id). A bounded first-in-first-out set: the oldest pair leaves when a new one would exceed
// `capacity`.
//
// The keys sit in a ring beside the Set, so evicting the oldest is one array read and one delete.
// Evicting through `set.keys().next()` instead looks O(1) but is not in V8: deleted entries stay
// as holes at the front of the insertion-ordered table until the next rehash, and every new
// iterator walks over them, so once the window is full each message paid a walk over tens of
// thousands of holes (≈ 40 µs at 100,000 pairs on this machine; docs/PERFORMANCE.md).

export class RecentIds {
  private readonly set = new Set<string>();
  /** Grows to `capacity` (no up-front allocation for a large window), then wraps. */
  private readonly ring: string[] = [];
  /** Once the ring is full: the slot of the oldest key, overwritten next. */
  private next = 0;

  constructor(readonly capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity < 1)
      throw new RangeError(`RecentIds capacity must be an integer ≥ 1, got ${capacity}`);
  }

  get size(): number {
    return this.set.size;
  }

  /**
   * The window's key for a pair, as a string of its own. The agent and id come out of a decoded
   * frame, and msgpackr decodes a frame's short strings as slices of one string: a key built
   * from them by concatenation keeps that whole string alive for as long as the window holds
   * the key (≈ 340 bytes per key with the bench's envelopes, against ≈ 130 as a copy; 100,000
   * keys by default). The leading character makes the concatenation a new string; slice(1) then
   * refers to that copy only.
   */
  static key(agent: string, id: string): string {
    return ` ${agent}/${id}`.slice(1);
  }

  has(key: string): boolean {
    return this.set.has(key);
  }

  /** Remembers `key` (no-op when present); evicts the oldest key past capacity. */
  add(key: string): void {
    if (this.set.has(key)) return;
    this.set.add(key);
    if (this.ring.length < this.capacity) {
      this.ring.push(key);
      return;
    }
    this.set.delete(this.ring[this.next]);
    this.ring[this.next] = key;
    this.next = this.next + 1 === this.capacity ? 0 : this.next + 1;
  }
}
