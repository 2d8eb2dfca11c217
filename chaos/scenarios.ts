// The fault scenarios. Each is one round of faults, repeated `rounds` times by the runner while
// the workload runs; after the last round the runner heals everything and checks the outcome.
// A round only injects and undoes faults and reports the elections it waited for: the runner
// owns the workload and the checks, so every scenario is checked the same way on every backend.

import type { ChaosCluster, Fault } from "./backends.js";
import type { Prng } from "./sim/prng.js";

export interface ScenarioTiming {
  /** How long a partition, pause or degraded link is held (± 25 %, from the seed). */
  faultHoldMs: number;
  /** Time between one round's end and the next round (writes go on, nodes catch up). */
  settleMs: number;
  /** Bound on the time from a fault (or from healing) to a leader a majority agrees on. */
  leaderWithinMs: number;
}

export const SHORT_TIMING: ScenarioTiming = { faultHoldMs: 1_000, settleMs: 600, leaderWithinMs: 5_000 };
export const LONG_TIMING: ScenarioTiming = { faultHoldMs: 3_000, settleMs: 2_000, leaderWithinMs: 5_000 };

export function validateTiming(timing: ScenarioTiming): void {
  for (const [name, value] of Object.entries(timing))
    if (!Number.isFinite(value) || value <= 0) throw new Error(`timing ${name} must be > 0 ms, got ${value}`);
}

export interface ScenarioContext {
  cluster: ChaosCluster;
  prng: Prng;
  timing: ScenarioTiming;
  round: number;
  /** Appends to the run's timeline. */
  event(kind: string, detail?: Record<string, unknown>): void;
  /** Waits (bounded by timing.leaderWithinMs) for an agreed leader other than `except`; records
   *  the wait as an election of this round caused by `cause`. */
  awaitLeader(cause: string, except?: string): Promise<string>;
  /** The fault hold time of this round: timing.faultHoldMs ± 25 %, drawn from the seed. */
  holdMs(): number;
  sleep(ms: number): Promise<void>;
}

export interface Scenario {
  name: string;
  description: string;
  needs: Fault[];
  round(context: ScenarioContext): Promise<void>;
}

const killLeader: Scenario = {
  name: "kill-leader",
  description: "kill -9 the leader under load, wait for a new leader, restart the old one from its data dir",
  needs: ["kill"],
  async round(context) {
    const leader = await context.awaitLeader("before");
    await context.cluster.kill(leader);
    context.event("kill", { node: leader });
    await context.awaitLeader("kill -9 leader", leader);
    await context.sleep(context.timing.settleMs);
    await context.cluster.restart(leader);
    context.event("restart", { node: leader });
  },
};

const partitionLeader: Scenario = {
  name: "partition-leader",
  description: "cut the leader off from every other node (a minority of one), then heal",
  needs: ["partition"],
  async round(context) {
    const leader = await context.awaitLeader("before");
    await context.cluster.isolate(leader);
    context.event("isolate", { node: leader });
    await context.awaitLeader("leader partitioned away", leader);
    await context.sleep(context.holdMs());
    await context.cluster.heal();
    context.event("heal");
    await context.awaitLeader("after heal");
  },
};

const pauseLeader: Scenario = {
  name: "pause-leader",
  description: "SIGSTOP the leader past the election timeout, then SIGCONT: it must step down",
  needs: ["pause"],
  async round(context) {
    const leader = await context.awaitLeader("before");
    await context.cluster.pause(leader);
    context.event("pause", { node: leader });
    await context.awaitLeader("leader paused", leader);
    await context.sleep(context.holdMs());
    await context.cluster.resume(leader);
    context.event("resume", { node: leader });
    await context.awaitLeader("after resume");
  },
};

const degradedLink: Scenario = {
  name: "degraded-link",
  description: "delay and loss on the link between the leader and one follower, then heal",
  needs: ["link"],
  async round(context) {
    const leader = await context.awaitLeader("before");
    const followers = context.cluster.nodeIds.filter((id) => id !== leader);
    const follower = followers[context.prng.int(followers.length)];
    const applied = await context.cluster.degradeLink(leader, follower, { delayMs: 50, lossPercent: 20 });
    context.event("degrade-link", { between: [leader, follower], ...applied });
    await context.sleep(context.holdMs());
    await context.awaitLeader("during degraded link");
    await context.cluster.heal();
    context.event("heal");
  },
};

export const SCENARIOS: readonly Scenario[] = [killLeader, partitionLeader, pauseLeader, degradedLink];

export function scenarioNamed(name: string): Scenario {
  const scenario = SCENARIOS.find((candidate) => candidate.name === name);
  if (!scenario) throw new Error(`no scenario "${name}"; known: ${SCENARIOS.map((s) => s.name).join(", ")}`);
  return scenario;
}
