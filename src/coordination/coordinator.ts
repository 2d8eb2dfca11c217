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
//
// With a replicated store (RaftCheckpointStore, on a cluster) a round is live only while the log
// accepts its checkpoints: a round starts (or resumes) dispatching tasks and sending partials only
// once its first checkpoint committed, and is abandoned — nothing more dispatched, sent or
// written — as soon as the store says the round was removed (its master finished it, or a stale
// coordinator resumed it from an old state). A resumed round needs the master's record too.

import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { type Bus, type Delivery, EXPIRES_AT_HEADER, type Mailbox } from "../bus/index.js";
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
/**
 * A checkpoint holds the whole round (every task), so a round of n tasks is checkpointed after at
 * least n / CHECKPOINT_SPREAD changes — tasks dispatched, outcomes settled — (or after
 * CHECKPOINT_INTERVAL_MAX_MS, or when done): its cost stays O(CHECKPOINT_SPREAD) per change however
 * large the round. Rounds of up to CHECKPOINT_SPREAD tasks are checkpointed at every flush. Acks
 * wait for the checkpoint; outcomes go up at once.
 */
export const CHECKPOINT_SPREAD = 8;
/**
 * Longest a coordinator holds acks (and leaves progress uncheckpointed) while changes come in, ms,
 * per 1,000 tasks of the round (a larger checkpoint costs more, so it waits longer), and at most a
 * third of the bus's visibilityTimeoutMs (acks ahead of redelivery).
 */
export const CHECKPOINT_INTERVAL_MAX_MS = 250;

/** The longest wait between two checkpoints of a round of `size` tasks, ms. */
export function checkpointIntervalMaxMs(size: number, visibilityTimeoutMs: number): number {
  return Math.max(
    1,
    Math.min(visibilityTimeoutMs / 3, CHECKPOINT_INTERVAL_MAX_MS * Math.max(1, size / 1000)),
  );
}

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
  /**
   * Resume only rounds whose master record is in the store (default false). On a cluster a
   * coordinator record without the master's is left over from a finished round (the leader
   * collects it); a round just starting gets its assign, which resumes from the record.
   */
  resumeOnlyWithMaster?: boolean;
}

interface RoundCommon {
  assign: AssignPayload;
  outcomes: TaskOutcome[];
  teams: TeamSummary[];
  acks: Delivery[];
  lastFlushMs: number;
  done: boolean;
  summarySent: boolean;
  /**
   * The log accepted a checkpoint of the round (always true with a local store): until then it
   * dispatches nothing and sends nothing up — on a cluster the round may already be over.
   */
  confirmed: boolean;
  /** Tasks dispatched and outcomes settled or received since the last checkpoint. */
  changes: number;
  lastCheckpointMs: number;
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
  private readonly resumeOnlyWithMaster: boolean;
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
    this.resumeOnlyWithMaster = options.resumeOnlyWithMaster ?? false;
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
      if (!round.confirmed) {
        wait = Math.min(wait, round.assign.limits.flushIntervalMs); // flushed once confirmed
        continue;
      }
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
    const existing = this.liveRound(assign.roundId);
    if (existing) {
      this.resync(existing, assign);
      return;
    }
    if (this.checkpoints.isRemoved?.(assign.roundId)) {
      // A late or repeated assign of a round that is over (the master removed it).
      this.logger.info("assign of a removed round ignored", {
        coordinator: this.id,
        roundId: assign.roundId,
      });
      return;
    }
    const record = this.checkpoints.read<LeafCheckpoint | GroupCheckpoint>(assign.roundId, this.recordName);
    if (record) {
      // Checkpointed here or on another node but not resumed at start (the master's record was not
      // there yet): resume from it, and answer the assign as the resync it is.
      const round = this.restore(record, nowMs);
      this.rounds.set(assign.roundId, round);
      this.logger.info("resumed round from checkpoint on its assign", {
        coordinator: this.id,
        roundId: assign.roundId,
        kind: record.kind,
      });
      round.assign.parent = assign.parent;
      if (round.kind === "group") this.forwardAssign(round, newResyncTag());
      this.checkpoint(round);
      this.confirm(round);
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
      // Workers already known dead (a pid gone, an agent the cluster marked down) get no first
      // attempt: before, each new round sent them a task and lost that attempt at the first check.
      team.checkWorkers(nowMs, this.isAlive);
      const round: LeafRound = {
        kind: "leaf",
        team,
        ...freshCommon(assign, nowMs),
        lastLivenessMs: nowMs,
        trace: this.teamStep(assign),
      };
      this.rounds.set(assign.roundId, round);
      this.checkpoint(round);
      this.confirm(round);
      if (round.confirmed) {
        this.sendDispatches(round, nowMs);
        this.checkpoint(round);
      }
    } else {
      const round: GroupRound = {
        kind: "group",
        settled: new Set(),
        teamsDone: new Set(),
        ...freshCommon(assign, nowMs),
      };
      this.rounds.set(assign.roundId, round);
      this.checkpoint(round);
      this.confirm(round);
      this.forwardAssign(round);
    }
  }

  /**
   * With a replicated store: the round goes on once the log accepted its latest checkpoint, and is
   * abandoned when the log refused it as removed. A local store needs no wait.
   */
  private confirm(round: RoundState): void {
    const committed = this.checkpoints.committed;
    if (!committed) {
      round.confirmed = true;
      return;
    }
    round.confirmed = false;
    const roundId = round.assign.roundId;
    void committed.call(this.checkpoints, roundId, this.recordName).then((outcome) => {
      if (this.closed || this.rounds.get(roundId) !== round) return;
      if (outcome === "removed") {
        this.abandon(round);
        return;
      }
      if (outcome === "closed") return;
      // "rejected" (over a limit): the round goes on with the last committed checkpoint, as before.
      round.confirmed = true;
      if (round.kind === "leaf" && !round.done) {
        const nowMs = Date.now();
        this.sendDispatches(round, nowMs);
        this.checkpoint(round);
      }
    });
  }

  /**
   * The round was removed from the replicated state (the master finished it, or this coordinator
   * runs it from a stale state): stop dispatching, send nothing more up, write nothing more. The
   * deliveries it holds are acked — they belong to a round nobody collects any more.
   */
  private abandon(round: RoundState): void {
    const roundId = round.assign.roundId;
    if (this.rounds.get(roundId) !== round) return;
    this.rounds.delete(roundId);
    if (round.acks.length > 0) (this.mailbox as Mailbox).ack(round.acks);
    round.acks = [];
    round.outcomes = [];
    round.teams = [];
    if (round.kind === "leaf" && round.trace) {
      endStep(round.trace, {}, "round removed");
      round.trace = undefined;
    }
    if (round.done) {
      this.logger.debug("finished round removed; forgotten", { coordinator: this.id, roundId });
      return;
    }
    this.logger.warn("round removed from the replicated state; abandoned here", {
      coordinator: this.id,
      roundId,
    });
    this.metrics
      ?.counter(
        "cfn_coordination_rounds_abandoned_total",
        "Rounds a coordinator stopped running because they were removed from the replicated state",
      )
      .inc();
  }

  /** The round, unless the store says it was removed (then it is abandoned here). */
  private liveRound(roundId: string): RoundState | undefined {
    const round = this.rounds.get(roundId);
    if (round && this.checkpoints.isRemoved?.(roundId)) {
      this.abandon(round);
      return undefined;
    }
    return round;
  }

  private get recordName(): string {
    return `coordinator-${this.id}`;
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
    const round = this.liveRound(roundId);
    if (round?.kind !== "leaf") {
      this.logger.debug("result for an unknown round", { coordinator: this.id, re: result?.re, from });
      (this.mailbox as Mailbox).ack(delivery);
      return;
    }
    round.team.onResult(result, from, nowMs);
    round.acks.push(delivery);
    if (round.confirmed) this.sendDispatches(round, nowMs);
  }

  private onPartial(delivery: Delivery, partial: PartialPayload): void {
    const round = this.liveRound(partial?.roundId);
    if (round?.kind !== "group") {
      (this.mailbox as Mailbox).ack(delivery);
      return;
    }
    for (const outcome of partial.outcomes ?? []) {
      if (round.settled.has(outcome.taskId)) continue;
      round.settled.add(outcome.taskId);
      round.outcomes.push(outcome);
      round.changes++;
    }
    for (const team of partial.teams ?? []) {
      if (round.teamsDone.has(team.team)) continue;
      round.teamsDone.add(team.team);
      round.teams.push(team);
    }
    round.acks.push(delivery);
  }

  private sendDispatches(round: LeafRound, nowMs: number): void {
    const dispatches = round.team.dispatch(nowMs);
    round.changes += dispatches.length;
    for (const dispatch of dispatches) {
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
          // Past the round's deadline nobody waits for the answer: a task held up (in a dead
          // node's spool, say) is dead-lettered as expired instead of run after the round ended.
          headers: { ...round.trace?.headers, [EXPIRES_AT_HEADER]: String(round.assign.deadlineMs) },
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
      if (this.checkpoints.isRemoved?.(round.assign.roundId)) {
        this.abandon(round);
        continue;
      }
      if (!round.confirmed) continue;
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
            round.team.checkTimeouts(nowMs);
          }
          this.sendDispatches(round, nowMs);
        }
        for (const outcome of round.team.takeSettled()) {
          round.outcomes.push(outcome);
          round.changes++;
        }
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

  /**
   * Checkpoints (when due), sends buffered outcomes up, then acks what they came from (in that
   * order; acks only after a checkpoint).
   */
  private flush(round: RoundState, nowMs: number): void {
    const { assign } = round;
    // Checkpoint first: it holds every settled outcome, so a crash after it resends them (the
    // parent drops duplicates), and nothing is written after the final send (the master removes
    // the round's checkpoints once it holds every outcome). Between checkpoints outcomes still go
    // up at once: a crash before the next one redoes their work from the deliveries not acked.
    const checkpointed = round.done || this.checkpointDue(round, nowMs);
    if (checkpointed) this.checkpoint(round);
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
    if (checkpointed && round.acks.length > 0) {
      (this.mailbox as Mailbox).ack(round.acks);
      round.acks = [];
    }
    round.lastFlushMs = nowMs;
  }

  /** Enough new outcomes to pay for a whole checkpoint, or held too long (CHECKPOINT_SPREAD). */
  private checkpointDue(round: RoundState, nowMs: number): boolean {
    const size = round.kind === "leaf" ? round.team.size : round.assign.tasks.length;
    return (
      round.changes * CHECKPOINT_SPREAD >= size ||
      nowMs - round.lastCheckpointMs >= checkpointIntervalMaxMs(size, this.bus.config.visibilityTimeoutMs)
    );
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
    this.checkpoints.write(round.assign.roundId, this.recordName, record);
    round.changes = 0;
    round.lastCheckpointMs = Date.now();
  }

  private resumeFromCheckpoints(): void {
    const nowMs = Date.now();
    for (const roundId of this.checkpoints.rounds()) {
      const record = this.checkpoints.read<LeafCheckpoint | GroupCheckpoint>(roundId, this.recordName);
      if (!record) continue;
      if (this.checkpoints.isRemoved?.(roundId)) continue;
      if (this.resumeOnlyWithMaster && this.checkpoints.read(roundId, "master") === undefined) {
        this.logger.info("checkpoint of a round without its master's record not resumed", {
          coordinator: this.id,
          roundId,
        });
        continue;
      }
      const round = this.restore(record, nowMs);
      if (round.kind === "group") this.forwardAssign(round); // children resend everything on a repeated assign
      this.rounds.set(roundId, round);
      if (this.checkpoints.committed) {
        // Live only if the log still takes the round's checkpoints: a node restarted on an old
        // state may hold a round that ended meanwhile (its write is then refused, and it is dropped).
        this.checkpoint(round);
        this.confirm(round);
      } else round.confirmed = true;
      this.logger.info("resumed round from checkpoint", { coordinator: this.id, roundId, kind: record.kind });
    }
  }

  /** A round rebuilt from its checkpoint; what it had settled is queued to be sent again. */
  private restore(record: LeafCheckpoint | GroupCheckpoint, nowMs: number): RoundState {
    if (record.kind === "leaf") {
      const team = TeamRound.restore(record.team);
      if (this.inFlightOnResume === "requeue") team.requeueInFlight(nowMs);
      const assign = { ...record.assign, tasks: record.team.init.tasks };
      const round: LeafRound = {
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
      return round;
    }
    return {
      kind: "group",
      settled: new Set(),
      teamsDone: new Set(),
      ...freshCommon(record.assign, 0),
      summarySent: false,
    };
  }
}

function freshCommon(assign: AssignPayload, nowMs: number): RoundCommon {
  return {
    assign,
    outcomes: [],
    teams: [],
    acks: [],
    lastFlushMs: nowMs,
    done: false,
    summarySent: false,
    confirmed: true,
    changes: 0,
    lastCheckpointMs: nowMs,
  };
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
