// One team's part of a round, a pure core: which task runs on which worker, what happened to each
// attempt, which tasks are settled. The team coordinator (coordinator.ts) feeds it results, the
// clock and worker liveness, and sends what it decides. Promises:
//   - a worker runs one task at a time (idle-worker assignment);
//   - a task whose worker dies or times out goes to another worker of the team, up to attemptsMax;
//   - every task ends settled, ok or failed with a reason naming each attempt — never silently lost;
//   - the first answer wins: a late answer of an earlier attempt settles the task, duplicates are ignored.
// Work per event is O(1) or O(what it hands out), amortised (a round of 20,000 items costs no more
// per task than one of 20): pending tasks wait in a heap by their order, tasks in flight in a heap
// by send time, settled ones in a queue until reported; idle and usable workers and unsettled tasks
// are counted as they change, never rescanned.

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
  /** Counted in `usable` (neither dead nor suspect). */
  usable: boolean;
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
  /** Task id → its position in `order`. */
  private readonly position = new Map<string, number>();
  private readonly workers = new Map<string, WorkerState>();
  /** Message id of an attempt → task id. */
  private readonly byMessage = new Map<string, { taskId: string; attempt: number }>();
  private finishedAtMs: number | undefined;
  /** Positions of pending tasks (entries may be stale: checked when popped). */
  private readonly pendingHeap = new MinHeap<number>((a, b) => a - b);
  /** Positions now in pendingHeap (no duplicates). */
  private readonly queued = new Set<number>();
  /** Attempts in flight by send time (entries may be stale: checked when looked at). */
  private readonly inflightHeap = new MinHeap<InFlight>(
    (a, b) => a.sentAtMs - b.sentAtMs || a.position - b.position,
  );
  /** Settled tasks not yet handed out by takeSettled, in settle order. */
  private settledQueue: string[] = [];
  /** Pending tasks per own worker (broadcast), for the "prefer workers without their own task" rule. */
  private readonly pendingOwn = new Map<string, number>();
  /** Workers neither busy, dead nor suspect, in the order they became idle. */
  private readonly idle = new Set<string>();
  /** Workers neither dead nor suspect. */
  private usable = 0;
  private unsettled = 0;

  constructor(init: TeamRoundInit) {
    this.init = init;
    for (const worker of init.workers) {
      const state: WorkerState = { ref: worker, dead: false, suspect: false, usable: false };
      this.workers.set(worker.id, state);
      this.updateWorker(state);
    }
    for (const spec of init.tasks) {
      const task: TaskState = { spec, status: "pending", attempt: 0, attempts: [], reported: false };
      this.position.set(spec.taskId, this.order.length);
      this.tasks.set(spec.taskId, task);
      this.order.push(spec.taskId);
      this.unsettled++;
      if (spec.worker) this.pendingOwn.set(spec.worker, (this.pendingOwn.get(spec.worker) ?? 0) + 1);
      this.enqueuePending(task);
    }
  }

  /** Tasks of the round. */
  get size(): number {
    return this.order.length;
  }

  /** Assigns pending tasks to idle workers; the caller sends each dispatch as a `cfn.task`. */
  dispatch(nowMs: number): Dispatch[] {
    const out: Dispatch[] = [];
    if (this.idle.size === 0) {
      this.failIfNoWorkerLeft(nowMs);
      return out;
    }
    if (this.queued.size === 0) return out;
    const idleIds = new Set(this.idle);
    /** Pending tasks looked at and left waiting (a broadcast task for its own busy worker). */
    const waiting: number[] = [];
    while (idleIds.size > 0) {
      const at = this.pendingHeap.pop();
      if (at === undefined) break;
      this.queued.delete(at);
      const taskId = this.order[at];
      const task = this.tasks.get(taskId) as TaskState;
      if (task.status !== "pending") continue;
      const tried = new Set(task.attempts.map((attempt) => attempt.worker));
      let chosen: string | undefined;
      if (task.spec.worker && idleIds.has(task.spec.worker) && !tried.has(task.spec.worker))
        chosen = task.spec.worker;
      if (!chosen) {
        // A broadcast task waits for its own worker unless that worker is out (dead, suspect or tried).
        const own = task.spec.worker ? this.workers.get(task.spec.worker) : undefined;
        if (own && !own.dead && !own.suspect && !tried.has(own.ref.id)) {
          waiting.push(at);
          continue;
        }
        for (const id of idleIds) {
          // Prefer workers whose own broadcast task is already done, then untried ones.
          if (!tried.has(id) && !this.pendingOwn.has(id)) {
            chosen = id;
            break;
          }
        }
        if (!chosen) for (const id of idleIds) if (!tried.has(id)) chosen = id;
        if (!chosen) chosen = idleIds.values().next().value;
      }
      if (!chosen) {
        waiting.push(at);
        break;
      }
      idleIds.delete(chosen);
      const worker = this.workers.get(chosen) as WorkerState;
      worker.busy = taskId;
      this.updateWorker(worker);
      this.setStatus(task, "inflight");
      task.attempt += 1;
      task.worker = chosen;
      task.sentAtMs = nowMs;
      task.attempts.push({
        attempt: task.attempt,
        worker: chosen,
        outcome: "unanswered",
        startedAtMs: nowMs,
      });
      this.inflightHeap.push({ position: at, attempt: task.attempt, sentAtMs: nowMs });
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
    for (const at of waiting) this.enqueuePosition(at);
    return out;
  }

  /** Applies a worker's answer; false when it answers nothing this round knows (or a settled task). */
  onResult(result: ResultPayload, from: string, nowMs: number): boolean {
    const known = this.byMessage.get(result.re);
    if (!known) return false;
    const task = this.tasks.get(known.taskId) as TaskState;
    const worker = this.workers.get(from);
    if (worker) {
      if (worker.busy === known.taskId) worker.busy = undefined;
      worker.suspect = false;
      this.updateWorker(worker);
    }
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
    if (this.init.limits.retryOnError && task.attempt < this.attemptsAllowed(task))
      this.setStatus(task, "pending");
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
        if (revive && isAlive(worker.ref)) {
          worker.dead = false;
          this.updateWorker(worker);
        }
        continue;
      }
      if (!isAlive(worker.ref)) {
        worker.dead = true;
        const busy = worker.busy;
        worker.busy = undefined;
        this.updateWorker(worker);
        if (busy) {
          const task = this.tasks.get(busy) as TaskState;
          this.loseAttempt(
            task,
            nowMs,
            "worker-died",
            `worker ${worker.ref.id} died${worker.ref.pid ? ` (pid ${worker.ref.pid} gone)` : ""}`,
          );
        }
      }
    }
    this.checkTimeouts(nowMs);
  }

  /** Moves the tasks whose answer is overdue (taskTimeoutMs) to other workers; O(tasks timed out). */
  checkTimeouts(nowMs: number): void {
    for (;;) {
      const head = this.liveInFlight();
      if (!head || nowMs - head.task.sentAtMs < this.init.limits.taskTimeoutMs) break;
      this.inflightHeap.pop();
      const { task } = head;
      const worker = this.workers.get(task.worker as string);
      if (worker) {
        // It keeps the task "busy" until it answers or dies; it gets nothing new meanwhile.
        worker.suspect = true;
        this.updateWorker(worker);
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
      this.updateWorker(worker);
    }
    this.loseAttempt(task, nowMs, "undeliverable", `cannot deliver to ${task.worker}: ${reason}`);
  }

  /** Fails every unsettled task (the round's deadline passed). */
  failUnsettled(nowMs: number, why: string): void {
    if (this.unsettled === 0) return;
    for (const task of this.tasks.values()) {
      if (task.status === "ok" || task.status === "failed") continue;
      const record = task.attempts[task.attempts.length - 1];
      if (task.status === "inflight" && record)
        Object.assign(record, { outcome: "unanswered", endedAtMs: nowMs, reason: why });
      this.settle(task, "failed", nowMs, { reason: `${why}; ${this.reasonOf(task) || "never dispatched"}` });
    }
  }

  /** Settled outcomes not yet handed out; marks them reported. O(outcomes handed out). */
  takeSettled(): TaskOutcome[] {
    const out: TaskOutcome[] = [];
    for (const taskId of this.settledQueue) {
      const task = this.tasks.get(taskId) as TaskState;
      if (task.reported || (task.status !== "ok" && task.status !== "failed")) continue;
      task.reported = true;
      out.push(this.outcomeOf(task));
    }
    this.settledQueue = [];
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
    return this.unsettled === 0;
  }

  /** Earliest time a timeout may fire, for the coordinator's timer. */
  nextTimeoutMs(): number | undefined {
    const head = this.liveInFlight();
    return head ? (head.task.sentAtMs as number) + this.init.limits.taskTimeoutMs : undefined;
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
      const { taskId: _taskId, status, ...rest } = saved;
      Object.assign(task, rest, { reported: false });
      round.setStatus(task, status);
      if (status === "inflight" && task.sentAtMs !== undefined)
        round.inflightHeap.push({
          position: round.position.get(saved.taskId) as number,
          attempt: task.attempt,
          sentAtMs: task.sentAtMs,
        });
      if (status === "ok" || status === "failed") round.settledQueue.push(saved.taskId);
      for (const attempt of task.attempts)
        round.byMessage.set(taskMessageId(snapshot.init.roundId, saved.taskId, attempt.attempt), {
          taskId: saved.taskId,
          attempt: attempt.attempt,
        });
    }
    for (const saved of snapshot.workers) {
      const worker = round.workers.get(saved.id);
      if (!worker) continue;
      Object.assign(worker, { busy: saved.busy, dead: saved.dead, suspect: saved.suspect });
      round.updateWorker(worker);
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
      this.setStatus(task, "pending");
      task.freeAttempts = (task.freeAttempts ?? 0) + 1;
      requeued++;
    }
    for (const worker of this.workers.values()) {
      worker.suspect = false;
      this.updateWorker(worker);
    }
    return requeued;
  }

  // ---- internals ------------------------------------------------------------------------------

  /** Every change of a task's status goes through here: it keeps the counts and queues right. */
  private setStatus(task: TaskState, status: TaskState["status"]): void {
    const previous = task.status;
    if (previous === status) {
      if (status === "pending") this.enqueuePending(task);
      return;
    }
    const ownWorker = task.spec.worker;
    if (previous === "pending" && ownWorker) {
      const left = (this.pendingOwn.get(ownWorker) ?? 1) - 1;
      if (left > 0) this.pendingOwn.set(ownWorker, left);
      else this.pendingOwn.delete(ownWorker);
    }
    const wasSettled = previous === "ok" || previous === "failed";
    const isSettled = status === "ok" || status === "failed";
    if (wasSettled !== isSettled) this.unsettled += isSettled ? -1 : 1;
    task.status = status;
    if (status === "pending") {
      if (ownWorker) this.pendingOwn.set(ownWorker, (this.pendingOwn.get(ownWorker) ?? 0) + 1);
      this.enqueuePending(task);
    }
  }

  private enqueuePending(task: TaskState): void {
    this.enqueuePosition(this.position.get(task.spec.taskId) as number);
  }

  private enqueuePosition(at: number): void {
    if (this.queued.has(at)) return;
    this.queued.add(at);
    this.pendingHeap.push(at);
  }

  /** The earliest attempt still in flight (stale heap entries dropped on the way). */
  private liveInFlight(): { task: TaskState & { sentAtMs: number } } | undefined {
    for (;;) {
      const head = this.inflightHeap.peek();
      if (!head) return undefined;
      const task = this.tasks.get(this.order[head.position]) as TaskState;
      if (task.status === "inflight" && task.attempt === head.attempt && task.sentAtMs === head.sentAtMs)
        return { task: task as TaskState & { sentAtMs: number } };
      this.inflightHeap.pop();
    }
  }

  /** Keeps the idle set and the usable count in step with a worker's flags. */
  private updateWorker(worker: WorkerState): void {
    const usable = !worker.dead && !worker.suspect;
    if (usable !== worker.usable) {
      this.usable += usable ? 1 : -1;
      worker.usable = usable;
    }
    if (usable && !worker.busy) this.idle.add(worker.ref.id);
    else this.idle.delete(worker.ref.id);
  }

  private loseAttempt(
    task: TaskState,
    nowMs: number,
    outcome: "timeout" | "worker-died" | "undeliverable",
    reason: string,
  ): void {
    if (task.status !== "inflight") return;
    const record = task.attempts[task.attempts.length - 1];
    if (record) Object.assign(record, { outcome, endedAtMs: nowMs, reason });
    if (task.attempt < this.attemptsAllowed(task)) this.setStatus(task, "pending");
    else this.settle(task, "failed", nowMs, { reason: this.reasonOf(task) });
  }

  private attemptsAllowed(task: TaskState): number {
    return this.init.limits.attemptsMax + (task.freeAttempts ?? 0);
  }

  private releaseCurrentAttempt(task: TaskState, nowMs: number, reason: string): void {
    const record = task.attempts[task.attempts.length - 1];
    if (record && record.outcome === "unanswered") Object.assign(record, { endedAtMs: nowMs, reason });
    const worker = task.worker ? this.workers.get(task.worker) : undefined;
    if (worker && worker.busy === task.spec.taskId) {
      worker.busy = undefined;
      this.updateWorker(worker);
    }
  }

  private failIfNoWorkerLeft(nowMs: number): void {
    if (this.usable > 0 || this.queued.size === 0) return;
    const dead = [...this.workers.values()].filter((worker) => worker.dead).length;
    const silent = [...this.workers.values()].filter((worker) => worker.suspect).length;
    const why = `no worker of team ${this.init.team} left to run it (dead: ${dead}, not answering: ${silent})`;
    for (;;) {
      const at = this.pendingHeap.pop();
      if (at === undefined) break;
      this.queued.delete(at);
      const task = this.tasks.get(this.order[at]) as TaskState;
      if (task.status !== "pending") continue;
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
    this.setStatus(task, status);
    task.settledAtMs = nowMs;
    this.settledQueue.push(task.spec.taskId);
    if (fields.worker) task.worker = fields.worker;
    if (status === "ok") task.output = fields.output;
    else task.reason = fields.reason;
    if (task.worker) {
      const worker = this.workers.get(task.worker);
      if (worker && worker.busy === task.spec.taskId && status === "failed" && !worker.suspect) {
        worker.busy = undefined;
        this.updateWorker(worker);
      }
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

/** An attempt in flight, as queued by send time. */
interface InFlight {
  position: number;
  attempt: number;
  sentAtMs: number;
}

/** A binary min-heap. */
class MinHeap<T> {
  private readonly items: T[] = [];
  constructor(private readonly less: (a: T, b: T) => number) {}

  get size(): number {
    return this.items.length;
  }

  peek(): T | undefined {
    return this.items[0];
  }

  push(item: T): void {
    const items = this.items;
    items.push(item);
    let at = items.length - 1;
    while (at > 0) {
      const parent = (at - 1) >> 1;
      if (this.less(items[at], items[parent]) >= 0) break;
      [items[at], items[parent]] = [items[parent], items[at]];
      at = parent;
    }
  }

  pop(): T | undefined {
    const items = this.items;
    if (items.length === 0) return undefined;
    const top = items[0];
    const last = items.pop() as T;
    if (items.length > 0) {
      items[0] = last;
      let at = 0;
      for (;;) {
        const left = 2 * at + 1;
        const right = left + 1;
        let smallest = at;
        if (left < items.length && this.less(items[left], items[smallest]) < 0) smallest = left;
        if (right < items.length && this.less(items[right], items[smallest]) < 0) smallest = right;
        if (smallest === at) break;
        [items[at], items[smallest]] = [items[smallest], items[at]];
        at = smallest;
      }
    }
    return top;
  }
}

function failureText(result: ResultPayload): string {
  const parts: string[] = [];
  if (result.exitCode !== undefined && result.exitCode !== null) parts.push(`exit code ${result.exitCode}`);
  if (result.signal) parts.push(`killed by ${result.signal}`);
  if (result.error) parts.push(result.error.trim().slice(0, 500));
  return parts.length > 0 ? `command failed: ${parts.join(": ")}` : "command failed";
}
