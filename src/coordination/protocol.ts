// The coordination protocol: message types and payloads that ride on the bus between the master,
// coordinators and workers (docs/COORDINATION.md, "Messages"). Any runtime that speaks the bus
// protocol and answers `cfn.task` with `cfn.result` can be a worker.

/** Message types of the coordination layer. */
export const MESSAGE = {
  /** parent → coordinator: a round's tasks for the coordinator's subtree (AssignPayload). */
  assign: "cfn.round.assign",
  /** coordinator → parent: settled task outcomes, streamed while the round runs (PartialPayload). */
  partial: "cfn.round.partial",
  /** coordinator → worker: one task (TaskPayload). */
  task: "cfn.task",
  /** worker → coordinator: the outcome of one task (ResultPayload). */
  result: "cfn.result",
  /** agent → agent, bypassing coordinators; answered with direct.reply. */
  direct: "cfn.direct",
  directReply: "cfn.direct.reply",
  /** agent → spawner: the agent's mailbox is open (ReadyPayload). */
  ready: "cfn.agent.ready",
  /** anyone → agent: drain and exit. */
  stop: "cfn.agent.stop",
} as const;

/** One task of a round, as planned by the master. */
export interface TaskSpec {
  taskId: string;
  /** Team name of the leaf coordinator that runs it. */
  team: string;
  /** Worker the task goes to first (broadcast rounds); otherwise any idle worker of the team. */
  worker?: string;
  input: unknown;
  priority?: "high" | "normal" | "low";
}

/** A worker as a coordinator sees it: its id and, when known, its pid for liveness and doorbell. */
export interface WorkerRef {
  id: string;
  pid?: number;
  /** The pid's process start time when it was spawned (liveness.ts): a recycled pid is not it. */
  processStart?: number;
  /** The worker wakes on SIGUSR2 (lean agents); senders may ring after a send. */
  doorbell?: boolean;
  /**
   * "bash": examples/bash-agent.sh, which answers type `task` with type `result` and payload
   * {"agent", "task": <the task payload>} (no `re`); the coordinator speaks that dialect to it.
   */
  dialect?: "cfn" | "bash";
}

/** The bash agent's answer to a task. */
export interface BashResultPayload {
  agent: string;
  task: TaskPayload;
}

/** Turns a bash agent's `result` into a ResultPayload (the bash agent echoes the task). */
export function fromBashResult(payload: BashResultPayload): ResultPayload | undefined {
  const task = payload?.task;
  if (
    !task ||
    typeof task.roundId !== "string" ||
    typeof task.taskId !== "string" ||
    !Number.isInteger(task.attempt)
  )
    return undefined;
  return {
    re: taskMessageId(task.roundId, task.taskId, task.attempt),
    ok: true,
    agent: payload.agent,
    output: task.input,
  };
}

/** Subtree handed to a coordinator: itself and, below it, teams or further coordinators. */
export interface SubtreePlan {
  coordinator: string;
  name: string;
  leaf: boolean;
  /** Leaf: the team's workers. */
  workers?: WorkerRef[];
  /** Non-leaf: child coordinators' subtrees. */
  children?: SubtreePlan[];
}

export interface RoundLimits {
  /** A task not answered within this time is retried on another worker, in ms. */
  taskTimeoutMs: number;
  /** Attempts per task (first try included) before it is reported failed. */
  attemptsMax: number;
  /** Retry tasks whose command failed (non-zero exit) on another worker, not only lost ones. */
  retryOnError: boolean;
  /** A coordinator sends buffered outcomes upward at least this often, in ms. */
  flushIntervalMs: number;
  /** … or as soon as it holds this many. */
  flushOutcomesMax: number;
}

export interface AssignPayload {
  roundId: string;
  /** Agent id that receives this coordinator's partials. */
  parent: string;
  subtree: SubtreePlan;
  tasks: TaskSpec[];
  limits: RoundLimits;
  /** Epoch ms after which unsettled tasks are failed. */
  deadlineMs: number;
  /** W3C trace context of the round (traceparent, …), kept in checkpoints; absent when tracing is off. */
  trace?: Record<string, string>;
}

export interface TaskPayload {
  roundId: string;
  taskId: string;
  attempt: number;
  team: string;
  input: unknown;
}

export interface ResultPayload {
  /** Message id of the task answered. */
  re: string;
  ok: boolean;
  agent?: string;
  output?: unknown;
  exitCode?: number | null;
  signal?: string | null;
  error?: string;
  /** The command ran longer than the agent's task timeout and was killed. */
  timedOut?: boolean;
  durationMs?: number;
}

/** One attempt of a task: who ran it and how it ended. */
export interface AttemptRecord {
  attempt: number;
  worker: string;
  /** "ok", "error" (the command failed), "timeout", "worker-died", "undeliverable", "unanswered". */
  outcome: "ok" | "error" | "timeout" | "worker-died" | "undeliverable" | "unanswered";
  reason?: string;
  startedAtMs: number;
  endedAtMs?: number;
}

/** A settled task. */
export interface TaskOutcome {
  taskId: string;
  team: string;
  ok: boolean;
  worker?: string;
  output?: unknown;
  /** Why it failed, for people: names every attempt's worker and cause. */
  reason?: string;
  attempts: AttemptRecord[];
  settledAtMs: number;
}

/** Figures of one team, sent up once its tasks are all settled. */
export interface TeamSummary {
  team: string;
  coordinator: string;
  workers: number;
  tasks: number;
  succeeded: number;
  failed: number;
  /** Attempts beyond the first (tasks moved to another worker). */
  retried: number;
  startedAtMs: number;
  finishedAtMs: number;
}

export interface PartialPayload {
  roundId: string;
  coordinator: string;
  outcomes: TaskOutcome[];
  /** Teams that finished since the last partial. */
  teams: TeamSummary[];
}

export interface ReadyPayload {
  agent: string;
  pid: number;
  runtime: string;
}

/** Message id of attempt `attempt` of a task (idempotent: a resend after a crash keeps it). */
export function taskMessageId(roundId: string, taskId: string, attempt: number): string {
  return `${roundId}.${taskId}.a${attempt}`;
}

/** A fresh round id: time-ordered and unique enough across hosts. */
export function newRoundId(nowMs: number, random: () => number): string {
  return `r${nowMs.toString(36)}-${Math.floor(random() * 36 ** 6)
    .toString(36)
    .padStart(6, "0")}`;
}

/**
 * Message id of an assign. The first one is fixed (idempotent sends); a resync (a resumed master,
 * a coordinator moved to another node) gets a fresh suffix, because the receiving node drops a
 * message id it has already written (cross-node dedup) and a resync must arrive.
 */
export function assignMessageId(roundId: string, coordinator: string, resync?: string): string {
  return resync === undefined
    ? `${roundId}.assign.${coordinator}`
    : `${roundId}.assign.${coordinator}.${resync}`;
}

let resyncCounter = 0;

/** A suffix unique within this process and, by its clock part, across restarts. */
export function newResyncTag(): string {
  resyncCounter += 1;
  return `r${Date.now().toString(36)}-${process.pid.toString(36)}-${resyncCounter}`;
}
