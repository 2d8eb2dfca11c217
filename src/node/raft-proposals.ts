// The RaftHost's proposals in flight: queued during an event-loop turn (stepped into the core
// as one batch), then waiting until the entry carrying each one is applied on this node, fails,
// or passes its deadline. Pure bookkeeping: the host does the stepping and the applying.

import { CfnError } from "../errors.js";
import { type Entry, EntryType } from "../raft/index.js";
import type { RaftHostMetrics } from "./raft-host-metrics.js";

interface PendingProposal<Result> {
  resolve: (result: Result | undefined) => void;
  reject: (error: unknown) => void;
  startedMs: number;
  deadlineMs: number;
}

export class ProposalTracker<Result> {
  /** Insertion order = deadline order (one timeout for all), so sweeps stop early. */
  private readonly pending = new Map<number, PendingProposal<Result>>();
  private queuedEntries: Entry[] = [];
  private queuedSequences: number[] = [];
  /** Applied since the last updateGauge(): counted once per applied batch, not per proposal
   *  (a labelled prom-client inc hashes its labels on every call). */
  private appliedUncounted = 0;

  constructor(
    private readonly metrics: RaftHostMetrics,
    private readonly proposalTimeoutMs: number,
  ) {}

  get size(): number {
    return this.pending.size;
  }

  /** Queues an entry's data for the next batch; the promise settles when it is applied or fails. */
  add(sequence: number, data: Uint8Array, nowMs: number): Promise<Result | undefined> {
    this.queuedEntries.push({ term: 0, index: 0, type: EntryType.Normal, data });
    this.queuedSequences.push(sequence);
    const promise = new Promise<Result | undefined>((resolve, reject) => {
      this.pending.set(sequence, {
        resolve,
        reject,
        startedMs: nowMs,
        deadlineMs: nowMs + this.proposalTimeoutMs,
      });
    });
    this.metrics.pendingProposals.set(this.pending.size);
    return promise;
  }

  /** The entries queued since the last call, and their sequence numbers. */
  takeQueued(): { entries: Entry[]; sequences: number[] } {
    const batch = { entries: this.queuedEntries, sequences: this.queuedSequences };
    this.queuedEntries = [];
    this.queuedSequences = [];
    return batch;
  }

  /** The entry of proposal `sequence` was applied with `result`. False when no one waits. */
  resolve(sequence: number, result: Result | undefined, nowMs: number): boolean {
    const proposal = this.pending.get(sequence);
    if (!proposal) return false;
    this.pending.delete(sequence);
    this.metrics.commitSeconds.observe((nowMs - proposal.startedMs) / 1000);
    this.appliedUncounted++;
    proposal.resolve(result);
    return true;
  }

  reject(sequences: number[], error: unknown, outcome: string): void {
    for (const sequence of sequences) {
      const proposal = this.pending.get(sequence);
      if (!proposal) continue;
      this.pending.delete(sequence);
      this.metrics.proposals.inc({ outcome });
      proposal.reject(error);
    }
    this.metrics.pendingProposals.set(this.pending.size);
  }

  /** Fails proposals past their deadline with CFN_ERR_TIMEOUT (their outcome is unknown). */
  sweep(nowMs: number): void {
    const expired: number[] = [];
    for (const [sequence, proposal] of this.pending) {
      if (proposal.deadlineMs > nowMs) break;
      expired.push(sequence);
    }
    if (expired.length === 0) return;
    const error = new CfnError(
      "CFN_ERR_TIMEOUT",
      `proposal not applied within ${this.proposalTimeoutMs} ms; it may still apply`,
      {
        proposalTimeoutMs: this.proposalTimeoutMs,
      },
    );
    this.reject(expired, error, "timeout");
  }

  /** After a batch of applies: the pending gauge and the applied count. */
  updateGauge(): void {
    if (this.appliedUncounted > 0) {
      this.metrics.proposals.inc({ outcome: "applied" }, this.appliedUncounted);
      this.appliedUncounted = 0;
    }
    this.metrics.pendingProposals.set(this.pending.size);
  }

  failAll(error: unknown): void {
    for (const proposal of this.pending.values()) proposal.reject(error);
    this.pending.clear();
    this.queuedEntries = [];
    this.queuedSequences = [];
    this.metrics.pendingProposals.set(0);
  }
}
