// The master of a swarm: issues a round to the top coordinators, gathers the outcomes they stream
// up, and returns the whole result — coordination time, delivery rate, per-team figures and every
// failed task with its reason. Its state is checkpointed, so a restarted master resumes a round
// (resumeRound) instead of losing it. Later the Raft leader of the cluster takes this role; the
// checkpoint store is then replicated (docs/COORDINATION.md, "Towards the cluster").

import type { Bus, Delivery, Mailbox } from "../bus/index.js";
import { CfnError, isCfnError } from "../errors.js";
import { type Logger, silentLogger } from "../obs/logger.js";
import type { Metrics } from "../obs/metrics.js";
import type { CheckpointStore } from "./checkpoint.js";
import { CHECKPOINT_SPREAD, checkpointIntervalMaxMs, leafNames } from "./coordinator.js";
import {
  type AssignPayload,
  assignMessageId,
  MESSAGE,
  newResyncTag,
  newRoundId,
  type PartialPayload,
  type RoundLimits,
  type SubtreePlan,
  type TaskOutcome,
  type TaskSpec,
  type TeamSummary,
  type WorkerRef,
} from "./protocol.js";
import { describePlan, type Plan } from "./topology.js";
import { endStep, startStep, type TracedStep } from "./tracing.js";

export const DEFAULT_LIMITS: RoundLimits = {
  taskTimeoutMs: 10_000,
  attemptsMax: 3,
  retryOnError: false,
  flushIntervalMs: 5,
  flushOutcomesMax: 200,
};

/** Room left in messageBytesMax for an assign's envelope (ids, headers, trace context), bytes. */
export const ASSIGN_ENVELOPE_BYTES = 4 * 1024;

/** Extra time after the round deadline for coordinators to report what failed, in ms. */
export const DEADLINE_GRACE_MS = 1000;
/** The master checkpoints (and then acks partials) at most this often, in ms. */
export const MASTER_CHECKPOINT_INTERVAL_MS = 50;
// … and, as its checkpoint holds every outcome, only once n / CHECKPOINT_SPREAD new outcomes came
// in (n tasks) or checkpointIntervalMaxMs after the last one: O(CHECKPOINT_SPREAD) per outcome.

export interface RoundRequest {
  plan: Plan;
  /** Pids of workers (liveness, doorbell); workers missing here are judged by timeouts only. */
  workers?: Map<string, WorkerRef>;
  /** Broadcast: every worker gets this input (one task per worker). */
  input?: unknown;
  /** Distributed: one task per item, spread over the teams; idle workers take the next one. */
  items?: unknown[];
  priority?: "high" | "normal" | "low";
  /** Deadline of the whole round, in ms (default 30,000). */
  timeoutMs?: number;
  limits?: Partial<RoundLimits>;
  roundId?: string;
}

export interface RoundFailure {
  taskId: string;
  team: string;
  worker?: string;
  reason: string;
  attempts: TaskOutcome["attempts"];
}

export interface TeamResult extends TeamSummary {
  /** Time from the round's start to the team's last outcome, in ms. */
  timeMs: number;
}

export interface RoundResult {
  roundId: string;
  topology: string;
  kind: Plan["kind"];
  agents: number;
  coordinators: number;
  tasks: number;
  succeeded: number;
  failed: number;
  /** succeeded / tasks (1 = every task's result reached the master). */
  deliveryRate: number;
  /** From issuing the round to holding every outcome, in ms (master clock). */
  coordinationMs: number;
  /** From issuing the round to the first outcome, in ms. */
  firstResultMs: number | null;
  partials: number;
  retried: number;
  teams: TeamResult[];
  failures: RoundFailure[];
  outcomes: TaskOutcome[];
  resumed: boolean;
}

export interface RoundProgress {
  roundId: string;
  settled: number;
  succeeded: number;
  failed: number;
  tasks: number;
  /** Outcomes that arrived with this partial. */
  latest: TaskOutcome[];
  teamsDone: TeamSummary[];
  elapsedMs: number;
}

export interface RoundHooks {
  /** Called for every partial result as it arrives (streaming). */
  onProgress?: (progress: RoundProgress) => void;
  /** Called once the round is issued (checkpointed and sent). */
  onIssued?: (roundId: string) => void;
}

interface MasterCheckpoint {
  roundId: string;
  plan: Plan;
  assigns: AssignPayload[];
  tasks: TaskSpec[];
  startedAtMs: number;
  deadlineMs: number;
  outcomes: TaskOutcome[];
  teams: TeamSummary[];
  partials: number;
  firstResultMs: number | null;
}

export interface MasterOptions {
  bus: Bus;
  /** Agent id of the master (plan.master). */
  id: string;
  checkpoints: CheckpointStore;
  logger?: Logger;
  metrics?: Metrics;
  random?: () => number;
}

export class Master {
  readonly id: string;
  private readonly bus: Bus;
  private readonly checkpoints: CheckpointStore;
  private readonly logger: Logger;
  private readonly metrics: Metrics | undefined;
  private readonly random: () => number;
  private mailbox: Mailbox | undefined;
  /** Rounds being collected now, for resync. */
  private readonly active = new Map<string, MasterCheckpoint>();

  constructor(options: MasterOptions) {
    this.id = options.id;
    this.bus = options.bus;
    this.checkpoints = options.checkpoints;
    this.logger = (options.logger ?? silentLogger).child("master");
    this.metrics = options.metrics;
    this.random = options.random ?? Math.random;
  }

  /** Opens the master's mailbox (done by runRound too); call early so the first wake-up is warm. */
  open(): Mailbox {
    if (!this.mailbox || this.mailbox.isClosed) this.mailbox = this.bus.openMailbox(this.id);
    return this.mailbox;
  }

  close(): void {
    this.mailbox?.close();
    this.mailbox = undefined;
  }

  /** Issues a round and waits for every outcome (or the deadline). */
  async runRound(request: RoundRequest, hooks: RoundHooks = {}): Promise<RoundResult> {
    const problem = roundRequestProblem(request);
    if (problem) throw new CfnError("CFN_ERR_CONFIG_INVALID", problem);
    const mailbox = this.open();
    const plan = request.plan;
    const limits: RoundLimits = { ...DEFAULT_LIMITS, ...request.limits };
    const startedAtMs = Date.now();
    const startedAt = performance.now();
    const roundId = request.roundId ?? newRoundId(startedAtMs, this.random);
    const deadlineMs = startedAtMs + (request.timeoutMs ?? 30_000);
    const tasks = planTasks(plan, request);
    const largestTeam = Math.max(
      0,
      ...plan.coordinators.filter((coordinator) => coordinator.leaf).map((team) => team.children.length),
    );
    if (largestTeam > this.bus.config.inboxDepthMax) {
      // One result per worker lands in the team coordinator's inbox: replies beyond the limit wait
      // for room (and are redelivered), which is slower but loses nothing.
      this.logger.warn("a team is larger than bus.inboxDepthMax; its replies will wait for room", {
        largestTeam,
        inboxDepthMax: this.bus.config.inboxDepthMax,
      });
    }
    const workers = request.workers ?? new Map<string, WorkerRef>();
    const step = startStep("cfn.round", undefined, {
      "cfn.round.id": roundId,
      "cfn.topology": describePlan(plan),
      "cfn.tasks": tasks.length,
    });
    const assigns = topSubtrees(plan, workers).map((subtree) => {
      const teams = new Set(leafNames(subtree));
      return {
        roundId,
        parent: this.id,
        subtree,
        tasks: tasks.filter((task) => teams.has(task.team)),
        limits,
        deadlineMs,
        ...(step.headers ? { trace: step.headers } : {}),
      } satisfies AssignPayload;
    });
    // An assign the bus would refuse is refused before anything of the round exists: no
    // checkpoint left for a later `--resume` to run silently, no team started with the others missing.
    const bytesMax = this.bus.config.messageBytesMax - ASSIGN_ENVELOPE_BYTES;
    for (const assign of assigns) {
      const bytes = Buffer.byteLength(JSON.stringify(assign));
      if (bytes > bytesMax) {
        endStep(step, {}, "assign too large");
        throw new CfnError(
          "CFN_ERR_MESSAGE_TOO_LARGE",
          `the assign of ${assign.subtree.coordinator} (${assign.tasks.length} tasks) is ${bytes} bytes, over messageBytesMax ${this.bus.config.messageBytesMax} less ${ASSIGN_ENVELOPE_BYTES} for its envelope: send fewer or smaller items per round`,
          {
            bytes,
            messageBytesMax: this.bus.config.messageBytesMax,
            coordinator: assign.subtree.coordinator,
          },
        );
      }
    }
    const state: MasterCheckpoint = {
      roundId,
      plan,
      assigns,
      tasks,
      startedAtMs,
      deadlineMs,
      outcomes: [],
      teams: [],
      partials: 0,
      firstResultMs: null,
    };
    this.checkpoints.write(roundId, "master", state);
    try {
      this.sendAssigns(assigns);
    } catch (error) {
      // Not issued (a send the size check above did not foresee): remove what would let a later
      // `--resume` run it.
      this.checkpoints.remove(roundId);
      endStep(step, {}, String((error as Error)?.message ?? error));
      throw error;
    }
    hooks.onIssued?.(roundId);
    return this.collect(mailbox, state, startedAt, false, hooks, step);
  }

  /** Resumes a round after a master restart: re-sends the assigns (a resync) and keeps collecting. */
  async resumeRound(roundId: string, hooks: RoundHooks = {}): Promise<RoundResult> {
    const state = this.checkpoints.read<MasterCheckpoint>(roundId, "master");
    if (!state)
      throw new CfnError("CFN_ERR_UNAVAILABLE", `no master checkpoint for round ${roundId}`, { roundId });
    const mailbox = this.open();
    this.logger.info("resuming round", {
      roundId,
      settled: state.outcomes.length,
      tasks: state.tasks.length,
    });
    // The resumed master's span continues the round's trace (its context is in the assigns).
    const step = startStep("cfn.round", state.assigns[0]?.trace, {
      "cfn.round.id": roundId,
      "cfn.resumed": true,
    });
    this.sendAssigns(state.assigns, newResyncTag());
    const startedAt = performance.now() - (Date.now() - state.startedAtMs);
    return this.collect(mailbox, state, startedAt, true, hooks, step);
  }

  /** Round ids with a master checkpoint in the store (unfinished rounds). */
  unfinishedRounds(): string[] {
    return this.checkpoints
      .rounds()
      .filter((roundId) => this.checkpoints.read(roundId, "master") !== undefined);
  }

  /**
   * Re-sends the assigns of the rounds in progress to `coordinator` (all coordinators when
   * omitted): a coordinator that moved to another node answers a repeated assign by resending
   * what it settled, and one without a checkpoint starts the subtree's tasks. Returns assigns sent.
   */
  resync(coordinator?: string): number {
    let sent = 0;
    for (const state of this.active.values()) {
      const assigns = state.assigns.filter(
        (assign) => coordinator === undefined || assign.subtree.coordinator === coordinator,
      );
      this.sendAssigns(assigns, newResyncTag());
      sent += assigns.length;
    }
    return sent;
  }

  /** Ids of the rounds this master is collecting. */
  get activeRounds(): string[] {
    return [...this.active.keys()];
  }

  private sendAssigns(assigns: AssignPayload[], resync?: string): void {
    for (const assign of assigns) {
      this.bus.sendSync(this.id, assign.subtree.coordinator, {
        type: MESSAGE.assign,
        id: assignMessageId(assign.roundId, assign.subtree.coordinator, resync),
        headers: assign.trace,
        priority: "high",
        payload: assign,
      });
    }
  }

  private async collect(
    mailbox: Mailbox,
    state: MasterCheckpoint,
    startedAt: number,
    resumed: boolean,
    hooks: RoundHooks,
    step: TracedStep,
  ): Promise<RoundResult> {
    this.active.set(state.roundId, state);
    try {
      const result = await this.collectRound(mailbox, state, startedAt, resumed, hooks);
      endStep(
        step,
        {
          "cfn.tasks": result.tasks,
          "cfn.succeeded": result.succeeded,
          "cfn.failed": result.failed,
          "cfn.coordination_ms": result.coordinationMs,
        },
        result.failed > 0 ? `${result.failed} of ${result.tasks} tasks failed` : undefined,
      );
      return result;
    } catch (error) {
      endStep(step, {}, String((error as Error)?.message ?? error));
      throw error;
    } finally {
      this.active.delete(state.roundId);
    }
  }

  private async collectRound(
    mailbox: Mailbox,
    state: MasterCheckpoint,
    startedAt: number,
    resumed: boolean,
    hooks: RoundHooks,
  ): Promise<RoundResult> {
    const byTask = new Map<string, TaskOutcome>();
    for (const outcome of state.outcomes) byTask.set(outcome.taskId, outcome);
    const teams = new Map<string, TeamSummary>();
    for (const team of state.teams) teams.set(team.team, team);
    const total = state.tasks.length;
    let succeeded = state.outcomes.filter((outcome) => outcome.ok).length;
    let allAt: number | undefined = byTask.size >= total ? performance.now() : undefined;
    let unacked: Delivery[] = [];
    let lastCheckpoint = performance.now();
    /** Outcomes and team summaries since the last checkpoint. */
    let changes = 0;
    const intervalMaxMs = checkpointIntervalMaxMs(total, this.bus.config.visibilityTimeoutMs);
    // Every team of the plan gets an assign and answers with its summary, a team without tasks
    // too (at once): counting only the teams with tasks, the early summaries of the idle ones
    // ended the wait before the last busy team's summary, left queued in the master's inbox.
    const teamCount = new Set(state.assigns.flatMap((assign) => leafNames(assign.subtree))).size;
    const persist = () => {
      state.outcomes = [...byTask.values()];
      state.teams = [...teams.values()];
      this.checkpoints.write(state.roundId, "master", state);
      if (unacked.length > 0) mailbox.ack(unacked);
      unacked = [];
      lastCheckpoint = performance.now();
      changes = 0;
    };
    while (byTask.size < total || teams.size < teamCount) {
      if (this.checkpoints.isRemoved?.(state.roundId))
        // Replicated store: another master finished the round (this one resumed it from a stale
        // state, or was deposed): it is over, and answering it again would duplicate its result.
        throw new CfnError(
          "CFN_ERR_ROUTING_REFUSED",
          `round ${state.roundId} was removed (finished elsewhere)`,
          {
            roundId: state.roundId,
          },
        );
      const nowMs = Date.now();
      if (nowMs > state.deadlineMs + DEADLINE_GRACE_MS) break;
      if (byTask.size >= total && allAt !== undefined && performance.now() - allAt > DEADLINE_GRACE_MS) break; // summaries late: not needed
      let deliveries: Delivery[];
      try {
        const waitMs = Math.max(
          1,
          Math.min(
            unacked.length > 0 ? MASTER_CHECKPOINT_INTERVAL_MS : 1000,
            state.deadlineMs + DEADLINE_GRACE_MS - nowMs,
          ),
        );
        deliveries = await mailbox.receive({ timeoutMs: waitMs, max: 1024 });
      } catch (error) {
        if (isCfnError(error, "CFN_ERR_CLOSED"))
          throw new CfnError("CFN_ERR_CLOSED", "the master was closed during a round");
        throw error;
      }
      for (const delivery of deliveries) {
        const message = delivery.message;
        unacked.push(delivery);
        if (message.type !== MESSAGE.partial) continue;
        const partial = message.payload as PartialPayload;
        if (partial?.roundId !== state.roundId) continue;
        state.partials += 1;
        const latest: TaskOutcome[] = [];
        for (const outcome of partial.outcomes ?? []) {
          if (byTask.has(outcome.taskId)) continue;
          byTask.set(outcome.taskId, outcome);
          latest.push(outcome);
          if (outcome.ok) succeeded++;
          changes++;
        }
        const teamsDone: TeamSummary[] = [];
        for (const team of partial.teams ?? []) {
          if (teams.has(team.team)) continue;
          teams.set(team.team, team);
          teamsDone.push(team);
          changes++;
        }
        if (latest.length > 0 && state.firstResultMs === null)
          state.firstResultMs = performance.now() - startedAt;
        if (byTask.size >= total && allAt === undefined) allAt = performance.now();
        if (latest.length > 0 || teamsDone.length > 0) {
          hooks.onProgress?.({
            roundId: state.roundId,
            settled: byTask.size,
            succeeded,
            failed: byTask.size - succeeded,
            tasks: total,
            latest,
            teamsDone,
            elapsedMs: performance.now() - startedAt,
          });
        }
      }
      const sinceMs = performance.now() - lastCheckpoint;
      if (
        unacked.length > 0 &&
        sinceMs >= MASTER_CHECKPOINT_INTERVAL_MS &&
        (changes * CHECKPOINT_SPREAD >= total || sinceMs >= intervalMaxMs)
      )
        persist();
    }
    const endAt = allAt ?? performance.now();
    // Whatever is still missing is reported, never dropped silently.
    for (const task of state.tasks) {
      if (byTask.has(task.taskId)) continue;
      byTask.set(task.taskId, {
        taskId: task.taskId,
        team: task.team,
        ok: false,
        reason: `no outcome reached the master before the round deadline (team ${task.team})`,
        attempts: [],
        settledAtMs: Date.now(),
      });
    }
    persist();
    this.checkpoints.remove(state.roundId);
    return this.result(state, byTask, teams, endAt - startedAt, resumed, startedAt);
  }

  private result(
    state: MasterCheckpoint,
    byTask: Map<string, TaskOutcome>,
    teams: Map<string, TeamSummary>,
    coordinationMs: number,
    resumed: boolean,
    startedAt: number,
  ): RoundResult {
    const outcomes = state.tasks.map((task) => byTask.get(task.taskId) as TaskOutcome);
    const succeeded = outcomes.filter((outcome) => outcome.ok).length;
    const failures: RoundFailure[] = outcomes
      .filter((outcome) => !outcome.ok)
      .map((outcome) => ({
        taskId: outcome.taskId,
        team: outcome.team,
        worker: outcome.worker,
        reason: outcome.reason ?? "failed",
        attempts: outcome.attempts,
      }));
    const startedAtMs = state.startedAtMs;
    const teamResults: TeamResult[] = [];
    const perTeam = new Map<string, TaskOutcome[]>();
    for (const outcome of outcomes) {
      const list = perTeam.get(outcome.team) ?? [];
      list.push(outcome);
      perTeam.set(outcome.team, list);
    }
    for (const [name, list] of perTeam) {
      const summary = teams.get(name);
      const coordinator = state.plan.coordinators.find(
        (coordinator) => coordinator.leaf && coordinator.name === name,
      );
      const ok = list.filter((outcome) => outcome.ok).length;
      const lastMs = Math.max(...list.map((outcome) => outcome.settledAtMs));
      teamResults.push({
        team: name,
        coordinator: summary?.coordinator ?? coordinator?.id ?? "",
        workers: summary?.workers ?? coordinator?.children.length ?? 0,
        tasks: list.length,
        succeeded: ok,
        failed: list.length - ok,
        retried: list.reduce((sum, outcome) => sum + Math.max(0, outcome.attempts.length - 1), 0),
        startedAtMs: summary?.startedAtMs ?? startedAtMs,
        finishedAtMs: summary?.finishedAtMs ?? lastMs,
        timeMs: Math.max(0, lastMs - startedAtMs),
      });
    }
    const retried = teamResults.reduce((sum, team) => sum + team.retried, 0);
    const total = state.tasks.length;
    const deliveryRate = total === 0 ? 1 : succeeded / total;
    if (this.metrics) {
      this.metrics
        .histogram(
          "cfn_coordination_round_seconds",
          "Coordination time of a round, master issue to last outcome",
        )
        .observe(coordinationMs / 1000);
      this.metrics
        .counter("cfn_coordination_tasks_total", "Tasks of coordination rounds by outcome", ["outcome"])
        .inc({ outcome: "ok" }, succeeded);
      this.metrics
        .counter("cfn_coordination_tasks_total", "Tasks of coordination rounds by outcome", ["outcome"])
        .inc({ outcome: "failed" }, total - succeeded);
      this.metrics.emit("cfn_coordination_round_seconds", coordinationMs / 1000, {
        round: state.roundId,
        topology: state.plan.kind,
      });
      this.metrics.emit("cfn_coordination_delivery_rate", deliveryRate, {
        round: state.roundId,
        topology: state.plan.kind,
      });
    }
    void startedAt;
    return {
      roundId: state.roundId,
      topology: describePlan(state.plan),
      kind: state.plan.kind,
      agents: state.plan.workers.length,
      coordinators: state.plan.coordinators.length,
      tasks: total,
      succeeded,
      failed: total - succeeded,
      deliveryRate,
      coordinationMs,
      firstResultMs: state.firstResultMs,
      partials: state.partials,
      retried,
      teams: teamResults.sort((a, b) => a.team.localeCompare(b.team, "en", { numeric: true })),
      failures,
      outcomes,
      resumed,
    };
  }
}

const PRIORITIES: ReadonlyArray<string> = ["high", "normal", "low"];

/**
 * What is wrong with a round request's items and priority, or undefined. Checked before anything
 * of a round starts (the CLI, Master.runRound, the cluster's round queue). A round without tasks
 * (`items: []`) is refused: there is nothing to coordinate, and its assigns would reach the
 * coordinators only after the master had already finished and removed the round's checkpoints.
 */
export function roundRequestProblem(request: { items?: unknown; priority?: unknown }): string | undefined {
  if (request.items !== undefined && !Array.isArray(request.items))
    return `items must be an array (got ${request.items === null ? "null" : typeof request.items})`;
  if (Array.isArray(request.items) && request.items.length === 0)
    return "items must hold at least one item: a round without tasks has nothing to run";
  if (request.priority !== undefined && !PRIORITIES.includes(request.priority as string))
    return `priority must be high, normal or low (got ${JSON.stringify(request.priority)})`;
  return undefined;
}

/** The round's tasks: one per worker (broadcast) or one per item spread over the teams. */
export function planTasks(
  plan: Plan,
  request: Pick<RoundRequest, "input" | "items" | "priority">,
): TaskSpec[] {
  const priority = request.priority ?? "normal";
  if (request.items !== undefined) {
    const teams = plan.coordinators.filter((coordinator) => coordinator.leaf);
    const slots = interleavedTeamSlots(plan);
    return request.items.map((input, index) => ({
      taskId: `i${index}`,
      team: teams.length === 0 ? "" : slots[index % slots.length],
      input,
      priority,
    }));
  }
  return plan.workers.map((worker, index) => ({
    taskId: `t${index}`,
    team: worker.team,
    worker: worker.id,
    input: request.input ?? null,
    priority,
  }));
}

/**
 * One slot per worker, the teams interleaved in proportion to their size: the k-th worker of a
 * team of n sits at (k + 0.5) / n, so any prefix of the slots (the first m items of a round) is
 * spread over the teams by size — 2 × 10 alternates, a team of 40 beside one of 10 gets 4 of 5.
 */
export function interleavedTeamSlots(plan: Plan): string[] {
  const sizes = new Map<string, number>();
  for (const worker of plan.workers) sizes.set(worker.team, (sizes.get(worker.team) ?? 0) + 1);
  const teamIndex = new Map([...sizes.keys()].map((team, index) => [team, index]));
  const seen = new Map<string, number>();
  const keyed = plan.workers.map((worker) => {
    const rank = seen.get(worker.team) ?? 0;
    seen.set(worker.team, rank + 1);
    return {
      team: worker.team,
      index: teamIndex.get(worker.team) ?? 0,
      at: (rank + 0.5) / (sizes.get(worker.team) ?? 1),
    };
  });
  keyed.sort((a, b) => a.at - b.at || a.index - b.index);
  return keyed.map((slot) => slot.team);
}

/** Subtrees of the master's direct coordinators, with worker refs filled in. */
export function topSubtrees(plan: Plan, workers: Map<string, WorkerRef>): SubtreePlan[] {
  const byId = new Map(plan.coordinators.map((coordinator) => [coordinator.id, coordinator]));
  const build = (id: string): SubtreePlan => {
    const coordinator = byId.get(id);
    if (!coordinator) throw new Error(`invariant violated: unknown coordinator ${id}`);
    if (coordinator.leaf) {
      return {
        coordinator: id,
        name: coordinator.name,
        leaf: true,
        workers: coordinator.children.map((worker) => workers.get(worker) ?? { id: worker }),
      };
    }
    return {
      coordinator: id,
      name: coordinator.name,
      leaf: false,
      children: coordinator.children.map(build),
    };
  };
  return plan.coordinators
    .filter((coordinator) => coordinator.parent === plan.master)
    .map((coordinator) => build(coordinator.id));
}
