// The Raft host's Prometheus metrics (cfn_raft_*), created once per host on its Metrics registry.

import type { Counter, Gauge, Histogram } from "prom-client";
import type { Metrics } from "../obs/metrics.js";

/** Entries per persisted Ready: how well group commit batches proposals. */
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

export class RaftHostMetrics {
  readonly commitSeconds: Histogram<string>;
  readonly saveSeconds: Histogram<string>;
  readonly saveEntries: Histogram<string>;
  readonly term: Gauge<string>;
  readonly isLeader: Gauge<string>;
  readonly commitIndex: Gauge<string>;
  readonly appliedIndex: Gauge<string>;
  readonly pendingProposals: Gauge<string>;
  readonly leaderChanges: Counter<string>;
  readonly proposals: Counter<string>;
  readonly reads: Counter<string>;
  readonly snapshots: Counter<string>;

  constructor(metrics: Metrics) {
    this.commitSeconds = metrics.histogram(
      "cfn_raft_commit_seconds",
      "Time from propose() to the entry being applied on the proposing node",
    );
    this.saveSeconds = metrics.histogram(
      "cfn_raft_save_seconds",
      "Time of one persisted Ready (one synced batch)",
    );
    this.saveEntries = metrics.histogram(
      "cfn_raft_save_entries",
      "Log entries per persisted Ready (group commit batch size)",
      [],
      BATCH_BUCKETS,
    );
    this.term = metrics.gauge("cfn_raft_term", "Current Raft term");
    this.isLeader = metrics.gauge("cfn_raft_is_leader", "1 when this node is the Raft leader");
    this.commitIndex = metrics.gauge("cfn_raft_commit_index", "Highest log index known committed");
    this.appliedIndex = metrics.gauge(
      "cfn_raft_applied_index",
      "Highest log index applied to the state machine",
    );
    this.pendingProposals = metrics.gauge("cfn_raft_pending_proposals", "Proposals waiting to be applied");
    this.leaderChanges = metrics.counter(
      "cfn_raft_leader_changes_total",
      "Times the known leader changed to another node (the first leader seen is not a change)",
    );
    this.proposals = metrics.counter("cfn_raft_proposals_total", "Proposals by outcome", ["outcome"]);
    this.reads = metrics.counter("cfn_raft_reads_total", "Linearizable reads by outcome", ["outcome"]);
    this.snapshots = metrics.counter("cfn_raft_snapshots_total", "Snapshots taken or installed", ["kind"]);
  }
}
