// One round on a swarm found in the registry (`cfn swarm round` on a local swarm): the swarm's
// coordinators and master run in this process for the round's duration, over the swarm's file
// checkpoints, and stop when it ends. The caller holds the swarm's round lock (swarm-locks.ts), so
// no other round reads the same coordinator mailboxes or resumes this round's checkpoints.

import type { Bus } from "../bus/index.js";
import { CfnError } from "../errors.js";
import type { Logger } from "../obs/logger.js";
import type { Metrics } from "../obs/metrics.js";
import { FileCheckpointStore } from "./checkpoint.js";
import { Coordinator } from "./coordinator.js";
import { Master, type RoundHooks, type RoundRequest, type RoundResult } from "./master.js";
import type { SwarmRecord } from "./registry.js";
import { defaultCheckpointDir, workerRefsOf } from "./swarm.js";
import { planTopology } from "./topology.js";

export interface RegisteredRoundOptions {
  bus: Bus;
  record: SwarmRecord;
  /** The round to run (plan and workers come from the record). */
  request: Omit<RoundRequest, "plan" | "workers">;
  /** Resume this unfinished round instead (true: the only unfinished one). */
  resume?: string | true;
  hooks?: RoundHooks;
  logger?: Logger;
  metrics?: Metrics;
}

/** Runs (or resumes) one round of a registered local swarm and returns its result. */
export async function runRegisteredRound(options: RegisteredRoundOptions): Promise<RoundResult> {
  const { bus, record, logger, metrics } = options;
  const plan = planTopology(record.topology, { swarm: record.swarm });
  const checkpoints = new FileCheckpointStore(defaultCheckpointDir(bus, record.swarm));
  const master = new Master({ bus, id: plan.master, checkpoints, logger, metrics });
  let roundId: string | undefined;
  if (options.resume !== undefined) {
    roundId = options.resume === true ? master.unfinishedRounds()[0] : options.resume;
    if (!roundId)
      throw new CfnError("CFN_ERR_UNAVAILABLE", `no unfinished round of swarm ${record.swarm} to resume`);
  }
  const coordinators = plan.coordinators.map(
    (coordinator) => new Coordinator({ bus, id: coordinator.id, checkpoints, logger, metrics }),
  );
  for (const coordinator of coordinators) coordinator.start();
  try {
    if (roundId !== undefined) return await master.resumeRound(roundId, options.hooks);
    return await master.runRound(
      { ...options.request, plan, workers: workerRefsOf(record.agents) },
      options.hooks,
    );
  } finally {
    await Promise.all(coordinators.map((coordinator) => coordinator.stop()));
    master.close();
  }
}
