// `cfn swarm spawn|status|stop|round|plan` (and the internal `cfn swarm coordinator`): a swarm of
// agent processes that outlives the command, found again through the registry in the bus dir.

import { rmSync } from "node:fs";
import cliProgress from "cli-progress";
import type { Command } from "commander";
import { Bus } from "../bus/index.js";
import { roundLimitsOf } from "../config/coordination-schema.js";
import { FileCheckpointStore } from "../coordination/checkpoint.js";
import { Coordinator } from "../coordination/coordinator.js";
import { isProcessAlive } from "../coordination/liveness.js";
import { type RoundProgress, type RoundResult, roundRequestProblem } from "../coordination/master.js";
import { runRegisteredRound } from "../coordination/registered-round.js";
import {
  type AgentRuntime,
  listSwarms,
  readSwarmRecord,
  removeSwarmRecord,
  type SwarmRecord,
  writeSwarmRecord,
} from "../coordination/registry.js";
import { killProcesses } from "../coordination/spawner.js";
import { defaultCheckpointDir, LocalSwarm } from "../coordination/swarm.js";
import { acquireSwarmLock, readSwarmLock, type SwarmLock } from "../coordination/swarm-locks.js";
import { describePlan, type Plan, planTopology, teamsOf } from "../coordination/topology.js";
import { resolveTopology } from "../coordination/topology-source.js";
import { CfnError, isCfnError } from "../errors.js";
import { apiOf } from "./api-flags.js";
import { refuseMissingBus } from "./bus-commands.js";
import { buildContext, readOnlyLogger } from "./context.js";
import { EXIT, printJson, printLine, table } from "./output.js";
import { EXIT_ON_SIGNAL, interruptOnSignals } from "./signals.js";
import {
  awaitSwarmWithdrawn,
  clusterAgentIdsOf,
  isReplyAgentOf,
  joinCluster,
  leaveCluster,
  runClusterRound,
} from "./swarm-cluster.js";

const RUNTIMES: AgentRuntime[] = ["lean", "node", "command", "pooled", "bash"];
/** Runtimes that run a command per task (the others are echo workers and take none). */
const COMMAND_RUNTIMES: AgentRuntime[] = ["command", "pooled"];

/** A progress bar on stderr, or nothing when stderr is not a TTY or output is JSON. */
export function spawnProgress(
  total: number,
  enabled: boolean,
  label = "spawning",
): { update(ready: number): void; stop(): void } {
  if (!enabled || !process.stderr.isTTY) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${label} |{bar}| {value}/{total} agents ready | {duration_formatted}`,
      hideCursor: true,
      clearOnComplete: false,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0);
  return {
    update: (ready) => bar.update(ready),
    stop: () => bar.stop(),
  };
}

export function intOption(value: string | undefined, flag: string, min = 0): number | undefined {
  if (value === undefined) return undefined;
  const number = Number(value);
  if (!Number.isInteger(number) || number < min)
    throw new CfnError("CFN_ERR_CONFIG_INVALID", `${flag} must be an integer ≥ ${min} (got ${value})`);
  return number;
}

export function runtimeOption(value: string | undefined, hasCommand: boolean): AgentRuntime {
  const runtime = (value ?? (hasCommand ? "command" : "lean")) as AgentRuntime;
  if (!RUNTIMES.includes(runtime))
    throw new CfnError(
      "CFN_ERR_CONFIG_INVALID",
      `--runtime must be one of ${RUNTIMES.join(", ")} (got ${value})`,
    );
  if (hasCommand && !COMMAND_RUNTIMES.includes(runtime))
    throw new CfnError(
      "CFN_ERR_CONFIG_INVALID",
      `--runtime ${runtime} runs no command (its agents echo their input): drop the command after --, or use --runtime ${COMMAND_RUNTIMES.join(" or ")}`,
    );
  if (runtime === "command" && !hasCommand)
    throw new CfnError(
      "CFN_ERR_CONFIG_INVALID",
      "--runtime command needs the command after -- (e.g. -- ./my-agent.sh)",
    );
  return runtime;
}

interface TopologyFlags {
  topology?: string;
  topologyFile?: string;
  count?: string;
  teams?: string;
}

export function planFromFlags(
  flags: TopologyFlags,
  swarm: string,
  defaults: { agents?: number; teams?: number } = {},
): Plan {
  const spec = resolveTopology({
    file: flags.topologyFile,
    spec: flags.topology,
    agents: intOption(flags.count, "--count", 1) ?? defaults.agents,
    teams: intOption(flags.teams, "--teams", 1) ?? defaults.teams,
  });
  return planTopology(spec, { swarm });
}

/** Human lines of a round result. */
export function roundLines(result: RoundResult): string[] {
  const lines = [
    `round ${result.roundId}: ${result.succeeded}/${result.tasks} tasks succeeded, delivery ${(result.deliveryRate * 100).toFixed(1)}%` +
      `, coordination ${result.coordinationMs.toFixed(1)} ms${result.resumed ? " (resumed)" : ""}`,
    "",
    table([
      ["team", "coordinator", "workers", "tasks", "ok", "failed", "retried", "time ms"],
      ...result.teams.map((team) => [
        team.team,
        team.coordinator,
        String(team.workers),
        String(team.tasks),
        String(team.succeeded),
        String(team.failed),
        String(team.retried),
        team.timeMs.toFixed(0),
      ]),
    ]),
  ];
  if (result.failures.length > 0) {
    lines.push("", `failed tasks (${result.failures.length}):`);
    for (const failure of result.failures.slice(0, 20))
      lines.push(`  ${failure.taskId} (team ${failure.team}): ${failure.reason}`);
    if (result.failures.length > 20)
      lines.push(`  … and ${result.failures.length - 20} more (--json lists all)`);
  }
  return lines;
}

/** The JSON form of a round result (outcomes are left out unless asked for). */
export function roundJson(result: RoundResult, withOutcomes = false): Record<string, unknown> {
  const { outcomes, ...rest } = result;
  return withOutcomes ? { ...rest, outcomes } : rest;
}

export function registerSwarmCommands(program: Command): void {
  const swarm = program
    .command("swarm")
    .description("spawn, inspect, drive and stop swarms of agent processes");

  swarm
    .command("spawn")
    .description("spawn a swarm of agent processes in parallel (they keep running; see swarm status / stop)")
    .option("--count <n>", "workers to spawn")
    .option("--teams <n>", "teams (hybrid); 1 is flat; default: adaptive")
    .option("--topology <spec>", "flat:N, hybrid:TxN, depth3:GxTxN, adaptive:N (also CFN_TOPOLOGY)")
    .option("--topology-file <file>", "topology YAML file")
    .option("--name <swarm>", "swarm name (prefix of every agent id)", DEFAULT_SWARM)
    .option(
      "--runtime <r>",
      "lean (C, default), node, bash (echo workers), command (with -- cmd; the default with one), pooled (-- cmd optional)",
    )
    .option("--work-ms <ms>", "lean runtime: simulated work per task")
    .option("--task-timeout-ms <ms>", "command runtime: kill a task's command after this long")
    .option("--cluster", "register the agents with the local node: the cluster's master runs the rounds")
    .option("--api <url>", "with --cluster: node API URL (default CFN_NODE_API or http://127.0.0.1:7201)")
    .option(
      "--token <secret>",
      "with --cluster: API or cluster token (default CFN_API_TOKEN, CFN_CLUSTER_TOKEN)",
    )
    .option("--json", "print a JSON summary")
    .argument("[command...]", "command each agent wraps (after --)")
    .action(
      async (
        command: string[],
        options: TopologyFlags & {
          name: string;
          runtime?: string;
          workMs?: string;
          taskTimeoutMs?: string;
          cluster?: boolean;
          api?: string;
          token?: string;
          json?: boolean;
        },
      ) => {
        const { config, logger, metrics } = buildContext(program);
        const bus = new Bus({ config: config.bus, logger, metrics });
        const plan = planFromFlags(options, options.name);
        const runtime = runtimeOption(options.runtime, command.length > 0);
        // The name is reserved (O_EXCL) until the record is written: a second spawn of the same
        // name meanwhile is refused instead of starting agents of its own under the same ids.
        const reservation = acquireSwarmLock(bus.dir, options.name, "spawn", "spawn");
        let local: LocalSwarm;
        let readyMs: number;
        try {
          if (readSwarmRecord(bus.dir, options.name)) {
            throw new CfnError(
              "CFN_ERR_CONFIG_INVALID",
              `swarm ${options.name} already runs on bus ${bus.dir}; stop it first or choose --name`,
            );
          }
          const progress = spawnProgress(plan.workers.length, !options.json);
          const startedAt = performance.now();
          const agentArgs = options.taskTimeoutMs ? ["--task-timeout-ms", options.taskTimeoutMs] : [];
          // Ctrl-C or SIGTERM while spawning: stop the agents started so far (they are detached,
          // in sessions of their own, and no record names them yet), then exit 130 / 143.
          const interrupt = interruptOnSignals();
          try {
            local = await LocalSwarm.start({
              bus,
              plan,
              runtime,
              command,
              lean: { workMs: intOption(options.workMs, "--work-ms") },
              detached: true,
              coordinators: "none",
              groupSize: config.spawn.leanGroupSize,
              spawnConcurrency: config.spawn.nodeConcurrency,
              spawnTimeoutMs: config.spawn.readyTimeoutMs,
              agentArgs,
              onSpawnProgress: (ready) => progress.update(ready),
              signal: interrupt.signal,
              logger,
              metrics,
            });
          } catch (error) {
            const signal = interrupt.received;
            if (signal === undefined) throw error;
            progress.stop();
            process.stderr.write(
              `cfn: swarm spawn interrupted (${signal}): the agents started so far were stopped\n`,
            );
            process.exitCode = EXIT_ON_SIGNAL[signal];
            return;
          } finally {
            interrupt.off();
            progress.stop();
          }
          readyMs = performance.now() - startedAt;
        } finally {
          reservation.release();
        }
        // The coordinators and the master of this command are not needed: rounds start their own.
        local.master.close();
        let clusterNode: string | undefined;
        if (options.cluster) {
          const target = apiOf(options);
          const record = readSwarmRecord(bus.dir, options.name) as SwarmRecord;
          try {
            clusterNode = await joinCluster(target, bus, record);
          } catch (error) {
            // joinCluster withdrew what it registered: the agents go again, the command fails.
            await stopSwarm(bus, record, 5_000);
            throw error;
          }
          writeSwarmRecord(bus.dir, { ...record, cluster: { api: target.api, nodeId: clusterNode } });
        }
        const summary = {
          swarm: options.name,
          topology: describePlan(plan),
          runtime: local.spawned.runtime,
          agents: plan.workers.length,
          processes: local.spawned.processes.length,
          readyMs: Math.round(readyMs),
          busDir: bus.dir,
          ...(clusterNode ? { clusterNode } : {}),
        };
        if (options.json) printJson(summary);
        else {
          printLine(
            `swarm ${summary.swarm}: ${summary.agents} agents ready in ${summary.readyMs} ms (${summary.topology}, runtime ${summary.runtime})`,
          );
          if (clusterNode)
            printLine(
              `registered on node ${clusterNode}: the cluster's master places the team coordinators and runs rounds (cfn swarm round --name ${summary.swarm})`,
            );
          printLine(
            `bus ${bus.dir} — see: cfn swarm status --name ${summary.swarm}; stop: cfn swarm stop --name ${summary.swarm}`,
          );
        }
        process.exitCode = EXIT.ok;
      },
    );

  swarm
    .command("status")
    .description("agents of each swarm on the bus: alive, per team, inbox depths, last heartbeat")
    .option("--name <swarm>", "one swarm (default: all)")
    .option("--json", "print JSON")
    .action((options: { name?: string; json?: boolean }) => {
      const { config, logger, metrics } = buildContext(program);
      refuseMissingBus(config);
      const bus = new Bus({ config: config.bus, logger: readOnlyLogger(logger), metrics });
      const names = options.name ? [options.name] : listSwarms(bus.dir);
      const statuses = names.map((name) => {
        const record = readSwarmRecord(bus.dir, name);
        if (!record) throw unknownSwarm(bus.dir, name, false);
        return swarmStatus(bus, record);
      });
      if (options.json) {
        printJson({ busDir: bus.dir, swarms: statuses });
        return;
      }
      if (statuses.length === 0) printLine(`no swarms on bus ${bus.dir}`);
      for (const status of statuses) {
        printLine(
          `swarm ${status.swarm}: ${status.alive}/${status.agents} agents alive — ${status.description}, runtime ${status.runtime}, up ${Math.round(status.uptimeMs / 1000)} s` +
            (status.cluster
              ? `, on the cluster through node ${status.cluster.nodeId} (${status.cluster.api})`
              : ""),
        );
        printLine(
          table([
            ["team", "agents", "alive", "queued", "claimed", "dead letters", "oldest heartbeat s"],
            ...status.teams.map((team) => [
              team.team,
              String(team.agents),
              String(team.alive),
              String(team.queued),
              String(team.claimed),
              String(team.deadLetters),
              team.oldestHeartbeatAgeMs === null ? "-" : (team.oldestHeartbeatAgeMs / 1000).toFixed(1),
            ]),
          ]),
        );
      }
    });

  swarm
    .command("stop")
    .description(
      "stop a swarm gracefully: SIGTERM (agents drain), SIGKILL after --timeout-ms, remove its mailboxes and registry entry",
    )
    .option("--name <swarm>", `swarm to stop (default "${DEFAULT_SWARM}")`)
    .option("--all", "stop every swarm on the bus")
    .option("--timeout-ms <ms>", "grace period before SIGKILL", "10000")
    .option("--force", "stop it even while a round runs on it (the round's process is ended first)")
    .option(
      "--token <secret>",
      "cluster swarms: API or cluster token (default CFN_API_TOKEN, CFN_CLUSTER_TOKEN)",
    )
    .option("--json", "print JSON")
    .action(
      async (options: {
        name?: string;
        all?: boolean;
        timeoutMs: string;
        force?: boolean;
        token?: string;
        json?: boolean;
      }) => {
        const { config, logger, metrics } = buildContext(program);
        const bus = new Bus({ config: config.bus, logger, metrics });
        const names = options.all ? listSwarms(bus.dir) : [options.name ?? DEFAULT_SWARM];
        const timeoutMs = intOption(options.timeoutMs, "--timeout-ms") ?? 10_000;
        const results = [];
        for (const name of names) {
          const record = readSwarmRecord(bus.dir, name);
          if (!record) throw unknownSwarm(bus.dir, name, options.name === undefined && !options.all);
          // A local round re-creates the mailboxes of the swarm it works on: stop holds the round
          // lock while it stops the swarm (the cluster's master runs a cluster swarm's rounds).
          const lock = record.cluster
            ? undefined
            : await takeRoundLockForStop(bus.dir, record.swarm, options.force === true, timeoutMs);
          try {
            results.push(await stopSwarm(bus, record, timeoutMs, options.token));
          } finally {
            lock?.release();
          }
        }
        if (options.json) printJson({ stopped: results });
        else
          for (const result of results)
            printLine(
              `swarm ${result.swarm}: ${result.stopped} processes stopped, ${result.killed} killed, ${result.mailboxesRemoved} mailboxes removed${result.mailboxesKept > 0 ? `, ${result.mailboxesKept} kept (messages queued)` : ""}` +
                (result.clusterLeft === undefined
                  ? ""
                  : result.clusterLeft
                    ? ", withdrawn from the cluster"
                    : ", NOT withdrawn from the cluster (node API unreachable: remove its agents with the API)"),
            );
      },
    );

  swarm
    .command("round")
    .description(
      "run one coordination round on a spawned swarm (coordinators in this process); --resume continues an interrupted one",
    )
    .option("--name <swarm>", "swarm", DEFAULT_SWARM)
    .option("--input <json>", "task input every worker gets (broadcast)", "null")
    .option("--items <json>", "JSON array: one task per item, spread over idle workers")
    .option("--timeout-ms <ms>", "round deadline (default coordination.roundTimeoutMs)")
    .option(
      "--task-timeout-ms <ms>",
      "a task not answered in this time moves to another worker (default coordination.taskTimeoutMs)",
    )
    .option("--attempts <n>", "attempts per task (default coordination.attemptsMax)")
    .option("--priority <p>", "high, normal or low", "normal")
    .option("--resume [roundId]", "resume an interrupted round (default: the unfinished one)")
    .option(
      "--token <secret>",
      "cluster swarms: API or cluster token (default CFN_API_TOKEN, CFN_CLUSTER_TOKEN)",
    )
    .option("--json", "print a JSON result")
    .option("--outcomes", "with --json: include every task's outcome")
    .action(
      async (options: {
        name: string;
        input: string;
        items?: string;
        timeoutMs?: string;
        taskTimeoutMs?: string;
        attempts?: string;
        priority: string;
        resume?: string | boolean;
        token?: string;
        json?: boolean;
        outcomes?: boolean;
      }) => {
        const { config, logger, metrics } = buildContext(program);
        const bus = new Bus({ config: config.bus, logger, metrics });
        const record = readSwarmRecord(bus.dir, options.name);
        if (!record) throw unknownSwarm(bus.dir, options.name, false);
        const work = roundWorkFlags(options);
        if (record.cluster) {
          // The cluster's master runs it (and resumes it by itself after a failover).
          if (options.resume !== undefined)
            throw new CfnError(
              "CFN_ERR_CONFIG_INVALID",
              "--resume is for local swarms: the cluster's master resumes interrupted rounds itself",
            );
          const limits = limitFlags(options);
          const timeoutMs =
            options.timeoutMs === undefined
              ? config.coordination.roundTimeoutMs
              : (intOption(options.timeoutMs, "--timeout-ms", 1) as number);
          // Ctrl-C or SIGTERM while waiting: the reply agent is deregistered and its mailbox removed.
          const interrupt = interruptOnSignals();
          let result: RoundResult;
          try {
            result = await runClusterRound(
              { api: record.cluster.api, token: apiOf({ token: options.token }).token },
              bus,
              record.swarm,
              { ...work, timeoutMs, limits },
              (roundId) => {
                if (!options.json) process.stderr.write(`round ${roundId} sent to the cluster's master\n`);
              },
              interrupt.signal,
            );
          } catch (error) {
            const signal = interrupt.received;
            if (signal === undefined) throw error;
            process.stderr.write(
              `cfn: swarm round interrupted (${signal}): its reply mailbox was withdrawn; the cluster's master still finishes the round\n`,
            );
            // The abandoned wait would hold the process until the round's deadline.
            process.exit(EXIT_ON_SIGNAL[signal]);
          } finally {
            interrupt.off();
          }
          if (options.json) printJson(roundJson(result, options.outcomes));
          else for (const line of roundLines(result)) printLine(line);
          process.exitCode = result.failed > 0 ? EXIT.failure : EXIT.ok;
          return;
        }
        const limits = { ...roundLimitsOf(config.coordination), ...limitFlags(options) };
        const timeoutMs =
          options.timeoutMs === undefined
            ? config.coordination.roundTimeoutMs
            : intOption(options.timeoutMs, "--timeout-ms", 1);
        // One round at a time per swarm: two would read the same coordinator mailboxes and resume
        // each other's checkpoints. Taken before any coordinator opens its mailbox.
        const lock = acquireSwarmLock(bus.dir, record.swarm, "round", "round");
        try {
          // A stop that held the lock until now has removed the swarm: nothing to run on.
          if (!readSwarmRecord(bus.dir, record.swarm))
            throw new CfnError("CFN_ERR_UNKNOWN_AGENT", `swarm ${record.swarm} was stopped`, {
              swarm: record.swarm,
            });
          const result = await runRegisteredRound({
            bus,
            record,
            request: { ...work, timeoutMs, limits },
            resume: typeof options.resume === "string" ? options.resume : options.resume ? true : undefined,
            hooks: {
              onProgress: (progress: RoundProgress) => {
                if (!options.json && process.stderr.isTTY)
                  process.stderr.write(
                    `\r${progress.settled}/${progress.tasks} results (${progress.failed} failed) after ${progress.elapsedMs.toFixed(0)} ms`,
                  );
              },
              onIssued: (roundId) => {
                if (!options.json)
                  process.stderr.write(`round ${roundId} ${issuedTo(work.items, record.agents.length)}\n`);
              },
            },
            logger,
            metrics,
          }).finally(() => {
            if (!options.json && process.stderr.isTTY) process.stderr.write("\n");
          });
          if (options.json) printJson(roundJson(result, options.outcomes));
          else for (const line of roundLines(result)) printLine(line);
          process.exitCode = result.failed > 0 ? EXIT.failure : EXIT.ok;
        } finally {
          lock.release();
        }
      },
    );

  swarm
    .command("plan")
    .description("validate a topology and print its plan (coordinators and teams)")
    .option("--count <n>", "workers")
    .option("--teams <n>", "teams")
    .option("--topology <spec>", "flat:N, hybrid:TxN, depth3:GxTxN, adaptive:N (also CFN_TOPOLOGY)")
    .option("--topology-file <file>", "topology YAML file")
    .option("--name <swarm>", "swarm name", DEFAULT_SWARM)
    .option("--json", "print the full plan as JSON")
    .action((options: TopologyFlags & { name: string; json?: boolean }) => {
      const plan = planFromFlags(options, options.name);
      if (options.json) {
        printJson(plan);
        return;
      }
      printLine(describePlan(plan));
      printLine(
        table([
          ["team", "coordinator", "parent", "workers"],
          ...teamsOf(plan).map((team) => [team.name, team.id, team.parent, String(team.children.length)]),
        ]),
      );
    });

  swarm
    .command("coordinator", { hidden: true })
    .description("run one coordinator in this process (started and supervised by a swarm)")
    .requiredOption("--id <agent>", "coordinator id")
    .requiredOption("--checkpoint-dir <dir>", "checkpoint directory of the swarm")
    .option("--ready-line", 'print "ready" on stdout once the coordinator serves its mailbox')
    .action(async (options: { id: string; checkpointDir: string; readyLine?: boolean }) => {
      const { config, logger, metrics } = buildContext(program);
      const bus = new Bus({ config: config.bus, logger, metrics });
      const coordinator = new Coordinator({
        bus,
        id: options.id,
        checkpoints: new FileCheckpointStore(options.checkpointDir),
        logger,
        metrics,
      });
      coordinator.start();
      if (options.readyLine) process.stdout.write("ready\n");
      await new Promise<void>((resolve) => {
        process.once("SIGTERM", resolve);
        process.once("SIGINT", resolve);
      });
      await coordinator.stop();
    });
}

/**
 * The round lock of a swarm about to be stopped. A live round holding it is a refusal
 * (CFN_ERR_SWARM_BUSY), unless `force`: then the round's process gets SIGTERM, SIGKILL after
 * `timeoutMs`, and its lock is taken over (its checkpoints go with the swarm).
 */
async function takeRoundLockForStop(
  busDir: string,
  swarm: string,
  force: boolean,
  timeoutMs: number,
): Promise<SwarmLock> {
  try {
    return acquireSwarmLock(busDir, swarm, "round", "stop");
  } catch (error) {
    const holder = readSwarmLock(busDir, swarm, "round");
    if (!force || !isCfnError(error, "CFN_ERR_SWARM_BUSY") || !holder || holder.purpose !== "round") {
      if (isCfnError(error, "CFN_ERR_SWARM_BUSY") && !force)
        throw new CfnError(
          "CFN_ERR_SWARM_BUSY",
          `${error.message}, or stop it anyway with --force`,
          error.details,
        );
      throw error;
    }
    await killProcesses([{ pid: holder.pid, processStart: holder.processStart }], timeoutMs);
    return acquireSwarmLock(busDir, swarm, "round", "stop");
  }
}

/** The round limits given as flags (the rest come from the configuration or the swarm's policy). */
function limitFlags(options: { taskTimeoutMs?: string; attempts?: string }): {
  taskTimeoutMs?: number;
  attemptsMax?: number;
} {
  return {
    ...(options.taskTimeoutMs === undefined
      ? {}
      : { taskTimeoutMs: intOption(options.taskTimeoutMs, "--task-timeout-ms", 1) }),
    ...(options.attempts === undefined ? {} : { attemptsMax: intOption(options.attempts, "--attempts", 1) }),
  };
}

/** The work of a round from its flags, validated before anything of the round starts. */
/** The swarm name of spawn, round and stop without --name. */
const DEFAULT_SWARM = "swarm";

/** "no swarm x on bus …", naming the default when --name was left out and the swarms there are. */
function unknownSwarm(busDir: string, name: string, defaulted: boolean): CfnError {
  const swarms = listSwarms(busDir);
  const there = swarms.length > 0 ? `swarms there: ${swarms.join(", ")}` : "no swarms there";
  const which = defaulted ? `no swarm named "${name}" (the default; pass --name)` : `no swarm ${name}`;
  return new CfnError("CFN_ERR_UNKNOWN_AGENT", `${which} on bus ${busDir} (${there})`, { swarm: name });
}

/** "issued to 20 agents", or for items only the agents that get one: "issued: 5 items to 5 of 20 agents". */
export function issuedTo(items: unknown[] | undefined, agents: number): string {
  if (items === undefined) return `issued to ${agents} agents`;
  return `issued: ${items.length} items to ${Math.min(items.length, agents)} of ${agents} agents`;
}

function roundWorkFlags(options: { input: string; items?: string; priority: string }): {
  input: unknown;
  items?: unknown[];
  priority: "high" | "normal" | "low";
} {
  const input = parseJson(options.input, "--input");
  const items = options.items === undefined ? undefined : parseJson(options.items, "--items");
  const problem = roundRequestProblem({ items, priority: options.priority });
  if (problem) throw new CfnError("CFN_ERR_CONFIG_INVALID", `--${problem}`);
  return {
    input,
    ...(items === undefined ? {} : { items: items as unknown[] }),
    priority: options.priority as "high" | "normal" | "low",
  };
}

function parseJson(text: string, flag: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new CfnError("CFN_ERR_CONFIG_INVALID", `${flag} must be JSON (got ${text.slice(0, 80)})`);
  }
}

export interface TeamStatus {
  team: string;
  agents: number;
  alive: number;
  queued: number;
  claimed: number;
  deadLetters: number;
  oldestHeartbeatAgeMs: number | null;
}

export function swarmStatus(bus: Bus, record: SwarmRecord) {
  const teams = new Map<string, TeamStatus>();
  let alive = 0;
  const nowMs = Date.now();
  // Keyed by pid and start time: the agents of one pooled host share both.
  const aliveByProcess = new Map<string, boolean>();
  for (const agent of record.agents) {
    let team = teams.get(agent.team);
    if (!team) {
      team = {
        team: agent.team,
        agents: 0,
        alive: 0,
        queued: 0,
        claimed: 0,
        deadLetters: 0,
        oldestHeartbeatAgeMs: null,
      };
      teams.set(agent.team, team);
    }
    team.agents++;
    const processKey = `${agent.pid}:${agent.processStart ?? ""}`;
    let isAlive = aliveByProcess.get(processKey);
    if (isAlive === undefined) {
      isAlive = isProcessAlive(agent.pid, agent.processStart);
      aliveByProcess.set(processKey, isAlive);
    }
    if (isAlive) {
      team.alive++;
      alive++;
    }
    const status = bus.agentStatus(agent.id);
    if (status) {
      team.queued += status.inboxDepth;
      team.claimed += status.claimed;
      team.deadLetters += status.deadLetters;
      if (status.lastSeenMs !== null)
        team.oldestHeartbeatAgeMs = Math.max(team.oldestHeartbeatAgeMs ?? 0, nowMs - status.lastSeenMs);
    }
  }
  return {
    swarm: record.swarm,
    description: record.description,
    runtime: record.runtime,
    agents: record.agents.length,
    alive,
    processes: record.processes.length,
    processesAlive: record.processes.filter((process) => isProcessAlive(process.pid, process.processStart))
      .length,
    uptimeMs: nowMs - record.createdAtMs,
    teams: [...teams.values()],
    ...(record.cluster ? { cluster: record.cluster } : {}),
  };
}

/** Graceful stop of a registered swarm, then removal of its empty mailboxes, checkpoints and registry entry. */
export async function stopSwarm(bus: Bus, record: SwarmRecord, timeoutMs: number, token?: string) {
  // A cluster swarm is withdrawn first, so the master stops handing its agents work.
  let clusterLeft: boolean | undefined;
  const target = record.cluster ? { api: record.cluster.api, token: apiOf({ token }).token } : undefined;
  if (target) {
    clusterLeft = await leaveCluster(target, record).then(
      () => true,
      () => false,
    );
  }
  // Pids whose process is not the one spawned any more (start time differs) are not signalled.
  const { stopped, killed } = await killProcesses(record.processes, timeoutMs, record.agents);
  let mailboxesRemoved = 0;
  let mailboxesKept = 0;
  const plan = planTopology(record.topology, { swarm: record.swarm });
  // A cluster swarm's master, coordinators and rounds mailbox are served by the nodes, which drop
  // them with the policy: their (empty) mailboxes on this bus go once the leader has withdrawn them.
  const clusterIds =
    target && clusterLeft && (await awaitSwarmWithdrawn(target, record, timeoutMs))
      ? clusterAgentIdsOf(record)
      : [];
  const ids = [
    ...record.agents.map((agent) => agent.id),
    ...(record.cluster
      ? clusterIds
      : [...plan.coordinators.map((coordinator) => coordinator.id), plan.master]),
    `${record.swarm}.spawner`,
  ];
  for (const id of ids) {
    const status = bus.agentStatus(id);
    if (!status) continue;
    if (status.inboxDepth + status.claimed > 0) {
      mailboxesKept++;
      continue;
    }
    try {
      rmSync(bus.layout.agent(id).dir, { recursive: true, force: true });
      mailboxesRemoved++;
    } catch {
      mailboxesKept++; // something wrote into it meanwhile: left as it is
    }
  }
  // Reply mailboxes of cluster rounds left behind (an interrupted round's, holding its late
  // result): their requesters are gone and the swarm with them, so they go whatever they hold.
  if (record.cluster)
    for (const id of bus.listAgents().filter((agent) => isReplyAgentOf(record.swarm, agent))) {
      rmSync(bus.layout.agent(id).dir, { recursive: true, force: true });
      mailboxesRemoved++;
    }
  rmSync(defaultCheckpointDir(bus, record.swarm), { recursive: true, force: true });
  removeSwarmRecord(bus.dir, record.swarm);
  return {
    swarm: record.swarm,
    stopped,
    killed,
    mailboxesRemoved,
    mailboxesKept,
    ...(clusterLeft === undefined ? {} : { clusterLeft }),
  };
}
