// The Raft host's named limits (STYLE.md item 5): timing of the tick loop, snapshot cadence and
// the bounds on work waiting for the log. validateRaftHostConfig() fails with
// CFN_ERR_CONFIG_INVALID naming the field; the Raft core's own limits are checked by the core.

import { CfnError } from "../errors.js";
import { type RaftConfig, resolveConfig } from "../raft/index.js";

export interface RaftHostConfig {
  /** This node's id. */
  id: string;
  /** Wall-clock length of one Raft tick, ms. Default 10. */
  tickIntervalMs: number;
  /** Ticks without a leader before a follower campaigns (randomized up to 2×); also the
   *  leader's CheckQuorum window. Default 20 (200–400 ms at 10 ms ticks). Measured on a 2-CPU
   *  machine at 90–99 % CPU pressure: 15 ticks gave failover p50/p99 310/473 ms but 2–4
   *  spurious elections per 60 s full-load soak (slow fsyncs hold heartbeats back); 20 ticks
   *  gave 470/912 ms and none. See docs/RAFT_HOST.md. */
  electionTimeoutTicks: number;
  /** Ticks between leader heartbeats; must be < electionTimeoutTicks. Default 2 (20 ms). */
  heartbeatTicks: number;
  /** Take a state-machine snapshot and compact the log every this many applied entries.
   *  Default 50,000 (etcd: 100,000). A snapshot serializes the whole state on the event loop
   *  (~60 ms of CPU for 8,000 keys of 256 B), so its cost per entry falls with the interval;
   *  the store's compaction no longer grows with it (one delete per entry block, not per
   *  entry). The log kept in memory and replayed at start grows with it (~17 MB at 350 B). */
  snapshotEntriesInterval: number;
  /** Entries kept in memory behind a snapshot so slow followers catch up from the log instead
   *  of a snapshot. Must be < snapshotEntriesInterval. Default 1,000. */
  compactionLagEntries: number;
  /** A proposal not applied within this time fails with CFN_ERR_TIMEOUT (its outcome is then
   *  unknown: it may still apply). Default 5,000 ms. */
  proposalTimeoutMs: number;
  /** A linearizable read not served within this time fails with CFN_ERR_TIMEOUT. Default 5,000 ms. */
  readTimeoutMs: number;
  /** Proposals waiting to be applied on this node; more fail with CFN_ERR_PROPOSAL_DROPPED
   *  (backpressure). Default 50,000. */
  pendingProposalsMax: number;
  /** Reads waiting for their ReadIndex; more fail with CFN_ERR_PROPOSAL_DROPPED. Default 50,000. */
  pendingReadsMax: number;
  /** How long stop() waits for a leadership transfer before closing anyway, ms. Default 1,000. */
  stopTransferTimeoutMs: number;
  /** promoteLearner() refuses (CFN_ERR_LEARNER_NOT_CAUGHT_UP) unless the leader replicates to
   *  the learner (progress "replicate": an append was acknowledged) and it trails the log by at most this many entries:
   *  a voter that joins far behind weakens the quorum until it catches up. Default 1,000. */
  learnerCatchUpLagEntriesMax: number;
  /** Further Raft core limits (inflight windows, message sizes, PreVote…); see RaftConfig. */
  raft: Partial<Omit<RaftConfig, "id" | "electionTimeoutTicks" | "heartbeatTicks" | "applied">>;
}

export const DEFAULT_RAFT_HOST_CONFIG: Omit<RaftHostConfig, "id"> = {
  tickIntervalMs: 10,
  electionTimeoutTicks: 20,
  heartbeatTicks: 2,
  snapshotEntriesInterval: 50_000,
  compactionLagEntries: 1_000,
  proposalTimeoutMs: 5_000,
  readTimeoutMs: 5_000,
  pendingProposalsMax: 50_000,
  pendingReadsMax: 50_000,
  stopTransferTimeoutMs: 1_000,
  learnerCatchUpLagEntriesMax: 1_000,
  raft: {},
};

function fail(field: string, message: string): never {
  throw new CfnError("CFN_ERR_CONFIG_INVALID", `raft host config ${field}: ${message}`, { field });
}

const INTEGER_FIELDS: [keyof RaftHostConfig, number, number][] = [
  ["tickIntervalMs", 1, 10_000],
  ["electionTimeoutTicks", 2, 100_000],
  ["heartbeatTicks", 1, 100_000],
  ["snapshotEntriesInterval", 2, 1_000_000_000],
  ["compactionLagEntries", 0, 1_000_000_000],
  ["proposalTimeoutMs", 1, 3_600_000],
  ["readTimeoutMs", 1, 3_600_000],
  ["pendingProposalsMax", 1, 10_000_000],
  ["pendingReadsMax", 1, 10_000_000],
  ["stopTransferTimeoutMs", 0, 600_000],
  ["learnerCatchUpLagEntriesMax", 0, 1_000_000_000],
];

/** Fills defaults and validates; the Raft core's limits are validated with the same values. */
export function resolveRaftHostConfig(partial: Partial<RaftHostConfig> & { id: string }): RaftHostConfig {
  const config: RaftHostConfig = { ...DEFAULT_RAFT_HOST_CONFIG, ...partial, raft: { ...partial.raft } };
  if (typeof config.id !== "string" || config.id.length === 0) fail("id", "must be a non-empty string");
  for (const [field, min, max] of INTEGER_FIELDS) {
    const value = config[field];
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min || value > max) {
      fail(field, `must be an integer in [${min}, ${max}], got ${String(value)}`);
    }
  }
  if (config.heartbeatTicks >= config.electionTimeoutTicks) {
    fail("heartbeatTicks", `must be < electionTimeoutTicks (${config.electionTimeoutTicks})`);
  }
  if (config.compactionLagEntries >= config.snapshotEntriesInterval) {
    fail("compactionLagEntries", `must be < snapshotEntriesInterval (${config.snapshotEntriesInterval})`);
  }
  resolveConfig(coreConfig(config, 0));
  return config;
}

/** The Raft core's config for this host; `applied` is where the state machine restarts. */
export function coreConfig(config: RaftHostConfig, applied: number): Partial<RaftConfig> & { id: string } {
  return {
    ...config.raft,
    id: config.id,
    electionTimeoutTicks: config.electionTimeoutTicks,
    heartbeatTicks: config.heartbeatTicks,
    applied,
  };
}
