// The Raft core's named limits (STYLE.md item 5), their defaults and the relations between them.
// validateConfig() fails with CFN_ERR_RAFT_CONFIG naming the offending field.

import { CfnError } from "../errors.js";
import type { NodeId } from "./types.js";

/** How ReadIndex requests are confirmed. */
export type ReadOnlyOption =
  /** Confirm leadership with a heartbeat round to a quorum (linearizable, always safe). */
  | "safe"
  /** Answer from the leader lease (a quorum acknowledged a heartbeat less than an election
   *  timeout ago); no round trip while it holds, else like "safe". Relies on tick rates that
   *  differ by less than one tick per election timeout. Every node must use it (followers
   *  in lease mode also refuse votes right after a restart). */
  | "lease";

export interface RaftConfig {
  /** This node's id; never "". */
  id: NodeId;
  /** Ticks a follower waits without hearing from a leader before it campaigns. The actual
   *  timeout is randomized in [electionTimeoutTicks, 2 × electionTimeoutTicks). Default 10. */
  electionTimeoutTicks: number;
  /** Ticks between leader heartbeats; must be < electionTimeoutTicks. Default 1. */
  heartbeatTicks: number;
  /** The last index the application has applied (on restart). Default 0. */
  applied: number;
  /** Max append messages in flight to one follower in replicate state. Default 256. */
  inflightMsgsMax: number;
  /** Max entry bytes in flight to one follower; must be >= msgBytesMax. Default 16 MiB. */
  inflightBytesMax: number;
  /** Max entry bytes in one append message (at least one entry is always sent). Default 1 MiB. */
  msgBytesMax: number;
  /** Max bytes of entry payload appended by the leader but not yet applied; proposals beyond
   *  it fail with CFN_ERR_PROPOSAL_DROPPED. Default 64 MiB. */
  uncommittedEntriesBytesMax: number;
  /** Bytes of snapshot data per Snap message. Default 512 KiB. */
  snapshotChunkBytes: number;
  /** Ticks the leader waits for the outcome of a snapshot send (reportSnapshot or the
   *  follower's answer) before it gives up and probes again; a safety net for a lost report.
   *  Must be >= electionTimeoutTicks. Default 100. */
  snapshotTimeoutTicks: number;
  /** Max entry bytes handed to the application per Ready (at least one). Default 4 MiB. */
  maxCommittedBytesPerReady: number;
  /** Run a pre-election so a partitioned node cannot disrupt the cluster. Default true. */
  preVote: boolean;
  /** The leader steps down when it has not heard from a quorum for an election timeout;
   *  followers ignore votes while they hear from a leader (the lease). Default true. */
  checkQuorum: boolean;
  /** ReadIndex mode; "lease" requires checkQuorum. Default "safe". */
  readOnlyOption: ReadOnlyOption;
  /** Followers drop proposals instead of forwarding them to the leader. Default false. */
  disableProposalForwarding: boolean;
}

export const DEFAULT_RAFT_CONFIG: Omit<RaftConfig, "id"> = {
  electionTimeoutTicks: 10,
  heartbeatTicks: 1,
  applied: 0,
  inflightMsgsMax: 256,
  inflightBytesMax: 16 * 1024 * 1024,
  msgBytesMax: 1024 * 1024,
  uncommittedEntriesBytesMax: 64 * 1024 * 1024,
  snapshotChunkBytes: 512 * 1024,
  snapshotTimeoutTicks: 100,
  maxCommittedBytesPerReady: 4 * 1024 * 1024,
  preVote: true,
  checkQuorum: true,
  readOnlyOption: "safe",
  disableProposalForwarding: false,
};

/** Fills defaults for missing fields, then validates. */
export function resolveConfig(partial: Partial<RaftConfig> & { id: NodeId }): RaftConfig {
  const config: RaftConfig = { ...DEFAULT_RAFT_CONFIG, ...partial };
  validateConfig(config);
  return config;
}

function fail(field: string, message: string): never {
  throw new CfnError("CFN_ERR_RAFT_CONFIG", `raft config ${field}: ${message}`, { field });
}

function requireInteger(config: RaftConfig, field: keyof RaftConfig, min: number): void {
  const value = config[field];
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min) {
    fail(field, `must be an integer >= ${min}, got ${String(value)}`);
  }
}

/** Throws CFN_ERR_RAFT_CONFIG (details.field names the field) when a limit is out of range or
 *  inconsistent with another. */
export function validateConfig(config: RaftConfig): void {
  if (typeof config.id !== "string" || config.id === "") fail("id", "must be a non-empty string");
  requireInteger(config, "heartbeatTicks", 1);
  requireInteger(config, "electionTimeoutTicks", 1);
  if (config.electionTimeoutTicks <= config.heartbeatTicks) {
    fail("electionTimeoutTicks", `must be > heartbeatTicks (${config.heartbeatTicks})`);
  }
  requireInteger(config, "applied", 0);
  requireInteger(config, "inflightMsgsMax", 1);
  requireInteger(config, "msgBytesMax", 1);
  requireInteger(config, "inflightBytesMax", 1);
  if (config.inflightBytesMax < config.msgBytesMax) {
    fail("inflightBytesMax", `must be >= msgBytesMax (${config.msgBytesMax})`);
  }
  requireInteger(config, "uncommittedEntriesBytesMax", 1);
  requireInteger(config, "snapshotChunkBytes", 1);
  requireInteger(config, "snapshotTimeoutTicks", 1);
  if (config.snapshotTimeoutTicks < config.electionTimeoutTicks) {
    fail("snapshotTimeoutTicks", `must be >= electionTimeoutTicks (${config.electionTimeoutTicks})`);
  }
  requireInteger(config, "maxCommittedBytesPerReady", 1);
  for (const field of ["preVote", "checkQuorum", "disableProposalForwarding"] as const) {
    if (typeof config[field] !== "boolean") fail(field, "must be a boolean");
  }
  if (config.readOnlyOption !== "safe" && config.readOnlyOption !== "lease") {
    fail("readOnlyOption", `must be "safe" or "lease", got ${String(config.readOnlyOption)}`);
  }
  if (config.readOnlyOption === "lease" && !config.checkQuorum) {
    fail("readOnlyOption", '"lease" requires checkQuorum (the lease is what CheckQuorum keeps)');
  }
}
