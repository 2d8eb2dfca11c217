// The leader's view of one follower: how far its log matches, what to send next, and which of
// three flow-control states it is in.
//
//   probe      – we do not know where the follower's log ends; send one append at a time and
//                wait for its answer (or a heartbeat response) before the next.
//   replicate  – the follower keeps up; pipeline appends optimistically, bounded by Inflights.
//   snapshot   – the follower needs a snapshot; send nothing until the transport reports the
//                snapshot's outcome or the follower acknowledges it.

import { assert } from "../errors.js";
import { Inflights } from "./inflights.js";

export type ProgressState = "probe" | "replicate" | "snapshot";

export class Progress {
  /** Highest index known to match the leader's log. */
  match: number;
  /** Index of the next entry to send. Invariant: match < next. */
  next: number;
  state: ProgressState = "probe";
  /** Highest commit index sent to this peer (appends and heartbeats); avoids empty appends
   *  that would tell it nothing new. */
  sentCommit = 0;
  /** In snapshot state: the index of the snapshot being sent. */
  pendingSnapshot = 0;
  /** In snapshot state: leader ticks since the snapshot was sent. */
  snapshotTicks = 0;
  /** Leader tick at which the newest heartbeat this peer acknowledged was sent; the peer
   *  refuses votes for an election timeout after receiving it (lease reads). */
  heartbeatAckTick = Number.NEGATIVE_INFINITY;
  /** Heard from since the last CheckQuorum round. */
  recentActive = false;
  /** In probe state: an append is outstanding; in replicate state: the window is full. */
  msgAppFlowPaused = false;
  inflights: Inflights;
  isLearner: boolean;

  constructor(init: {
    match: number;
    next: number;
    inflightMsgsMax: number;
    inflightBytesMax: number;
    isLearner: boolean;
  }) {
    this.match = init.match;
    this.next = init.next;
    this.isLearner = init.isLearner;
    this.inflights = new Inflights(init.inflightMsgsMax, init.inflightBytesMax);
    assert(this.match < this.next, "progress: match < next");
  }

  private resetState(state: ProgressState): void {
    this.msgAppFlowPaused = false;
    this.pendingSnapshot = 0;
    this.state = state;
    this.inflights.reset();
  }

  becomeProbe(): void {
    // After a snapshot the follower holds at least the snapshot's entries.
    if (this.state === "snapshot") {
      const pendingSnapshot = this.pendingSnapshot;
      this.resetState("probe");
      this.next = Math.max(this.match + 1, pendingSnapshot + 1);
    } else {
      this.resetState("probe");
      this.next = this.match + 1;
    }
  }

  becomeReplicate(): void {
    this.resetState("replicate");
    this.next = this.match + 1;
  }

  becomeSnapshot(snapshotIndex: number): void {
    this.resetState("snapshot");
    this.pendingSnapshot = snapshotIndex;
    this.snapshotTicks = 0;
    this.next = snapshotIndex + 1;
  }

  /** Book-keeping after sending an append carrying `entries` entries of `bytes` bytes. */
  sentEntries(entries: number, bytes: number): void {
    if (this.state === "replicate") {
      if (entries > 0) {
        this.next += entries;
        this.inflights.add(this.next - 1, bytes);
      }
      this.msgAppFlowPaused = this.inflights.full();
    } else if (this.state === "probe") {
      if (entries > 0) this.msgAppFlowPaused = true;
    } else {
      assert(false, `progress: sending entries in state ${this.state}`);
    }
  }

  /** Records that a message told this peer about commit index `commit`. */
  sentCommitIndex(commit: number): void {
    this.sentCommit = Math.max(this.sentCommit, commit);
  }

  /** An acknowledgement of `index`; returns true when it moved match forward. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (this.match < index) {
      this.match = index;
      updated = true;
      this.msgAppFlowPaused = false;
    }
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  /**
   * A rejection of the append whose previous index was `rejected`; `matchHint` is the
   * follower's guess of the last index that may match. Returns false for a stale rejection.
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === "replicate") {
      if (rejected <= this.match) return false; // stale: we already know it matches further
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false; // stale: not the probe we are waiting on
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1);
    this.msgAppFlowPaused = false;
    return true;
  }

  /** True when the leader should not send appends now. */
  isPaused(): boolean {
    if (this.state === "snapshot") return true;
    return this.msgAppFlowPaused;
  }

  toString(): string {
    let text = `${this.state} match=${this.match} next=${this.next}`;
    if (this.isLearner) text += " learner";
    if (this.isPaused()) text += " paused";
    if (this.pendingSnapshot > 0) text += ` pendingSnap=${this.pendingSnapshot}`;
    if (!this.recentActive) text += " inactive";
    if (this.inflights.count() > 0) text += ` inflight=${this.inflights.count()}`;
    if (this.inflights.full()) text += "[full]";
    return text;
  }
}
