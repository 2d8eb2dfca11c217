// One team's part of a round, a pure core: which task runs on which worker, what happened to each
// attempt, which tasks are settled. The team coordinator (coordinator.ts) feeds it results, the
// clock and worker liveness, and sends what it decides. Promises:
//   - a worker runs one task at a time (idle-worker assignment);
//   - a task whose worker dies or times out goes to another worker of the team, up to attemptsMax;
//   - every task ends settled, ok or failed with a reason naming each attempt — never silently lost;
//   - the first answer wins: a late answer of an earlier attempt settles the task, duplicates are ignored.

import type {
  AttemptRecord,
  ResultPayload,
  RoundLimits,
  TaskOutcome,
  TaskSpec,
  TeamSummary,
  WorkerRef,
} from "./protocol.js";
import { taskMessageId } from "./protocol.js";

interface TaskState {
  spec: TaskSpec;
  status: "pending" | "inflight" | "ok" | "failed";
  attempt: number;
  worker?: string;
  sentAtMs?: number;
  attempts: AttemptRecord[];
  output?: unknown;
  reason?: string;
  settledAtMs?: number;
  reported: boolean;
  /** Attempts lost to a coordinator move: they do not count against attemptsMax. */
  freeAttempts?: number;
}

interface WorkerState {
  ref: WorkerRef;
  /** Task id it runs now. */
  busy?: string;
  dead: boolean;
  /** Timed out on a task and has not answered since: gets no new work. */
  suspect: boolean;
}

export interface Dispatch {
  taskId: string;
  worker: WorkerRef;
  attempt: number;
  messageId: string;
  priority: "high" | "normal" | "low";
  input: unknown;
}

export interface TeamRoundInit {
  roundId: string;
  team: string;
  coordinator: string;
  tasks: TaskSpec[];
  workers: WorkerRef[];
  limits: RoundLimits;
  startedAtMs: number;
}

export interface TeamRoundSnapshot {
  init: TeamRoundInit;
  tasks: Array<Omit<TaskState, "spec"> & { taskId: string }>;
  workers: Array<{ id: string; busy?: string; dead: boolean; suspect: boolean }>;
  finishedAtMs?: number;
}

export class TeamRound {
  readonly init: TeamRoundInit;
  private readonly tasks = new Map<string, TaskState>();
  private readonly order: string[] = [];
  private readonly workers = new Map<string, WorkerState>();
  /** Message id of an attempt → task id. */
  private readonly byMessage = new Map<string, { taskId: string; attempt: number }>();
  private finishedAtMs: number | undefined;

  constructor(init: TeamRoundInit) {
    this.init = init;
    for (const worker of init.workers)
      this.workers.set(worker.id, { ref: worker, dead: false, suspect: false });
    for (const spec of init.tasks) {
      this.tasks.set(spec.taskId, { spec, status: "pending", attempt: 0, attempts: [], reported: false });
      this.order.push(spec.taskId);
    }
  }

  /** Assigns pending tasks to idle workers; the caller sends each dispatch as a `cfn.task`. */
  dispatch(nowMs: number): Dispatch[] {
    const out: Dispatch[] = [];
    const idle = [...this.workers.values()].filter(
      (worker) => !worker.busy && !worker.dead && !worker.suspect,
    );
    if (idle.length === 0) {
      this.failIfNoWorkerLeft(nowMs);
      return out;
    }
    const idleIds = new Set(idle.map((worker) => worker.ref.id));
    for (const taskId of this.order) {
      if (idleIds.size === 0) break;
      const task = this.tasks.get(taskId) as TaskState;
      if (task.status !== "pending") continue;
      const tried = new Set(task.attempts.map((attempt) => attempt.worker));
      let chosen: string | undefined;
      if (task.spec.worker && idleIds.has(task.spec.worker) && !tried.has(task.spec.worker))
        chosen = task.spec.worker;
      if (!chosen) {
        // A broadcast task waits for its own worker unless that worker is out (dead, suspect or tried).
        const own = task.spec.worker ? this.workers.get(task.spec.worker) : undefined;
        if (own && !own.dead && !own.suspect && !tried.has(own.ref.id)) continue;
        for (const id of idleIds) {
          const owner = this.workers.get(id) as WorkerState;
          // Prefer workers whose own broadcast task is already done, then untried ones.
          if (!tried.has(id) && !this.hasPendingOwnTask(owner.ref.id)) {
            chosen = id;
            break;
          }
        }
        if (!chosen) for (const id of idleIds) if (!tried.has(id)) chosen = id;
        if (!chosen) chosen = idleIds.values().next().value;
      }
      if (!chosen) break;
      idleIds.delete(chosen);
      const worker = this.workers.get(chosen) as WorkerState;
      worker.busy = taskId;
      task.status = "inflight";
      task.attempt += 1;
      task.worker = chosen;
      task.sentAtMs = nowMs;
      task.attempts.push({
        attempt: task.attempt,
        worker: chosen,
        outcome: "unanswered",
        startedAtMs: nowMs,
      });
      const messageId = taskMessageId(this.init.roundId, taskId, task.attempt);
      this.byMessage.set(messageId, { taskId, attempt: task.attempt });
      out.push({
        taskId,
        worker: worker.ref,
        attempt: task.attempt,
        messageId,
        priority: task.spec.priority ?? "normal",
        input: task.spec.input,
      });
    }
    return out;
  }

  private hasPendingOwnTask(workerId: string): boolean {
    for (const task of this.tasks.values())
      if (task.status === "pending" && task.spec.worker === workerId) return true;
    return false;
  }

  /** Applies a worker's answer; false when it answers nothing this round knows (or a settled task). */
  onResult(result: ResultPayload, from: string, nowMs: number): boolean {
    const known = this.byMessage.get(result.re);
    if (!known) return false;
    const task = this.tasks.get(known.taskId) as TaskState;
    const worker = this.workers.get(from);
    if (worker && worker.busy === known.taskId) worker.busy = undefined;
    if (worker) worker.suspect = false;
    const record = task.attempts.find((attempt) => attempt.attempt === known.attempt);
    if (task.status === "ok" || task.status === "failed") return false;
    const current = known.attempt === task.attempt;
    if (result.ok) {
      if (record) Object.assign(record, { outcome: "ok", endedAtMs: nowMs });
      if (!current) this.releaseCurrentAttempt(task, nowMs, `answered first by attempt ${known.attempt}`);
      this.settle(task, "ok", nowMs, { output: result.output, worker: from });
      return true;
    }
    if (!current) return true; // a failed late answer changes nothing: the newer attempt runs
    const cause = failureText(result);
    if (record) Object.assign(record, { outcome: "error", endedAtMs: nowMs, reason: cause });
    if (this.init.limits.retryOnError && task.attempt < this.attemptsAllowed(task)) task.status = "pending";
    else this.settle(task, "failed", nowMs, { reason: this.reasonOf(task) });
    return true;
  }

  /**
   * Moves tasks of dead or silent workers to other workers (or fails them when attempts run out).
   * With `revive`, a worker judged dead that is alive again takes work again (cluster liveness:
   * a node comes back); never for pids, which the OS reuses.
   */
  checkWorkers(nowMs: number, isAlive: (worker: WorkerRef) => boolean, revive = false): void {
    for (const worker of this.workers.values()) {
      if (worker.dead) {
        if (revive && isAlive(worker.ref)) worker.dead = false;
        continue;
      }
      if (!isAlive(worker.ref)) {
        worker.dead = true;
        if (worker.busy) {
          const task = this.tasks.get(worker.busy) as TaskState;
          worker.busy = undefined;
          this.loseAttempt(
            task,
            nowMs,
            "worker-died",
            `worker ${worker.ref.id} died${worker.ref.pid ? ` (pid ${worker.ref.pid} gone)` : ""}`,
          );
        }
      }
    }
    for (const task of this.tasks.values()) {
      if (task.status !== "inflight" || task.sentAtMs === undefined) continue;
      const waitedMs = nowMs - task.sentAtMs;
      if (waitedMs < this.init.limits.taskTimeoutMs) continue;
      const worker = this.workers.get(task.worker as string);
      if (worker) {
        worker.suspect = true;
        // It keeps the task "busy" until it answers or dies; it gets nothing new meanwhile.
      }
      this.loseAttempt(
        task,
        nowMs,
        "timeout",
        `no answer from ${task.worker} within ${this.init.limits.taskTimeoutMs} ms`,
      );
    }
    this.failIfNoWorkerLeft(nowMs);
  }

  /** The task message could not be written into the worker's inbox: try another worker. */
  onUndeliverable(messageId: string, reason: string, nowMs: number): void {
    const known = this.byMessage.get(messageId);
    if (!known) return;
    const task = this.tasks.get(known.taskId) as TaskState;
    if (task.attempt !== known.attempt) return;
    const worker = task.worker ? this.workers.get(task.worker) : undefined;
    if (worker && worker.busy === known.taskId) {
      worker.busy = undefined;
      worker.suspect = true;
    }
    this.loseAttempt(task, nowMs, "undeliverable", `cannot deliver to ${task.worker}: ${reason}`);
  }

  /** Fails every unsettled task (the round's deadline passed). */
  failUnsettled(nowMs: number, why: string): void {
    for (const task of this.tasks.values()) {
      if (task.status === "ok" || task.status === "failed") continue;
      const record = task.attempts[task.attempts.length - 1];
      if (task.status === "inflight" && record)
        Object.assign(record, { outcome: "unanswered", endedAtMs: nowMs, reason: why });
      this.settle(task, "failed", nowMs, { reason: `${why}; ${this.reasonOf(task) || "never dispatched"}` });
    }
  }

  /** Settled outcomes not yet handed out; marks them reported. */
  takeSettled(): TaskOutcome[] {
    const out: TaskOutcome[] = [];
    for (const taskId of this.order) {
      const task = this.tasks.get(taskId) as TaskState;
      if (task.reported || (task.status !== "ok" && task.status !== "failed")) continue;
      task.reported = true;
      out.push(this.outcomeOf(task));
    }
    return out;
  }

  /** Every settled outcome (for a resend after a restart). */
  allSettled(): TaskOutcome[] {
    const out: TaskOutcome[] = [];
    for (const taskId of this.order) {
      const task = this.tasks.get(taskId) as TaskState;
      if (task.status === "ok" || task.status === "failed") out.push(this.outcomeOf(task));
    }
    return out;
  }

  isDone(): boolean {
    for (const task of this.tasks.values())
      if (task.status !== "ok" && task.status !== "failed") return false;
    return true;
  }

  /** Earliest time a timeout may fire, for the coordinator's timer. */
  nextTimeoutMs(): number | undefined {
    let next: number | undefined;
    for (const task of this.tasks.values()) {
      if (task.status !== "inflight" || task.sentAtMs === undefined) continue;
      const at = task.sentAtMs + this.init.limits.taskTimeoutMs;
      if (next === undefined || at < next) next = at;
    }
    return next;
  }

  summary(nowMs: number): TeamSummary {
    let succeeded = 0;
    let failed = 0;
    let retried = 0;
    for (const task of this.tasks.values()) {
      if (task.status === "ok") succeeded++;
      if (task.status === "failed") failed++;
      retried += Math.max(0, task.attempts.length - 1);
    }
    if (this.finishedAtMs === undefined && this.isDone()) this.finishedAtMs = nowMs;
    return {
      team: this.init.team,
      coordinator: this.init.coordinator,
      workers: this.workers.size,
      tasks: this.tasks.size,
      succeeded,
      failed,
      retried,
      startedAtMs: this.init.startedAtMs,
      finishedAtMs: this.finishedAtMs ?? nowMs,
    };
  }

  snapshot(): TeamRoundSnapshot {
    return {
      init: this.init,
      tasks: this.order.map((taskId) => {
        const { spec: _spec, ...rest } = this.tasks.get(taskId) as TaskState;
        return { taskId, ...rest };
      }),
      workers: [...this.workers.values()].map((worker) => ({
        id: worker.ref.id,
        busy: worker.busy,
        dead: worker.dead,
        suspect: worker.suspect,
      })),
      finishedAtMs: this.finishedAtMs,
    };
  }

  /** Rebuilds a team round from a checkpoint. Reported flags are cleared: the caller resends. */
  static restore(snapshot: TeamRoundSnapshot): TeamRound {
    const round = new TeamRound(snapshot.init);
    for (const saved of snapshot.tasks) {
      const task = round.tasks.get(saved.taskId);
      if (!task) continue;
      const { taskId: _taskId, ...rest } = saved;
      Object.assign(task, rest, { reported: false });
      for (const attempt of task.attempts)
        round.byMessage.set(taskMessageId(snapshot.init.roundId, saved.taskId, attempt.attempt), {
          taskId: saved.taskId,
          attempt: attempt.attempt,
        });
    }
    for (const saved of snapshot.workers) {
      const worker = round.workers.get(saved.id);
      if (worker) Object.assign(worker, { busy: saved.busy, dead: saved.dead, suspect: saved.suspect });
    }
    round.finishedAtMs = snapshot.finishedAtMs;
    return round;
  }

  /**
   * After the coordinator moved to another node: answers to the tasks in flight went to the old
   * node, so each goes out again now (one extra attempt, not counted against attemptsMax), and no
   * worker stays suspect for an answer it may well have sent there. Returns the tasks re-queued.
   */
  requeueInFlight(nowMs: number): number {
    let requeued = 0;
    for (const task of this.tasks.values()) {
      if (task.status !== "inflight") continue;
      this.releaseCurrentAttempt(task, nowMs, "coordinator moved to another node; sent again");
      const record = task.attempts[task.attempts.length - 1];
      if (record && record.outcome === "unanswered") record.outcome = "undeliverable";
      task.status = "pending";
      task.freeAttempts = (task.freeAttempts ?? 0) + 1;
      requeued++;
    }
    for (const worker of this.workers.values()) worker.suspect = false;
    return requeued;
  }

  // ---- internals ------------------------------------------------------------------------------

  private loseAttempt(
    task: TaskState,
    nowMs: number,
    outcome: "timeout" | "worker-died" | "undeliverable",
    reason: string,
  ): void {
    if (task.status !== "inflight") return;
    const record = task.attempts[task.attempts.length - 1];
    if (record) Object.assign(record, { outcome, endedAtMs: nowMs, reason });
    if (task.attempt < this.attemptsAllowed(task)) task.status = "pending";
    else this.settle(task, "failed", nowMs, { reason: this.reasonOf(task) });
  }

  private attemptsAllowed(task: TaskState): number {
    return this.init.limits.attemptsMax + (task.freeAttempts ?? 0);
  }

  private releaseCurrentAttempt(task: TaskState, nowMs: number, reason: string): void {
    const record = task.attempts[task.attempts.length - 1];
    if (record && record.outcome === "unanswered") Object.assign(record, { endedAtMs: nowMs, reason });
    const worker = task.worker ? this.workers.get(task.worker) : undefined;
    if (worker && worker.busy === task.spec.taskId) worker.busy = undefined;
  }

  private failIfNoWorkerLeft(nowMs: number): void {
    let usable = 0;
    for (const worker of this.workers.values()) if (!worker.dead && !worker.suspect) usable++;
    if (usable > 0) return;
    for (const task of this.tasks.values()) {
      if (task.status !== "pending") continue;
      const dead = [...this.workers.values()].filter((worker) => worker.dead).map((worker) => worker.ref.id);
      const silent = [...this.workers.values()]
        .filter((worker) => worker.suspect)
        .map((worker) => worker.ref.id);
      const why = `no worker of team ${this.init.team} left to run it (dead: ${dead.length}, not answering: ${silent.length})`;
      this.settle(task, "failed", nowMs, {
        reason: task.attempts.length > 0 ? `${this.reasonOf(task)}; ${why}` : why,
      });
    }
  }

  private settle(
    task: TaskState,
    status: "ok" | "failed",
    nowMs: number,
    fields: { output?: unknown; reason?: string; worker?: string },
  ): void {
    task.status = status;
    task.settledAtMs = nowMs;
    if (fields.worker) task.worker = fields.worker;
    if (status === "ok") task.output = fields.output;
    else task.reason = fields.reason;
    if (task.worker) {
      const worker = this.workers.get(task.worker);
      if (worker && worker.busy === task.spec.taskId && status === "failed" && !worker.suspect)
        worker.busy = undefined;
    }
    if (this.isDone() && this.finishedAtMs === undefined) this.finishedAtMs = nowMs;
  }

  private reasonOf(task: TaskState): string {
    return task.attempts
      .filter((attempt) => attempt.outcome !== "ok")
      .map(
        (attempt) => `attempt ${attempt.attempt} on ${attempt.worker}: ${attempt.reason ?? attempt.outcome}`,
      )
      .join("; ");
  }

  private outcomeOf(task: TaskState): TaskOutcome {
    const outcome: TaskOutcome = {
      taskId: task.spec.taskId,
      team: task.spec.team,
      ok: task.status === "ok",
      worker: task.worker,
      attempts: task.attempts,
      settledAtMs: task.settledAtMs ?? 0,
    };
    if (task.status === "ok") outcome.output = task.output;
    else outcome.reason = task.reason;
    return outcome;
  }
}

function failureText(result: ResultPayload): string {
  const parts: string[] = [];
  if (result.exitCode !== undefined && result.exitCode !== null) parts.push(`exit code ${result.exitCode}`);
  if (result.signal) parts.push(`killed by ${result.signal}`);
  if (result.error) parts.push(result.error.trim().slice(0, 500));
  return parts.length > 0 ? `command failed: ${parts.join(": ")}` : "command failed";
}
