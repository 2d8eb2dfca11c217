// A bounded outbound queue of frames for one peer (pure: no I/O).
//
// Policy when full (peerQueueFramesMax frames): a Raft frame evicts the oldest queued Raft frame
// (Raft retries lost messages, and a newer heartbeat or append supersedes an older one); a frame
// of another channel is refused, so its sender sees backpressure (sendFrame returns false) rather
// than a silent loss. A Raft frame meeting a queue full of other frames is itself dropped.

import type { Message } from "../raft/types.js";

export interface OutboundFrame {
  bytes: Uint8Array;
  channel: string;
  /** The Raft messages inside (empty for other channels), for snapshot reports and counts. */
  messages: Message[];
}

export type EnqueueResult = { accepted: true; evicted?: OutboundFrame } | { accepted: false };

export class PeerQueue {
  private frames: OutboundFrame[] = [];

  constructor(private readonly framesMax: number) {}

  get length(): number {
    return this.frames.length;
  }

  enqueue(frame: OutboundFrame): EnqueueResult {
    if (this.frames.length < this.framesMax) {
      this.frames.push(frame);
      return { accepted: true };
    }
    if (frame.messages.length === 0) return { accepted: false };
    const oldestRaft = this.frames.findIndex((queued) => queued.messages.length > 0);
    if (oldestRaft < 0) return { accepted: false };
    const [evicted] = this.frames.splice(oldestRaft, 1);
    this.frames.push(frame);
    return { accepted: true, evicted };
  }

  shift(): OutboundFrame | undefined {
    return this.frames.shift();
  }

  /** Empties the queue, handing back what was in it (to report lost snapshots). */
  drain(): OutboundFrame[] {
    const all = this.frames;
    this.frames = [];
    return all;
  }
}
