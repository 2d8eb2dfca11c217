// The main job, `cfn demo`: on a fresh bus of its own, spawn a swarm of real agent processes
// (hybrid by default), run one coordination round, summarise it, and clean everything up.
//
// Phases, in order — each is a step a later layer can wrap or precede (the cluster node will
// start a single-node Raft group before "spawn" and hand the master role to its leader):
//   prepare → cluster (a single-node Raft group: the embedded default) → spawn → register the
//   swarm in the replicated routing state (the leader assigns team coordinators) → round →
//   summarise → cleanup (always, also after an error or Ctrl-C)

import { randomBytes } from "node:crypto";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Bus } from "../bus/index.js";
import type { SpawnConfig } from "../config/coordination-schema.js";
import type { BusConfig } from "../config/schema.js";
import { type Logger, silentLogger } from "../obs/logger.js";
import { Metrics } from "../obs/metrics.js";
import {
  type DemoCluster,
  type DemoClusterView,
  describeCluster,
  registerSwarm,
  startDemoCluster,
} from "./demo-cluster.js";
import type { RoundProgress, RoundResult } from "./master.js";
import type { RoundLimits } from "./protocol.js";
import type { AgentRuntime } from "./registry.js";
import { type CoordinatorPlacement, LocalSwarm } from "./swarm.js";
import { describePlan, planTopology, type TopologySpec } from "./topology.js";

export interface DemoOptions {
  topology: TopologySpec;
  bus: Pick<BusConfig, "root"> & Partial<BusConfig>;
  runtime?: AgentRuntime;
  coordinators?: CoordinatorPlacement;
  roundTimeoutMs: number;
  /** Round limits (config coordination.*); defaults of the master otherwise. */
  limits?: Partial<RoundLimits>;
  /** Spawning (config spawn.*). */
  spawn?: SpawnConfig;
  /** JSONL metrics path; default a file in the demo's temp dir (removed with it unless keep). */
  metricsJsonlPath?: string;
  /** Keep the bus dir and the demo's temp dir (metrics, the node's log) for inspection (default: removed). */
  keep?: boolean;
  /**
   * Called with metrics.prom's path once the swarm and the node are stopped, before the temp dir
   * goes: the last chance to add to the file (cfn demo appends its tracer's final counters).
   */
  beforeRemovingMetrics?: (prometheusPath: string) => Promise<void>;
  /** Start the embedded single-node cluster first (default true). */
  cluster?: boolean;
  logger?: Logger;
  onSpawnStart?: (total: number) => void;
  onSpawnProgress?: (ready: number, total: number) => void;
  onSpawnDone?: () => void;
  onRoundProgress?: (progress: RoundProgress) => void;
}

export interface DemoSummary {
  agents: number;
  topology: string;
  kind: string;
  runtime: AgentRuntime;
  coordinators: number;
  coordinatorPlacement: CoordinatorPlacement;
  processes: number;
  spawnMs: number;
  coordinationMs: number;
  firstResultMs: number | null;
  tasks: number;
  succeeded: number;
  failed: number;
  deliveryRate: number;
  partials: number;
  retried: number;
  teams: RoundResult["teams"];
  failures: RoundResult["failures"];
  /**
   * Where the metrics were written; `kept` says whether the files are still there (keep) or went
   * with the demo's temp dir `dir` (a configured metricsJsonlPath outside it stays either way).
   */
  metrics: { jsonl: string; prometheus: string; dir: string; kept: boolean };
  /** The embedded single-node cluster; absent with `cluster: false`. */
  cluster?: DemoClusterView;
  busDir: string;
  cleanedUp: boolean;
  stopped: { stopped: number; killed: number };
}

export async function runDemo(options: DemoOptions): Promise<DemoSummary> {
  const logger = options.logger ?? silentLogger;
  // prepare: a bus of our own, so cleanup never touches anyone else's mailboxes.
  const busName = `demo-${process.pid}-${randomBytes(3).toString("hex")}`;
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const metricsDir = join(tmpdir(), `cfn-demo-${stamp}-${process.pid}`);
  const jsonl = options.metricsJsonlPath || join(metricsDir, "metrics.jsonl");
  const prometheus = join(metricsDir, "metrics.prom");
  mkdirSync(metricsDir, { recursive: true });
  const metrics = new Metrics({ jsonlPath: jsonl });
  const bus = new Bus({ config: { ...options.bus, name: busName }, logger, metrics });
  const plan = planTopology(options.topology, { swarm: "demo" });
  const placement = options.coordinators ?? "in-process";
  let swarm: LocalSwarm | undefined;
  let cluster: DemoCluster | undefined;
  let stopped = { stopped: 0, killed: 0 };
  // One clean-up, however many ask for it (the run's end, an error, a signal): each waits for it.
  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> =>
    (cleaning ??= (async () => {
      if (swarm) stopped = await swarm.stop({ timeoutMs: 3000 });
      if (cluster) await cluster.node.shutdown("demo finished");
      if (!options.keep) {
        rmSync(bus.dir, { recursive: true, force: true });
        if (cluster) rmSync(cluster.dataDir, { recursive: true, force: true });
      }
    })());
  // Every demo made a temp dir of its own: it goes too unless kept, or the OS temp dir fills
  // with one per run.
  const removeMetricsDir = () => {
    if (!options.keep) rmSync(metricsDir, { recursive: true, force: true });
  };
  // A signal during the spawn aborts it — the spawn then stops what it started, which the
  // clean-up cannot see yet (no swarm) — and the clean-up runs once the spawn has let go.
  const interrupt = new AbortController();
  let starting: Promise<unknown> | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    interrupt.abort();
    void Promise.resolve(starting)
      .catch(() => undefined)
      .then(cleanup)
      .then(removeMetricsDir)
      .finally(() => process.exit(signal === "SIGTERM" ? 143 : 130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    // cluster: the embedded default, a Raft group of one with its log in LevelDB
    if (options.cluster !== false) {
      cluster = await startDemoCluster({
        workDir: metricsDir,
        bus: { ...options.bus, name: busName },
        logger,
        metrics,
      });
    }
    // spawn
    options.onSpawnStart?.(plan.workers.length);
    const spawnStartedAt = performance.now();
    starting = LocalSwarm.start({
      bus,
      plan,
      runtime: options.runtime ?? "lean",
      coordinators: placement,
      groupSize: options.spawn?.leanGroupSize,
      spawnConcurrency: options.spawn?.nodeConcurrency,
      spawnTimeoutMs: options.spawn?.readyTimeoutMs,
      onSpawnProgress: options.onSpawnProgress,
      signal: interrupt.signal,
      logger,
      metrics,
    });
    swarm = (await starting) as LocalSwarm;
    const spawnMs = performance.now() - spawnStartedAt;
    options.onSpawnDone?.();
    if (cluster) await registerSwarm(cluster, plan.workers);
    metrics.emit("cfn_coordination_spawn_seconds", spawnMs / 1000, {
      agents: plan.workers.length,
      runtime: swarm.spawned.runtime,
    });
    // round
    const result = await swarm.runRound(
      {
        input: { prompt: "report in", issuedAt: new Date().toISOString() },
        timeoutMs: options.roundTimeoutMs,
        limits: options.limits,
      },
      { onProgress: options.onRoundProgress },
    );
    // summarise
    const clusterView = cluster ? describeCluster(cluster) : undefined;
    writeFileSync(prometheus, await metrics.exposition());
    const summary: DemoSummary = {
      agents: plan.workers.length,
      topology: describePlan(plan),
      kind: plan.kind,
      runtime: swarm.spawned.runtime,
      coordinators: plan.coordinators.length,
      coordinatorPlacement: placement,
      processes: swarm.spawned.processes.length,
      spawnMs,
      coordinationMs: result.coordinationMs,
      firstResultMs: result.firstResultMs,
      tasks: result.tasks,
      succeeded: result.succeeded,
      failed: result.failed,
      deliveryRate: result.deliveryRate,
      partials: result.partials,
      retried: result.retried,
      teams: result.teams,
      failures: result.failures,
      metrics: { jsonl, prometheus, dir: metricsDir, kept: options.keep === true },
      ...(clusterView ? { cluster: clusterView } : {}),
      busDir: bus.dir,
      cleanedUp: false,
      stopped,
    };
    await cleanup();
    summary.cleanedUp = !options.keep;
    summary.stopped = stopped;
    await options.beforeRemovingMetrics?.(prometheus);
    return summary;
  } finally {
    await cleanup();
    removeMetricsDir();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}
