// `npm run bench -- coordination [--runs 20] [--only flat-100,spawn-700] [--node]`: the swarm
// coordination figures of GitHub issue 5, on real agent processes and real files on tmpfs.
//
// Coordination time = from the master issuing the round to the master holding every result, with
// the agents already running (each size is spawned once, warmed up with 2 rounds, then measured
// over --runs rounds; figures are medians with p99). Runtimes:
//   lean    the C lean agent: one OS process per agent (examples/agents/lean-agent.c)
//   pooled  many logical agents per Node process, each its own mailbox
//   node    (--node) `cfn agent run --echo`: one Node process per agent, reported in context only
// Coordinators run inside the master's process (docs/COORDINATION.md, "Placement").

import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { Bus } from "../../src/bus/index.js";
import type { AgentRuntime } from "../../src/coordination/registry.js";
import { killProcesses, spawnAgents } from "../../src/coordination/spawner.js";
import { LocalSwarm } from "../../src/coordination/swarm.js";
import { parseTopologyString, planTopology } from "../../src/coordination/topology.js";
import { buildForkAnchor, forkFloorMs } from "../fork-anchor.js";
import { atMost, exactly, type Figure, round, type SuiteResult, stats } from "../lib.js";

interface Item {
  name: string;
  spec: string;
  runtime: AgentRuntime;
  targetMs: number;
  /** Agents per pooled host process. */
  groupSize?: number;
}

const ITEMS: Item[] = [
  { name: "flat-100", spec: "flat:100", runtime: "lean", targetMs: 250 },
  { name: "hybrid-708", spec: "hybrid:7x100", runtime: "lean", targetMs: 2000 },
  { name: "depth3-1037", spec: "depth3:7x7x20", runtime: "lean", targetMs: 3000 },
  { name: "pooled-708", spec: "hybrid:7x100", runtime: "pooled", targetMs: 200, groupSize: 354 },
  { name: "pooled-10000", spec: "depth3:10x10x100", runtime: "pooled", targetMs: 3000, groupSize: 5000 },
];

const SPAWN_AGENTS = 700;
const SPAWN_TARGET_MS = 1000;

function option(args: string[], name: string): string | undefined {
  const index = args.indexOf(name);
  return index >= 0 ? args[index + 1] : undefined;
}

function freshBus(): { bus: Bus; root: string } {
  const root = `/dev/shm/cfn-bench-coordination-${randomBytes(4).toString("hex")}`;
  return {
    bus: new Bus({ config: { root, name: "bench", inboxDepthMax: 20_000, batchMessagesMax: 1000 } }),
    root,
  };
}

async function measureRounds(
  item: Item,
  runs: number,
): Promise<{ times: number[]; deliveries: number[]; agents: number; coordinators: number; spawnMs: number }> {
  const { bus, root } = freshBus();
  const plan = planTopology(parseTopologyString(item.spec), { swarm: "b" });
  const startedAt = performance.now();
  const swarm = await LocalSwarm.start({
    bus,
    plan,
    runtime: item.runtime,
    groupSize: item.groupSize,
    registry: false,
    spawnTimeoutMs: 180_000,
  });
  const spawnMs = performance.now() - startedAt;
  const times: number[] = [];
  const deliveries: number[] = [];
  try {
    for (let run = -2; run < runs; run++) {
      // Generous task timeouts: on a loaded machine a slow round must show up as time, not as
      // spurious retries; delivery is judged separately.
      const result = await swarm.runRound({
        input: { run },
        timeoutMs: 180_000,
        limits: { taskTimeoutMs: 120_000 },
      });
      if (run < 0) continue; // warm-up
      times.push(result.coordinationMs);
      deliveries.push(result.deliveryRate);
      if (result.failures.length > 0)
        process.stderr.write(
          `${item.name}: ${result.failures.length} failed, e.g. ${result.failures[0].reason}\n`,
        );
    }
  } finally {
    await swarm.stop({ timeoutMs: 5000 });
    rmSync(root, { recursive: true, force: true });
  }
  return { times, deliveries, agents: plan.workers.length, coordinators: plan.coordinators.length, spawnMs };
}

async function measureSpawn(runtime: AgentRuntime, agents: number, runs: number): Promise<number[]> {
  const times: number[] = [];
  for (let run = 0; run < runs; run++) {
    const { bus, root } = freshBus();
    try {
      const result = await spawnAgents({
        bus,
        agents: Array.from({ length: agents }, (_, index) => ({
          id: `s.team${index % 7}.w${index}`,
          team: `team${index % 7}`,
        })),
        runtime,
        readyTo: "s.spawner",
        timeoutMs: 300_000,
      });
      times.push(result.readyMs);
      await killProcesses(
        result.processes,
        5000,
        result.agents.map((agent) => agent.pid),
      );
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }
  return times;
}

/**
 * The same process tree with children that only report ready (bench/fork-anchor.c): what fork
 * alone costs here, as context for the spawn figure.
 */
async function forkAnchor(agents: number, runs: number): Promise<Record<string, unknown>> {
  const built = buildForkAnchor();
  if (!built.path) return { skipped: built.error };
  // The lean spawner's split: supervisors of at most 100 agents, at least two per core.
  const groupSize = Math.max(1, Math.min(100, Math.ceil(agents / (2 * cpus().length))));
  const parts = Math.ceil(agents / groupSize);
  const times: number[] = [];
  for (let run = 0; run < runs; run++) times.push(await forkFloorMs(built.path, agents, parts));
  const summary = stats(times);
  process.stderr.write(
    `coordination: fork floor (anchor): p50 ${round(summary.p50)} ms, p99 ${round(summary.p99)} ms\n`,
  );
  return {
    what: "fork-only tree, children just report ready (bench/fork-anchor.c)",
    supervisors: parts,
    p50Ms: round(summary.p50),
    p99Ms: round(summary.p99),
  };
}

function timeFigure(name: string, times: number[], target: number, extra: object): Figure {
  const summary = stats(times);
  return atMost(name, summary.p50, "ms", target, {
    p99: round(summary.p99),
    min: round(summary.min),
    max: round(summary.max),
    runs: summary.count,
    ...extra,
  });
}

export async function run(args: string[]): Promise<SuiteResult> {
  const runs = Number(option(args, "--runs") ?? 20);
  const only = option(args, "--only")?.split(",");
  const wanted = (name: string) => !only || only.includes(name);
  const figures: Figure[] = [];
  const context: Record<string, unknown> = {
    cpus: cpus().length,
    loadavgAtStart: loadavg().map((value) => round(value)),
    runs,
    coordinators: "in the master's process",
  };
  for (const item of ITEMS) {
    if (!wanted(item.name)) continue;
    process.stderr.write(`coordination: ${item.name} (${item.spec}, ${item.runtime}) …\n`);
    const measured = await measureRounds(item, runs);
    const extra = {
      agents: measured.agents,
      coordinators: measured.coordinators,
      runtime: item.runtime,
      topology: item.spec,
      spawnMs: round(measured.spawnMs),
    };
    figures.push(
      timeFigure(`${item.name} coordination time (${item.runtime})`, measured.times, item.targetMs, extra),
    );
    figures.push(
      exactly(
        `${item.name} delivery rate (${item.runtime}, worst run)`,
        Math.min(...measured.deliveries),
        "ratio",
        1,
        { runs: measured.deliveries.length },
      ),
    );
  }
  if (wanted("spawn-700")) {
    process.stderr.write(`coordination: spawning ${SPAWN_AGENTS} lean agents …\n`);
    const spawnRuns = Math.max(3, Math.min(runs, 10));
    const times = await measureSpawn("lean", SPAWN_AGENTS, spawnRuns);
    figures.push(
      timeFigure(`spawn ${SPAWN_AGENTS} process agents until all ready (lean)`, times, SPAWN_TARGET_MS, {
        agents: SPAWN_AGENTS,
        runtime: "lean",
        anchor: await forkAnchor(SPAWN_AGENTS, spawnRuns),
      }),
    );
  }
  if (args.includes("--node")) {
    // One Node process per agent: honest figures for the heavier runtime, reported as context.
    process.stderr.write("coordination: node runtime (100 agents) …\n");
    const spawnTimes = await measureSpawn("node", 100, 1);
    const measured = await measureRounds(
      { name: "flat-100-node", spec: "flat:100", runtime: "node", targetMs: 250 },
      Math.min(runs, 10),
    );
    const summary = stats(measured.times);
    context.nodeRuntime = {
      spawn100ReadyMs: round(spawnTimes[0]),
      flat100CoordinationMs: { p50: round(summary.p50), p99: round(summary.p99) },
      flat100DeliveryWorst: Math.min(...measured.deliveries),
    };
  }
  context.loadavgAtEnd = loadavg().map((value) => round(value));
  return { suite: "coordination", figures, context };
}
