// The `coordination`, `pool` and `spawn` settings (docs/COORDINATION.md): round limits, the cluster
// coordination loop, the agent pool and parallel spawning. Defaults equal the code's defaults;
// flags of `cfn swarm round` / `cfn demo` still override them per run.

import { z } from "zod";

const int = (min: number, max: number) => z.number().int().min(min).max(max);

export const coordinationSchema = z
  .object({
    taskTimeoutMs: int(1, 86_400_000)
      .default(10_000)
      .describe("A task not answered in this time goes to another worker of its team, in ms."),
    attemptsMax: int(1, 100).default(3).describe("Attempts per task (first try included)."),
    retryOnError: z
      .boolean()
      .default(false)
      .describe("Retry a task whose command failed (non-zero exit) on another worker."),
    flushIntervalMs: int(1, 60_000)
      .default(5)
      .describe("A coordinator streams settled outcomes upward at least this often, in ms."),
    flushOutcomesMax: int(1, 100_000)
      .default(200)
      .describe("Outcomes that make a coordinator stream upward at once."),
    roundTimeoutMs: int(100, 86_400_000)
      .default(30_000)
      .describe("Deadline of a round (cfn swarm round, cluster rounds), in ms."),
    livenessIntervalMs: int(10, 60_000)
      .default(200)
      .describe("How often a team coordinator checks its workers' liveness, in ms."),
    reconcileIntervalMs: int(10, 60_000)
      .default(100)
      .describe("How often a node places coordinators and the master by the routing state, in ms."),
    roundQueueMax: int(1, 10_000)
      .default(100)
      .describe("Round requests a cluster swarm holds (queued or running); more are refused."),
    workerDownGraceMs: int(0, 600_000)
      .default(1_500)
      .describe("A worker counts as dead once its node has been marked down this long, in ms."),
    checkpointPendingRecordsMax: int(1, 100_000)
      .default(1_000)
      .describe("Checkpoint records waiting for the Raft log on a node; more are refused."),
  })
  .strict()
  .superRefine((value, ctx) => {
    if (value.taskTimeoutMs > value.roundTimeoutMs)
      ctx.addIssue({
        code: "custom",
        path: ["taskTimeoutMs"],
        message: "must be ≤ coordination.roundTimeoutMs",
      });
  });

export const poolSchema = z
  .object({
    initial: int(0, 100_000).default(50).describe("Agents the pool spawns at start."),
    min: int(0, 100_000).default(0).describe("The pool never retires below this many agents."),
    max: int(1, 100_000).default(200).describe("The pool never grows past this many agents."),
    stepMax: int(1, 10_000).default(50).describe("Agents added in one scaling step."),
    idleTimeoutMs: int(100, 86_400_000)
      .default(30_000)
      .describe("An agent idle this long is retired (above min), in ms."),
    taskTimeoutMs: int(1, 86_400_000)
      .default(30_000)
      .describe("A pool task not answered in this time moves to another agent, in ms."),
  })
  .strict()
  .superRefine((value, ctx) => {
    if (!(value.min <= value.initial && value.initial <= value.max))
      ctx.addIssue({
        code: "custom",
        path: ["initial"],
        message: "must satisfy pool.min ≤ pool.initial ≤ pool.max",
      });
  });

export const spawnSchema = z
  .object({
    leanGroupSize: int(1, 10_000)
      .default(100)
      .describe("Lean agents one supervisor process forks (groups start in parallel)."),
    nodeConcurrency: int(1, 1_000)
      .default(8)
      .describe("Node-runtime agents (cfn agent run) started at once."),
    readyTimeoutMs: int(100, 3_600_000)
      .default(60_000)
      .describe("Longest a spawn waits for every agent to be ready, in ms."),
  })
  .strict();

export type CoordinationConfig = z.infer<typeof coordinationSchema>;
export type PoolConfig = z.infer<typeof poolSchema>;
export type SpawnConfig = z.infer<typeof spawnSchema>;

/** Round limits (src/coordination/protocol.ts RoundLimits) from the settings. */
export function roundLimitsOf(config: CoordinationConfig) {
  return {
    taskTimeoutMs: config.taskTimeoutMs,
    attemptsMax: config.attemptsMax,
    retryOnError: config.retryOnError,
    flushIntervalMs: config.flushIntervalMs,
    flushOutcomesMax: config.flushOutcomesMax,
  };
}
