// A swarm on one host: its worker processes, its coordinators (inside this process, or each in a
// supervised process of its own), its master, and its registry entry. This is the shell around
// the pure planner and the actors; `cfn demo`, `cfn swarm round`, the tests and the bench use it.
//
// Coordinator placement:
//   in-process  every coordinator is an actor in this process (fast; a crash of this process is a
//               master restart, and the coordinators resume from their checkpoints with it)
//   process     each coordinator runs `cfn swarm coordinator` in its own process, restarted by this
//               supervisor when it dies (a coordinator crash does not stop its team's round)
//   none        no coordinators (cfn swarm spawn: each `cfn swarm round` starts its own)

import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Bus } from "../bus/index.js";
import { CfnError } from "../errors.js";
import { type Logger, silentLogger } from "../obs/logger.js";
import type { Metrics } from "../obs/metrics.js";
import { type CheckpointStore, FileCheckpointStore } from "./checkpoint.js";
import { Coordinator } from "./coordinator.js";
import { Master, type RoundHooks, type RoundRequest, type RoundResult } from "./master.js";
import { CLI_MAIN } from "./paths.js";
import type { WorkerRef } from "./protocol.js";
import {
  type AgentRecord,
  type AgentRuntime,
  dialectOf,
  removeSwarmRecord,
  type SwarmRecord,
  writeSwarmRecord,
} from "./registry.js";
import { busArgs, killProcesses, type LeanOptions, type SpawnResult, spawnAgents } from "./spawner.js";
import { describePlan, type Plan } from "./topology.js";

export type CoordinatorPlacement = "in-process" | "process" | "none";

/** Delay before a dead coordinator process is restarted, ms. */
export const COORDINATOR_RESTART_DELAY_MS = 50;

export interface LocalSwarmOptions {
  bus: Bus;
  plan: Plan;
  runtime: AgentRuntime;
  command?: string[];
  lean?: LeanOptions;
  coordinators?: CoordinatorPlacement;
  /** Default <bus dir>/checkpoints/<swarm>. */
  checkpointDir?: string;
  /** Write the swarm registry entry (default true). */
  registry?: boolean;
  detached?: boolean;
  groupSize?: number;
  /** Node-runtime agents started at once (config spawn.nodeConcurrency). */
  spawnConcurrency?: number;
  agentArgs?: string[];
  spawnTimeoutMs?: number;
  onSpawnProgress?: (ready: number, total: number) => void;
  /** Aborting it stops the spawn and what it started (SpawnOptions.signal). */
  signal?: AbortSignal;
  logger?: Logger;
  metrics?: Metrics;
}

export function defaultCheckpointDir(bus: Bus, swarm: string): string {
  return join(bus.dir, "checkpoints", swarm);
}

/** WorkerRef map (pid, doorbell) of registered agents. */
export function workerRefsOf(agents: AgentRecord[]): Map<string, WorkerRef> {
  return new Map(
    agents.map((agent) => [
      agent.id,
      {
        id: agent.id,
        pid: agent.pid > 0 ? agent.pid : undefined,
        ...(agent.processStart === undefined ? {} : { processStart: agent.processStart }),
        doorbell: agent.doorbell,
        dialect: dialectOf(agent.runtime),
      },
    ]),
  );
}

export class LocalSwarm {
  readonly plan: Plan;
  readonly bus: Bus;
  readonly master: Master;
  readonly checkpoints: CheckpointStore;
  readonly spawned: SpawnResult;
  readonly workers: Map<string, WorkerRef>;
  /** Times a coordinator process was restarted after dying. */
  coordinatorRestarts = 0;
  private readonly coordinators: Coordinator[];
  private readonly coordinatorProcesses = new Map<string, ChildProcess>();
  private readonly logger: Logger;
  private readonly options: LocalSwarmOptions;
  private stopping = false;

  private constructor(
    options: LocalSwarmOptions,
    spawned: SpawnResult,
    checkpoints: CheckpointStore,
    coordinators: Coordinator[],
    master: Master,
  ) {
    this.options = options;
    this.plan = options.plan;
    this.bus = options.bus;
    this.logger = (options.logger ?? silentLogger).child("swarm");
    this.spawned = spawned;
    this.checkpoints = checkpoints;
    this.coordinators = coordinators;
    this.master = master;
    this.workers = workerRefsOf(spawned.agents);
  }

  /** Spawns the workers, starts the coordinators and the master; resolves when all agents are ready. */
  static async start(options: LocalSwarmOptions): Promise<LocalSwarm> {
    const { bus, plan } = options;
    const checkpoints = new FileCheckpointStore(
      options.checkpointDir ?? defaultCheckpointDir(bus, plan.swarm),
    );
    const master = new Master({
      bus,
      id: plan.master,
      checkpoints,
      logger: options.logger,
      metrics: options.metrics,
    });
    master.open();
    const placement = options.coordinators ?? "in-process";
    const coordinators: Coordinator[] = [];
    if (placement === "in-process") {
      for (const coordinator of plan.coordinators) {
        const actor = new Coordinator({
          bus,
          id: coordinator.id,
          checkpoints,
          logger: options.logger,
          metrics: options.metrics,
        });
        actor.start();
        coordinators.push(actor);
      }
    }
    let spawned: SpawnResult;
    try {
      spawned = await spawnAgents({
        bus,
        agents: plan.workers.map((worker) => ({ id: worker.id, team: worker.team })),
        runtime: options.runtime,
        command: options.command,
        readyTo: `${plan.swarm}.spawner`,
        groupSize: options.groupSize,
        concurrency: options.spawnConcurrency,
        lean: options.lean,
        detached: options.detached,
        timeoutMs: options.spawnTimeoutMs,
        agentArgs: options.agentArgs,
        onReady: options.onSpawnProgress,
        signal: options.signal,
        logger: options.logger,
      });
    } catch (error) {
      await Promise.all(coordinators.map((coordinator) => coordinator.stop()));
      master.close();
      throw error;
    }
    const swarm = new LocalSwarm(options, spawned, checkpoints, coordinators, master);
    if (placement === "process") {
      // Resolve once every coordinator serves its mailbox: a round issued right after start()
      // must not count the coordinators' process start-up as coordination time.
      try {
        await Promise.all(
          plan.coordinators.map((coordinator) =>
            swarm.startCoordinatorProcess(coordinator.id, options.spawnTimeoutMs ?? 60_000),
          ),
        );
      } catch (error) {
        await swarm.stop();
        throw error;
      }
    }
    if (options.registry ?? true) writeSwarmRecord(bus.dir, swarm.record());
    return swarm;
  }

  /** The registry entry of this swarm. */
  record(): SwarmRecord {
    const processes = [...this.spawned.processes];
    for (const child of this.coordinatorProcesses.values())
      if (child.pid) processes.push({ pid: child.pid, kind: "coordinator", agents: 0 });
    return {
      swarm: this.plan.swarm,
      createdAtMs: Date.now(),
      topology: this.plan.spec,
      description: describePlan(this.plan),
      runtime: this.spawned.runtime,
      busDir: this.bus.dir,
      master: this.plan.master,
      processes,
      agents: this.spawned.agents,
      command: this.options.command,
    };
  }

  /** Runs one round over the whole swarm. */
  runRound(
    request: Omit<RoundRequest, "plan" | "workers"> = {},
    hooks: RoundHooks = {},
  ): Promise<RoundResult> {
    return this.master.runRound({ ...request, plan: this.plan, workers: this.workers }, hooks);
  }

  /** The process of a coordinator (placement "process"), e.g. to crash it in a test. */
  coordinatorProcess(id: string): ChildProcess | undefined {
    return this.coordinatorProcesses.get(id);
  }

  /** Stops everything this swarm started: coordinators, agents (gracefully, then SIGKILL), registry. */
  async stop(options: { timeoutMs?: number } = {}): Promise<{ stopped: number; killed: number }> {
    this.stopping = true;
    await Promise.all(this.coordinators.map((coordinator) => coordinator.stop()));
    const coordinatorProcesses = [...this.coordinatorProcesses.values()]
      .filter((child) => child.pid)
      .map((child) => ({ pid: child.pid as number, kind: "coordinator" as const, agents: 0 }));
    const result = await killProcesses(
      [...this.spawned.processes, ...coordinatorProcesses],
      options.timeoutMs ?? 5000,
      this.spawned.agents
        .filter((agent) => agent.pid > 0)
        .map((agent) => ({ pid: agent.pid, processStart: agent.processStart })),
    );
    this.master.close();
    if (this.options.registry ?? true) removeSwarmRecord(this.bus.dir, this.plan.swarm);
    return result;
  }

  /**
   * Starts (or restarts) a coordinator process; resolves when it reports that it serves its
   * mailbox (a "ready" line on its stdout), rejects with CFN_ERR_TIMEOUT after `readyTimeoutMs`.
   */
  private startCoordinatorProcess(id: string, readyTimeoutMs = 60_000): Promise<void> {
    const args = [
      CLI_MAIN,
      ...busArgs(this.bus),
      "swarm",
      "coordinator",
      "--id",
      id,
      "--checkpoint-dir",
      (this.checkpoints as FileCheckpointStore).dir,
      "--ready-line",
    ];
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
    this.coordinatorProcesses.set(id, child);
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new CfnError("CFN_ERR_TIMEOUT", `coordinator ${id} not ready after ${readyTimeoutMs} ms`));
      }, readyTimeoutMs);
      const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
      lines.once("line", () => {
        clearTimeout(timer);
        resolve();
      });
      lines.once("close", () => {
        clearTimeout(timer);
        resolve(); // it died before: the restart below takes over
      });
    });
    ready.catch(() => {});
    child.once("exit", (code, signal) => {
      if (this.stopping) return;
      this.logger.warn("coordinator process died; restarting it from its checkpoint", {
        coordinator: id,
        code,
        signal,
      });
      this.coordinatorRestarts += 1;
      setTimeout(() => {
        if (!this.stopping) void this.startCoordinatorProcess(id);
      }, COORDINATOR_RESTART_DELAY_MS);
    });
    return ready;
  }
}
