// What one simulation run does, and how a seed chooses it. The seed picks the cluster size, the
// Raft switches, the network's weather, the fault mix and the client workload, so 2,000 seeds
// cover 2,000 different scenarios, and one seed always means the same scenario.

import type { RaftConfig } from "../../src/raft/config.js";
import type { NetworkFaults } from "./network.js";
import type { NodeSnapshotPolicy, ShellFault } from "./node.js";
import { Prng } from "./prng.js";
import type { WorkloadConfig } from "./workload.js";

export interface FaultMix {
  /** Mean virtual ms between fault events during the chaos phase. */
  meanIntervalMs: number;
  crashes: boolean;
  partitions: boolean;
  /** Longest a crashed node stays down before it restarts by itself. */
  downMaxMs: number;
  /** Membership changes (add/promote/remove, joint replace) and leadership transfers. */
  membership: boolean;
  /** Process pauses: a node stops (no ticks, no reading) for up to three election timeouts. */
  pauses: boolean;
}

export interface SimConfig {
  seed: number;
  nodeCount: number;
  /** Nodes outside the initial configuration that membership changes may add (fresh ids). */
  spareCount: number;
  /** Virtual ms of the chaos phase (faults and new client requests). */
  chaosMs: number;
  /** After healing, the cluster must converge within this many virtual ms. */
  livenessMaxMs: number;
  /** Virtual ms per Raft tick (each node drifts by up to ±10% around it). */
  tickIntervalMs: number;
  /** Each node's tick interval is off by up to this fraction (clocks drift). */
  clockDriftMax: number;
  raft: Pick<
    RaftConfig,
    "electionTimeoutTicks" | "heartbeatTicks" | "preVote" | "checkQuorum" | "readOnlyOption"
  >;
  network: NetworkFaults;
  faults: FaultMix;
  snapshot: NodeSnapshotPolicy;
  workload: WorkloadConfig;
  /** A deliberately broken shell, only for the simulator's own tests. */
  shellFault?: ShellFault;
}

/** Run length knobs the test sizes to its time budget. */
export interface SimScale {
  chaosMs: number;
  livenessMaxMs: number;
}

export const DEFAULT_SCALE: SimScale = { chaosMs: 2_000, livenessMaxMs: 6_000 };

/** The scenario a seed stands for. */
export function configForSeed(seed: number, scale: SimScale = DEFAULT_SCALE): SimConfig {
  const prng = new Prng(seed).fork("config");
  const nodeCount = prng.pick([3, 3, 3, 4, 5, 5]);
  const calm = prng.chance(0.1); // a few runs without network faults, to exercise the happy path
  const delayMaxMs = prng.range(2, 20);
  // Drawn from its own fork so that adding it left the other choices of old seeds unchanged.
  const membership = new Prng(seed).fork("membership").chance(0.3);
  const pauses = new Prng(seed).fork("pauses").chance(0.5);
  const heartbeatTicks = prng.pick([1, 1, 2, 3]);
  const preVote = prng.chance(0.7);
  const checkQuorum = prng.chance(0.7);
  // Lease reads trust bounded clock drift (the core keeps one tick of margin in an election
  // timeout of ten), so lease seeds drift by at most ±2%.
  const lease = checkQuorum && new Prng(seed).fork("lease").chance(0.25);
  return {
    seed,
    nodeCount,
    spareCount: membership ? 2 : 0,
    chaosMs: scale.chaosMs,
    livenessMaxMs: scale.livenessMaxMs,
    tickIntervalMs: 10,
    clockDriftMax: lease ? 0.02 : 0.1,
    raft: {
      electionTimeoutTicks: 10,
      heartbeatTicks,
      preVote,
      checkQuorum,
      readOnlyOption: lease ? "lease" : "safe",
    },
    network: {
      dropRate: calm ? 0 : prng.pick([0, 0.01, 0.05, 0.1, 0.2]),
      duplicateRate: calm ? 0 : prng.pick([0, 0.01, 0.05, 0.1]),
      delayMinMs: 1,
      delayMaxMs,
      longDelayRate: calm ? 0 : prng.pick([0, 0.01, 0.05]),
      longDelayMaxMs: delayMaxMs + prng.range(20, 300),
    },
    faults: {
      meanIntervalMs: prng.pick([100, 200, 400, 800]),
      crashes: prng.chance(0.8),
      partitions: prng.chance(0.8),
      downMaxMs: prng.pick([100, 400, 1000]),
      membership,
      pauses,
    },
    snapshot: prng.chance(0.5)
      ? { everyEntries: 0, keepEntries: 0 }
      : { everyEntries: prng.range(3, 30), keepEntries: prng.range(0, 5) },
    workload: {
      clients: prng.range(2, 4),
      keys: ["a", "b", "c"].slice(0, prng.range(1, 3)),
      requestTimeoutMs: prng.range(60, 300),
      retriesMax: prng.range(1, 5),
      thinkMaxMs: prng.range(0, 40),
      readIndexShare: 0.5,
    },
  };
}

/** One line naming the scenario, for failure reports. */
export function describeConfig(config: SimConfig): string {
  const r = config.raft;
  const n = config.network;
  const f = config.faults;
  return [
    `nodes=${config.nodeCount}`,
    `preVote=${r.preVote} checkQuorum=${r.checkQuorum} reads=${r.readOnlyOption} drift=${config.clockDriftMax} heartbeat=${r.heartbeatTicks}/${r.electionTimeoutTicks}`,
    `drop=${n.dropRate} dup=${n.duplicateRate} delay=${n.delayMinMs}-${n.delayMaxMs} long=${n.longDelayRate}@${n.longDelayMaxMs}`,
    `faults every ~${f.meanIntervalMs}ms crashes=${f.crashes} partitions=${f.partitions} membership=${f.membership} pauses=${f.pauses}`,
    `snapshot=${config.snapshot.everyEntries}/${config.snapshot.keepEntries}`,
    `clients=${config.workload.clients} keys=${config.workload.keys.length}`,
  ].join(" ");
}
