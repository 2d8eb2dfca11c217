// A coordinator: an actor with its own mailbox on the bus. A team coordinator (leaf) fans a round's
// tasks out to its workers, retries lost ones on other workers, and streams settled outcomes up to
// its parent; a group coordinator (depth3 L1) splits the round among its team coordinators and
// forwards their outcomes up. It can run inside the master's process or in a process of its own
// (coordinator-main.ts): it only talks through the bus and its checkpoints.
//
// Crash safety (docs/COORDINATION.md, "Checkpoints"):
//   1. an assign is acked only after the round state is checkpointed;
//   2. worker results / child partials are acked only after the outcomes they carry were sent up
//      and the new state checkpointed — a crash in between leaves them in claimed/, and the bus
//      hands them back to the restarted coordinator;
//   3. a repeated assign (a restarted parent) is a resync: resend every settled outcome, re-forward
//      to children; the master drops duplicates by task id.

import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import type { Bus, Delivery, Mailbox } from "../bus/index.js";
import { isCfnError } from "../errors.js";
import { type Logger, silentLogger } from "../obs/logger.js";
import type { Metrics } from "../obs/metrics.js";
import type { CheckpointStore } from "./checkpoint.js";
import { isProcessAlive, ringDoorbell } from "./liveness.js";
import {
  type AssignPayload,
  assignMessageId,
  type BashResultPayload,
  fromBashResult,
  MESSAGE,
  newResyncTag,
  type PartialPayload,
  type ResultPayload,
  type SubtreePlan,
  type TaskOutcome,
  type TaskPayload,
  type TeamSummary,
  type WorkerRef,
} from "./protocol.js";
import { TeamRound, type TeamRoundSnapshot } from "./team-round.js";
import { endStep, startStep, type TracedStep } from "./tracing.js";

/** Message types of the bash agent (examples/bash-agent.sh). */
const BASH_TASK = "task";
const BASH_RESULT = "result";

/** Most bytes of outcomes in one partial message (well under the bus's messageBytesMax). */
export const PARTIAL_BYTES_MAX = 256 * 1024;
/** How often a finished round is checked for removal from memory, ms. */
export const ROUND_FORGET_CHECK_MS = 1000;

export interface CoordinatorOptions {
  bus: Bus;
  id: string;
  checkpoints: CheckpointStore;
  logger?: Logger;
  metrics?: Metrics;
  /** How often worker liveness is checked while a round runs, in ms (default 200). */
  livenessIntervalMs?: number;
  /**
   * What a resumed team coordinator does with tasks in flight: "wait" for their answers (a restart
   * in place: they land in the same inbox), or "requeue" them (the coordinator moved to another
   * node: answers went to the old one). Default "wait".
   */
  inFlightOnResume?: "wait" | "requeue";
  /** Liveness of a worker; default: its pid exists and is not a zombie (workers without pid: true). */
  /** A worker judged dead takes work again once isAlive says so (default false: pids are reused). */
  reviveWorkers?: boolean;
  isAlive?: (worker: WorkerRef) => boolean;
}

interface RoundCommon {
  assign: AssignPayload;
  outcomes: TaskOutcome[];
  teams: TeamSummary[];
  acks: Delivery[];
  lastFlushMs: number;
  done: boolean;
  summarySent: boolean;
}

interface LeafRound extends RoundCommon {
  kind: "leaf";
  team: TeamRound;
  lastLivenessMs: number;
  /** The `cfn.team` span while the team works (its context goes into every task's headers). */
  trace?: TracedStep;
}

interface GroupRound extends RoundCommon {
  kind: "group";
  settled: Set<string>;
  teamsDone: Set<string>;
}

type RoundState = LeafRound | GroupRound;

interface LeafCheckpoint {
  kind: "leaf";
  assign: AssignPayload;
  team: TeamRoundSnapshot;
  summarySent: boolean;
}

interface GroupCheckpoint {
  kind: "group";
  assign: AssignPayload;
  settled: string[];
  teamsDone: string[];
  summarySent: boolean;
}

export class Coordinator {
  readonly id: string;
  private readonly bus: Bus;
  private readonly checkpoints: CheckpointStore;
  private readonly logger: Logger;
  private readonly livenessIntervalMs: number;
  private readonly isAlive: (worker: WorkerRef) => boolean;
  private readonly inFlightOnResume: "wait" | "requeue";
  private readonly reviveWorkers: boolean;
  private readonly rounds = new Map<string, RoundState>();
  private mailbox: Mailbox | undefined;
  private loop: Promise<void> | undefined;
  private closed = false;
  private readonly metrics: Metrics | undefined;

  constructor(options: CoordinatorOptions) {
    this.id = options.id;
    this.bus = options.bus;
    this.checkpoints = options.checkpoints;
    this.logger = (options.logger ?? silentLogger).child("coordinator");
    this.metrics = options.metrics;
    this.livenessIntervalMs = options.livenessIntervalMs ?? 200;
    this.inFlightOnResume = options.inFlightOnResume ?? "wait";
    this.reviveWorkers = options.reviveWorkers ?? false;
    this.isAlive =
      options.isAlive ??
      ((worker) => worker.pid === undefined || isProcessAlive(worker.pid, worker.processStart));
  }

  /** Opens the mailbox, resumes unfinished rounds from checkpoints, and starts serving. */
  start(): void {
    this.mailbox = this.bus.openMailbox(this.id);
    this.resumeFromCheckpoints();
    this.loop = this.serve().catch((error) => {
      if (!this.closed) this.logger.error("coordinator loop failed", { coordinator: this.id, error });
    });
  }

  /** Stops serving; unsettled deliveries go back to the inbox (nothing is lost). */
  async stop(): Promise<void> {
    this.closed = true;
    this.mailbox?.close();
    await this.loop;
  }

  /** Rounds this coordinator has not finished. */
  get activeRounds(): number {
    let count = 0;
    for (const round of this.rounds.values()) if (!round.done) count++;
    return count;
  }

  // ---- loop -----------------------------------------------------------------------------------

  private async serve(): Promise<void> {
    const mailbox = this.mailbox as Mailbox;
    while (!this.closed) {
      let deliveries: Delivery[];
      try {
        deliveries = await mailbox.receive({ timeoutMs: this.nextWaitMs(), max: 1024 });
      } catch (error) {
        if (isCfnError(error, "CFN_ERR_CLOSED")) return;
        throw error;
      }
      const nowMs = Date.now();
      for (const delivery of deliveries) this.handle(delivery, nowMs);
      this.service(Date.now());
      // receive() resolves without a macrotask while mail keeps coming: without this yield, the
      // coordinators of one process chain on microtasks and starve every I/O callback (the
      // master's wake-up among them), so partial results would reach the master only at the end.
      if (deliveries.length > 0) await yieldToEventLoop();
    }
  }

  private nextWaitMs(): number {
    let wait = 1000;
    const nowMs = Date.now();
    for (const round of this.rounds.values()) {
      if (round.done && round.outcomes.length === 0 && round.teams.length === 0 && round.acks.length === 0)
        continue;
      if (round.outcomes.length > 0 || round.acks.length > 0 || round.teams.length > 0) {
        wait = Math.min(wait, Math.max(0, round.lastFlushMs + round.assign.limits.flushIntervalMs - nowMs));
      }
      if (round.kind === "leaf" && !round.done) {
        wait = Math.min(wait, this.livenessIntervalMs);
        const timeout = round.team.nextTimeoutMs();
        if (timeout !== undefined) wait = Math.min(wait, Math.max(0, timeout - nowMs));
      }
      if (!round.done) wait = Math.min(wait, Math.max(0, round.assign.deadlineMs - nowMs));
    }
    return Math.max(1, wait);
  }

  private handle(delivery: Delivery, nowMs: number): void {
    const message = delivery.message;
    try {
      switch (message.type) {
        case MESSAGE.assign:
          this.onAssign(message.payload as AssignPayload, nowMs);
          (this.mailbox as Mailbox).ack(delivery);
          return;
        case MESSAGE.result:
          this.onResult(delivery, message.payload as ResultPayload, message.from, nowMs);
          return;
        case BASH_RESULT: {
          const result = fromBashResult(message.payload as BashResultPayload);
          if (result) this.onResult(delivery, result, message.from, nowMs);
          else (this.mailbox as Mailbox).ack(delivery);
          return;
        }
        case MESSAGE.partial:
          this.onPartial(delivery, message.payload as PartialPayload);
          return;
        default:
          this.logger.debug("ignoring message", {
            coordinator: this.id,
            type: message.type,
            from: message.from,
          });
          (this.mailbox as Mailbox).ack(delivery);
      }
    } catch (error) {
      this.logger.warn("cannot handle message", { coordinator: this.id, type: message.type, error });
      (this.mailbox as Mailbox).nack(delivery, { reason: String((error as Error)?.message ?? error) });
    }
  }

  // ---- assign ---------------------------------------------------------------------------------

  private onAssign(assign: AssignPayload, nowMs: number): void {
    const existing = this.rounds.get(assign.roundId);
    if (existing) {
      this.resync(existing, assign);
      return;
    }
    if (assign.subtree.leaf) {
      const team = new TeamRound({
        roundId: assign.roundId,
        team: assign.subtree.name,
        coordinator: this.id,
        tasks: assign.tasks,
        workers: assign.subtree.workers ?? [],
        limits: assign.limits,
        startedAtMs: nowMs,
      });
      const round: LeafRound = {
        kind: "leaf",
        team,
        ...freshCommon(assign, nowMs),
        lastLivenessMs: nowMs,
        trace: this.teamStep(assign),
      };
      this.rounds.set(assign.roundId, round);
      this.checkpoint(round);
      this.sendDispatches(round, nowMs);
      this.checkpoint(round);
    } else {
      const round: GroupRound = {
        kind: "group",
        settled: new Set(),
        teamsDone: new Set(),
        ...freshCommon(assign, nowMs),
      };
      this.rounds.set(assign.roundId, round);
      this.checkpoint(round);
      this.forwardAssign(round);
    }
  }

  private resync(round: RoundState, assign: AssignPayload): void {
    round.assign.parent = assign.parent;
    if (round.kind === "leaf") {
      round.outcomes = round.team.allSettled();
      round.team.takeSettled();
      if (round.summarySent) round.teams.push(round.team.summary(Date.now()));
    } else {
      this.forwardAssign(round, newResyncTag());
    }
    round.lastFlushMs = 0;
  }

  private teamStep(assign: AssignPayload): TracedStep {
    return startStep("cfn.team", assign.trace, {
      "cfn.round.id": assign.roundId,
      "cfn.team": assign.subtree.name,
      "cfn.coordinator": this.id,
      "cfn.tasks": assign.tasks.length,
    });
  }

  private forwardAssign(round: GroupRound, resync?: string): void {
    const { assign } = round;
    const teamToChild = new Map<string, SubtreePlan>();
    for (const child of assign.subtree.children ?? [])
      for (const team of leafNames(child)) teamToChild.set(team, child);
    for (const child of assign.subtree.children ?? []) {
      const tasks = assign.tasks.filter((task) => teamToChild.get(task.team) === child);
      const payload: AssignPayload = { ...assign, parent: this.id, subtree: child, tasks };
      this.bus.sendSync(this.id, child.coordinator, {
        type: MESSAGE.assign,
        id: assignMessageId(assign.roundId, child.coordinator, resync),
        headers: assign.trace,
        priority: "high",
        payload,
      });
    }
  }

  // ---- results --------------------------------------------------------------------------------

  private onResult(delivery: Delivery, result: ResultPayload, from: string, nowMs: number): void {
    const roundId = typeof result?.re === "string" ? result.re.split(".")[0] : "";
    const round = this.rounds.get(roundId);
    if (round?.kind !== "leaf") {
      this.logger.debug("result for an unknown round", { coordinator: this.id, re: result?.re, from });
      (this.mailbox as Mailbox).ack(delivery);
      return;
    }
    round.team.onResult(result, from, nowMs);
    round.acks.push(delivery);
    this.sendDispatches(round, nowMs);
  }

  private onPartial(delivery: Delivery, partial: PartialPayload): void {
    const round = this.rounds.get(partial?.roundId);
    if (round?.kind !== "group") {
      (this.mailbox as Mailbox).ack(delivery);
      return;
    }
    for (const outcome of partial.outcomes ?? []) {
      if (round.settled.has(outcome.taskId)) continue;
      round.settled.add(outcome.taskId);
      round.outcomes.push(outcome);
    }
    for (const team of partial.teams ?? []) {
      if (round.teamsDone.has(team.team)) continue;
      round.teamsDone.add(team.team);
      round.teams.push(team);
    }
    round.acks.push(delivery);
  }

  private sendDispatches(round: LeafRound, nowMs: number): void {
    for (const dispatch of round.team.dispatch(nowMs)) {
      const payload: TaskPayload = {
        roundId: round.assign.roundId,
        taskId: dispatch.taskId,
        attempt: dispatch.attempt,
        team: round.assign.subtree.name,
        input: dispatch.input,
      };
      try {
        const type = dispatch.worker.dialect === "bash" ? BASH_TASK : MESSAGE.task;
        this.bus.sendSync(this.id, dispatch.worker.id, {
          type,
          id: dispatch.messageId,
          priority: dispatch.priority,
          payload,
          headers: round.trace?.headers,
        });
        if (dispatch.worker.doorbell) ringDoorbell(dispatch.worker.pid, dispatch.worker.processStart);
      } catch (error) {
        this.logger.warn("cannot deliver a task", {
          coordinator: this.id,
          worker: dispatch.worker.id,
          error,
        });
        round.team.onUndeliverable(dispatch.messageId, String((error as Error)?.message ?? error), nowMs);
      }
    }
  }

  // ---- periodic work --------------------------------------------------------------------------

  private service(nowMs: number): void {
    for (const round of this.rounds.values()) {
      if (round.kind === "leaf" && !round.done) {
        if (nowMs >= round.assign.deadlineMs) round.team.failUnsettled(nowMs, "round deadline passed");
        if (
          nowMs - round.lastLivenessMs >= this.livenessIntervalMs ||
          round.team.nextTimeoutMs() !== undefined
        ) {
          if (nowMs - round.lastLivenessMs >= this.livenessIntervalMs) {
            round.lastLivenessMs = nowMs;
            round.team.checkWorkers(nowMs, this.isAlive, this.reviveWorkers);
          } else {
            round.team.checkWorkers(nowMs, () => true);
          }
          this.sendDispatches(round, nowMs);
        }
        for (const outcome of round.team.takeSettled()) round.outcomes.push(outcome);
        if (round.team.isDone() && !round.summarySent) {
          round.summarySent = true;
          const summary = round.team.summary(nowMs);
          round.teams.push(summary);
          endStep(round.trace, {
            "cfn.succeeded": summary.succeeded,
            "cfn.failed": summary.failed,
            "cfn.retried": summary.retried,
          });
          round.trace = undefined;
        }
        if (round.team.isDone()) round.done = true;
      } else if (round.kind === "group" && !round.done) {
        if (
          round.settled.size >= round.assign.tasks.length &&
          round.teamsDone.size >= leafNames(round.assign.subtree).length
        ) {
          round.done = true;
          round.summarySent = true;
        }
      }
      const pending = round.outcomes.length > 0 || round.teams.length > 0 || round.acks.length > 0;
      if (!pending) {
        this.maybeForget(round, nowMs);
        continue;
      }
      const due =
        round.done ||
        round.outcomes.length >= round.assign.limits.flushOutcomesMax ||
        nowMs - round.lastFlushMs >= round.assign.limits.flushIntervalMs;
      if (due) this.flush(round, nowMs);
    }
  }

  /** Drops a finished round from memory once the master has removed its checkpoints. */
  private maybeForget(round: RoundState, nowMs: number): void {
    if (!round.done || nowMs - round.lastFlushMs < ROUND_FORGET_CHECK_MS) return;
    round.lastFlushMs = nowMs;
    if (!this.checkpoints.has(round.assign.roundId)) this.rounds.delete(round.assign.roundId);
  }

  /** Checkpoints, sends buffered outcomes up, then acks what they came from (in that order). */
  private flush(round: RoundState, nowMs: number): void {
    const { assign } = round;
    // Checkpoint first: it holds every settled outcome, so a crash after it resends them (the
    // parent drops duplicates), and nothing is written after the final send (the master removes
    // the round's checkpoints once it holds every outcome).
    this.checkpoint(round);
    if (round.outcomes.length > 0 || round.teams.length > 0) {
      for (const chunk of chunkOutcomes(round.outcomes, assign.limits.flushOutcomesMax)) {
        const last = chunk === undefined;
        const payload: PartialPayload = {
          roundId: assign.roundId,
          coordinator: this.id,
          outcomes: chunk ?? [],
          teams: last ? round.teams : [],
        };
        if (last && round.teams.length === 0) continue;
        this.bus.sendSync(this.id, assign.parent, { type: MESSAGE.partial, payload });
      }
      this.metrics
        ?.counter(
          "cfn_coordination_outcomes_forwarded_total",
          "Task outcomes a coordinator sent to its parent",
        )
        .inc(round.outcomes.length);
      round.outcomes = [];
      round.teams = [];
    }
    if (round.acks.length > 0) {
      (this.mailbox as Mailbox).ack(round.acks);
      round.acks = [];
    }
    round.lastFlushMs = nowMs;
  }

  private checkpoint(round: RoundState): void {
    const record: LeafCheckpoint | GroupCheckpoint =
      round.kind === "leaf"
        ? {
            kind: "leaf",
            assign: { ...round.assign, tasks: [] },
            team: round.team.snapshot(),
            summarySent: round.summarySent,
          }
        : {
            kind: "group",
            assign: round.assign,
            settled: [...round.settled],
            teamsDone: [...round.teamsDone],
            summarySent: round.summarySent,
          };
    this.checkpoints.write(round.assign.roundId, `coordinator-${this.id}`, record);
  }

  private resumeFromCheckpoints(): void {
    const nowMs = Date.now();
    for (const roundId of this.checkpoints.rounds()) {
      const record = this.checkpoints.read<LeafCheckpoint | GroupCheckpoint>(
        roundId,
        `coordinator-${this.id}`,
      );
      if (!record) continue;
      let round: RoundState;
      if (record.kind === "leaf") {
        const team = TeamRound.restore(record.team);
        if (this.inFlightOnResume === "requeue") team.requeueInFlight(nowMs);
        const assign = { ...record.assign, tasks: record.team.init.tasks };
        round = {
          kind: "leaf",
          team,
          ...freshCommon(assign, 0),
          lastLivenessMs: 0,
          summarySent: record.summarySent,
          trace: record.summarySent ? undefined : this.teamStep(assign),
        };
        // Resend what was settled before the crash; the parent drops duplicates.
        round.outcomes = team.allSettled();
        team.takeSettled();
        if (record.summarySent) round.teams.push(team.summary(nowMs));
        round.done = team.isDone();
      } else {
        round = {
          kind: "group",
          settled: new Set(),
          teamsDone: new Set(),
          ...freshCommon(record.assign, 0),
          summarySent: false,
        };
        // Children resend everything on a repeated assign.
        this.forwardAssign(round);
      }
      this.rounds.set(roundId, round);
      this.logger.info("resumed round from checkpoint", { coordinator: this.id, roundId, kind: record.kind });
    }
  }
}

function freshCommon(assign: AssignPayload, nowMs: number): RoundCommon {
  return { assign, outcomes: [], teams: [], acks: [], lastFlushMs: nowMs, done: false, summarySent: false };
}

/** Team names of the leaf coordinators under a subtree. */
export function leafNames(subtree: SubtreePlan): string[] {
  if (subtree.leaf) return [subtree.name];
  return (subtree.children ?? []).flatMap(leafNames);
}

/** Splits outcomes into chunks of at most `max` items and PARTIAL_BYTES_MAX bytes; ends with undefined (the summary slot). */
function* chunkOutcomes(outcomes: TaskOutcome[], max: number): Generator<TaskOutcome[] | undefined> {
  let chunk: TaskOutcome[] = [];
  let bytes = 0;
  for (const outcome of outcomes) {
    const size = JSON.stringify(outcome).length;
    if (chunk.length > 0 && (chunk.length >= max || bytes + size > PARTIAL_BYTES_MAX)) {
      yield chunk;
      chunk = [];
      bytes = 0;
    }
    chunk.push(outcome);
    bytes += size;
  }
  if (chunk.length > 0) yield chunk;
  yield undefined;
}
