// The simulated network between Raft nodes: every message gets a delivery time drawn from the
// seeded PRNG, and may be dropped, duplicated or delayed long enough to overtake later ones.
// Partitions block directed links (a symmetric partition blocks both directions); a message is
// lost if its link is blocked when it is sent or when it would arrive.

import type { ConfState, Message, NodeId } from "../../src/raft/types.js";
import type { Prng } from "./prng.js";

/** Fault rates and delays of the network; times in virtual milliseconds. */
export interface NetworkFaults {
  /** Probability a message is lost. */
  dropRate: number;
  /** Probability a message is delivered twice (each copy with its own delay). */
  duplicateRate: number;
  delayMinMs: number;
  delayMaxMs: number;
  /** Probability of a long delay in (delayMaxMs, longDelayMaxMs]: reorders messages. */
  longDelayRate: number;
  longDelayMaxMs: number;
}

/** A network that delivers everything promptly and in order per link (used to heal). */
export const CALM_NETWORK: NetworkFaults = {
  dropRate: 0,
  duplicateRate: 0,
  delayMinMs: 1,
  delayMaxMs: 3,
  longDelayRate: 0,
  longDelayMaxMs: 3,
};

interface InFlight {
  deliverAt: number;
  /** Send order; breaks ties so delivery order is a function of the seed alone. */
  seq: number;
  message: Message;
}

/** A min-heap of in-flight messages ordered by (deliverAt, seq). */
class DeliveryQueue {
  private heap: InFlight[] = [];

  get size(): number {
    return this.heap.length;
  }

  push(item: InFlight): void {
    const heap = this.heap;
    heap.push(item);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i] as InFlight, heap[parent] as InFlight)) break;
      [heap[i], heap[parent]] = [heap[parent] as InFlight, heap[i] as InFlight];
      i = parent;
    }
  }

  peek(): InFlight | undefined {
    return this.heap[0];
  }

  pop(): InFlight | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    if (heap.length > 0 && last !== undefined) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        const right = left + 1;
        let smallest = i;
        if (left < heap.length && before(heap[left] as InFlight, heap[smallest] as InFlight)) smallest = left;
        if (right < heap.length && before(heap[right] as InFlight, heap[smallest] as InFlight))
          smallest = right;
        if (smallest === i) break;
        [heap[i], heap[smallest]] = [heap[smallest] as InFlight, heap[i] as InFlight];
        i = smallest;
      }
    }
    return top;
  }
}

function before(a: InFlight, b: InFlight): boolean {
  return a.deliverAt < b.deliverAt || (a.deliverAt === b.deliverAt && a.seq < b.seq);
}

/**
 * Copies a message as a wire would: the receiver must not share objects with the sender (a core
 * that mutates a received entry would otherwise corrupt the sender's log, or hide a bug).
 */
export function copyMessage(message: Message): Message {
  const copy: Message = { ...message, entries: message.entries.map((e) => ({ ...e, data: e.data.slice() })) };
  if (message.snapshot !== undefined) {
    copy.snapshot = {
      metadata: {
        ...message.snapshot.metadata,
        conf: structuredCloneConf(message.snapshot.metadata.conf),
      },
      data: message.snapshot.data.slice(),
    };
  }
  if (message.snapshotChunk !== undefined) copy.snapshotChunk = { ...message.snapshotChunk };
  if (message.context !== undefined) copy.context = message.context.slice();
  return copy;
}

function structuredCloneConf(conf: ConfState): ConfState {
  return {
    voters: [...conf.voters],
    learners: [...conf.learners],
    votersOutgoing: [...conf.votersOutgoing],
    learnersNext: [...conf.learnersNext],
    autoLeave: conf.autoLeave,
  };
}

export interface NetworkStats {
  sent: number;
  delivered: number;
  dropped: number;
  duplicated: number;
  blocked: number;
}

export class SimNetwork {
  private readonly queue = new DeliveryQueue();
  private readonly blockedLinks = new Set<string>();
  private seq = 0;
  readonly stats: NetworkStats = { sent: 0, delivered: 0, dropped: 0, duplicated: 0, blocked: 0 };

  /**
   * @param onLost called for every message the network loses (drop, blocked link), so the
   *   simulator can model what a stream transport notices (a failed snapshot send).
   */
  constructor(
    private readonly prng: Prng,
    public faults: NetworkFaults,
    private readonly onLost: (message: Message) => void = () => {},
  ) {}

  /** Accepts a message sent at `now`; it may be dropped, duplicated or delayed. */
  send(message: Message, now: number): void {
    this.stats.sent++;
    if (this.isBlocked(message.from, message.to)) {
      this.stats.blocked++;
      this.onLost(message);
      return;
    }
    if (this.prng.chance(this.faults.dropRate)) {
      this.stats.dropped++;
      this.onLost(message);
      return;
    }
    const copies = this.prng.chance(this.faults.duplicateRate) ? 2 : 1;
    if (copies === 2) this.stats.duplicated++;
    for (let i = 0; i < copies; i++) {
      this.queue.push({ deliverAt: now + this.drawDelay(), seq: this.seq++, message: copyMessage(message) });
    }
  }

  /** Removes and returns the next message due at or before `now` whose link is open. */
  nextDue(now: number): Message | undefined {
    for (;;) {
      const top = this.queue.peek();
      if (top === undefined || top.deliverAt > now) return undefined;
      this.queue.pop();
      if (this.isBlocked(top.message.from, top.message.to)) {
        this.stats.blocked++;
        this.onLost(top.message);
        continue;
      }
      this.stats.delivered++;
      return top.message;
    }
  }

  /** Puts a message back to arrive at `deliverAt` (its receiver is paused and not reading). */
  hold(message: Message, deliverAt: number): void {
    this.queue.push({ deliverAt, seq: this.seq++, message });
  }

  /** Time of the next queued delivery, or Infinity. */
  nextDeliveryAt(): number {
    return this.queue.peek()?.deliverAt ?? Number.POSITIVE_INFINITY;
  }

  get inFlight(): number {
    return this.queue.size;
  }

  block(from: NodeId, to: NodeId): void {
    this.blockedLinks.add(linkKey(from, to));
  }

  isBlocked(from: NodeId, to: NodeId): boolean {
    return this.blockedLinks.size > 0 && this.blockedLinks.has(linkKey(from, to));
  }

  /** Splits the nodes into groups that cannot talk to each other (symmetric). */
  split(groups: readonly (readonly NodeId[])[]): void {
    for (const [i, group] of groups.entries()) {
      for (const [j, other] of groups.entries()) {
        if (i === j) continue;
        for (const from of group) for (const to of other) this.block(from, to);
      }
    }
  }

  /** Removes every partition. */
  heal(): void {
    this.blockedLinks.clear();
  }

  /** The blocked links, sorted, for trace output. */
  describePartition(): string {
    return [...this.blockedLinks].sort().join(" ");
  }

  private drawDelay(): number {
    const f = this.faults;
    if (f.longDelayRate > 0 && this.prng.chance(f.longDelayRate)) {
      return this.prng.range(f.delayMaxMs + 1, Math.max(f.delayMaxMs + 1, f.longDelayMaxMs));
    }
    return this.prng.range(f.delayMinMs, f.delayMaxMs);
  }
}

function linkKey(from: NodeId, to: NodeId): string {
  return `${from}>${to}`;
}
