// `cfn demo`: the main job — spawn a hybrid swarm of real agent processes, run one coordination
// round, print what a person wants to know, clean up, exit 0 (1 when a task failed).

import { appendFileSync } from "node:fs";
import type { Command } from "commander";
import { roundLimitsOf } from "../config/coordination-schema.js";
import { type DemoSummary, runDemo } from "../coordination/demo.js";
import type { CoordinatorPlacement } from "../coordination/swarm.js";
import { resolveTopology } from "../coordination/topology-source.js";
import { CfnError } from "../errors.js";
import { createLogger } from "../obs/logger.js";
import { Metrics } from "../obs/metrics.js";
import { startTracing } from "../obs/tracing.js";
import { buildContext } from "./context.js";
import { EXIT, printJson, printLine, table } from "./output.js";
import { intOption, runtimeOption, spawnProgress } from "./swarm-commands.js";

interface DemoFlags {
  agents?: string;
  teams?: string;
  topology?: string;
  topologyFile?: string;
  runtime?: string;
  coordinators: string;
  roundTimeoutMs?: string;
  keep?: boolean;
  cluster?: boolean;
  json?: boolean;
}

export function registerDemoCommand(program: Command): void {
  program
    .command("demo")
    .description("spawn a swarm of agent processes, run one coordination round, print the summary, clean up")
    .option("--agents <n>", "agents to spawn (demo.agents)")
    .option("--teams <n>", "teams of the hybrid topology; 1 is flat (demo.teams)")
    .option("--topology <spec>", "flat:N, hybrid:TxN, depth3:GxTxN, adaptive:N (also CFN_TOPOLOGY)")
    .option("--topology-file <file>", "topology YAML file")
    .option(
      "--runtime <r>",
      "agent runtime: lean (C, default; node when no compiler), node, bash (echo workers), pooled",
    )
    .option("--coordinators <placement>", "in-process or process", "in-process")
    .option("--round-timeout-ms <ms>", "deadline of the round (demo.roundTimeoutMs)")
    .option("--keep", "keep the demo's bus dir and temp dir (metrics, the node's log) for inspection")
    .option("--no-cluster", "skip the embedded single-node cluster (bus and swarm only)")
    .option("--json", "print a JSON summary")
    .action(async (flags: DemoFlags) => {
      const { config, logger: configuredLogger } = buildContext(program);
      // The summary is the demo's output: routine info lines (node started, leader elected) would
      // only interleave with it, so the demo logs warnings and errors unless asked for debug.
      const logger = config.log.level === "info" ? createLogger("cfn", { level: "warn" }) : configuredLogger;
      const agents = intOption(flags.agents, "--agents", 1) ?? config.demo.agents;
      const spec = resolveTopology({
        file: flags.topologyFile,
        spec: flags.topology,
        agents,
        // Not asked for: no more teams than agents (`--agents 2` is a demo of 2 teams of 1).
        teams: intOption(flags.teams, "--teams", 1) ?? Math.min(config.demo.teams, agents),
      });
      if (flags.coordinators !== "in-process" && flags.coordinators !== "process") {
        throw new CfnError(
          "CFN_ERR_CONFIG_INVALID",
          `--coordinators must be in-process or process (got ${flags.coordinators})`,
        );
      }
      const runtime = flags.runtime === "command" ? "command" : runtimeOption(flags.runtime, false);
      if (runtime === "command")
        throw new CfnError(
          "CFN_ERR_CONFIG_INVALID",
          "the demo runs lean, node, bash or pooled agents; use cfn swarm spawn -- <cmd> for your own command",
        );
      let progress: ReturnType<typeof spawnProgress> | undefined;
      const interactive = !flags.json && process.stderr.isTTY;
      // The demo's master, in-process coordinators and embedded node share this process's tracer.
      // Its cfn_tracing_* counters have a registry of their own: metrics.prom is written before the
      // tracer's shutdown exports the last spans, so they are appended after it (final counts),
      // before the demo removes its temp dir.
      const tracingMetrics = new Metrics();
      const tracing = await startTracing({
        config: config.tracing,
        defaultServiceName: "cfn-demo",
        instanceId: `demo-${process.pid}`,
        nodeId: flags.cluster !== false ? "demo-node" : undefined,
        logger,
        metrics: tracingMetrics,
      });
      const summary = await runDemo({
        topology: spec,
        bus: config.bus,
        runtime,
        coordinators: flags.coordinators as CoordinatorPlacement,
        roundTimeoutMs:
          intOption(flags.roundTimeoutMs, "--round-timeout-ms", 1) ?? config.demo.roundTimeoutMs,
        limits: roundLimitsOf(config.coordination),
        spawn: config.spawn,
        metricsJsonlPath: config.metrics.jsonlPath || undefined,
        keep: flags.keep,
        cluster: flags.cluster !== false,
        // The tracer's shutdown exports the last spans: its counters are final only after it.
        beforeRemovingMetrics: async (prometheusPath) => {
          await tracing.shutdown();
          // No name overlaps between the two registries: the file stays one valid exposition.
          if (tracing.enabled) appendFileSync(prometheusPath, await tracingMetrics.exposition());
        },
        logger,
        onSpawnStart: (total) => {
          progress = spawnProgress(total, !flags.json);
        },
        onSpawnProgress: (ready) => progress?.update(ready),
        onSpawnDone: () => progress?.stop(),
        onRoundProgress: (round) => {
          if (interactive)
            process.stderr.write(
              `\rround: ${round.settled}/${round.tasks} results streamed in (${round.teamsDone.length > 0 ? `team ${round.teamsDone.map((team) => team.team).join(", ")} done` : "…"})      `,
            );
        },
      }).finally(() => tracing.shutdown());
      if (interactive) process.stderr.write("\n");
      if (flags.json) printJson(summary);
      else for (const line of summaryLines(summary)) printLine(line);
      process.exitCode = summary.failed > 0 ? EXIT.failure : EXIT.ok;
    });
}

export function summaryLines(summary: DemoSummary): string[] {
  const percent = (summary.deliveryRate * 100).toFixed(summary.deliveryRate === 1 ? 0 : 2);
  const lines = [
    "",
    `cfn demo — one coordination round on a local swarm`,
    "",
    `  agents             ${summary.agents} agents (runtime ${summary.runtime}${summary.runtime === "pooled" ? `, ${summary.processes} host processes` : ", each its own OS process"}), all ready in ${summary.spawnMs.toFixed(0)} ms`,
    `  topology           ${summary.topology}; coordinators ${summary.coordinatorPlacement}`,
    `  coordination time  ${summary.coordinationMs.toFixed(1)} ms (master issues the task → master holds every result; first result after ${summary.firstResultMs?.toFixed(1) ?? "-"} ms)`,
    `  delivery rate      ${percent}% (${summary.succeeded}/${summary.tasks} results, ${summary.failed} failed, ${summary.retried} retried, ${summary.partials} partial results streamed)`,
    "",
    table([
      ["team", "coordinator", "workers", "ok", "failed", "retried", "done after ms"],
      ...summary.teams.map((team) => [
        team.team,
        team.coordinator,
        String(team.workers),
        String(team.succeeded),
        String(team.failed),
        String(team.retried),
        team.timeMs.toFixed(0),
      ]),
    ])
      .split("\n")
      .map((line) => `  ${line}`)
      .join("\n"),
  ];
  if (summary.failures.length > 0) {
    lines.push("", `  failed tasks:`);
    for (const failure of summary.failures.slice(0, 10))
      lines.push(`    ${failure.taskId} (team ${failure.team}): ${failure.reason}`);
  }
  if (summary.cluster) {
    const c = summary.cluster;
    lines.push(
      "",
      `  cluster            single node ${c.nodeId}: Raft ${c.role}, term ${c.term}, commit index ${c.commitIndex}; log in LevelDB at ${c.dataDir}${summary.cleanedUp ? " (removed; --keep keeps it)" : ""}`,
      `                     routing state: ${c.agentsRegistered} agents registered, ${c.teamsAssigned}/${c.teams} teams assigned to ${c.nodeId} by the leader`,
      `                     API ${c.apiUrl} (/v1/status; served while the demo runs, stopped with it)`,
    );
  }
  lines.push("");
  // The node stopped with the demo: its URLs are history by the time this is read.
  if (summary.cluster) {
    lines.push(
      `  dashboard          ${summary.cluster.apiUrl}/dashboard (the node's live dashboard, served during the run only)`,
      `  metrics            ${summary.cluster.apiUrl}/metrics (Prometheus, served during the run only)`,
    );
  }
  // The first metrics line has the label, unless the URLs above took it.
  const metricsLines: string[] = [];
  const { jsonl, prometheus, dir, kept } = summary.metrics;
  if (kept) metricsLines.push(`${jsonl} (JSONL stream)`, `${prometheus} (Prometheus text)`);
  else if (jsonl.startsWith(`${dir}/`))
    metricsLines.push(`JSONL stream and Prometheus text removed with ${dir} (--keep keeps them)`);
  else metricsLines.push(`${jsonl} (JSONL stream)`, `Prometheus text removed with ${dir} (--keep keeps it)`);
  metricsLines.forEach((text, index) => {
    lines.push(`  ${index === 0 && !summary.cluster ? "metrics          " : "                 "}  ${text}`);
  });
  lines.push(
    `  cleanup            ${summary.stopped.stopped} processes stopped${summary.stopped.killed ? `, ${summary.stopped.killed} killed` : ""}; bus dir ${summary.cleanedUp ? "removed" : `kept at ${summary.busDir}`}`,
    "",
  );
  return lines;
}
