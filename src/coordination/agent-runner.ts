// `cfn agent run -- <command>`: turns any CLI into a swarm agent. Each task reaches the command as
// one JSON document on stdin plus CFN_* environment variables; its stdout becomes the result (JSON
// when it parses, else text), its exit code success (0) or failure (with the stderr tail as the
// reason). `cfn.direct` messages reach the command the same way and its stdout goes straight back
// to the sender as `cfn.direct.reply`. SIGTERM: stop taking work, finish the running tasks, drain
// what is queued (up to drainTimeoutMs), hand back the rest, exit 0.
//
// Environment of the command (docs/COORDINATION.md, "Agent contract"):
//   CFN_AGENT_ID CFN_TEAM CFN_BUS_DIR CFN_MESSAGE_TYPE (task|direct) CFN_MESSAGE_ID CFN_FROM
//   CFN_PRIORITY CFN_TASK_ID CFN_ROUND_ID CFN_ATTEMPT
// stdin: {"type","messageId","from","agent","team","taskId","roundId","attempt","input"}

import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import type { Bus, Delivery, Envelope, Mailbox } from "../bus/index.js";
import { isCfnError } from "../errors.js";
import { type Logger, silentLogger } from "../obs/logger.js";
import type { Metrics } from "../obs/metrics.js";
import { MESSAGE, type ResultPayload, type TaskPayload } from "./protocol.js";
import { endStep, startStep } from "./tracing.js";

/** Bytes of stdout kept as a result; more fails the task (the output would be truncated). */
export const OUTPUT_BYTES_MAX = 512 * 1024;
/** Bytes of stderr kept for a failure reason (the tail). */
export const STDERR_TAIL_BYTES = 4096;

export interface TaskContext {
  type: "task" | "direct";
  messageId: string;
  from: string;
  agent: string;
  team: string;
  priority: string;
  taskId?: string;
  roundId?: string;
  attempt?: number;
  input: unknown;
}

export interface ExecResult {
  ok: boolean;
  output?: unknown;
  exitCode?: number | null;
  signal?: string | null;
  error?: string;
  /** The command ran longer than taskTimeoutMs and was killed. */
  timedOut?: boolean;
  durationMs: number;
}

/** Runs one task. */
export type TaskExecutor = (context: TaskContext) => Promise<ExecResult>;

/** The echo executor: output = input (benchmarks, demos, the node fallback runtime). */
export const echoExecutor: TaskExecutor = async (context) => ({
  ok: true,
  output: context.input,
  durationMs: 0,
});

export interface CommandExecutorOptions {
  busDir: string;
  /** Kill the command after this long, ms (0 = no limit). */
  taskTimeoutMs?: number;
}

/**
 * A TaskExecutor that runs a command per task. Each command runs in a process group of its own
 * (its pid is the group id), so that what it started dies with it: `killAll` is for the agent's
 * shutdown, and an exit handler does the same when the agent's process ends another way.
 */
export interface CommandExecutor extends TaskExecutor {
  /** Process groups of commands now running (or whose leftovers are being killed). */
  readonly runningGroups: number;
  /** SIGKILLs every running command's process group; their tasks fail. Returns how many. */
  killAll(): number;
}

/** SIGKILL to a whole process group; false when it is already gone. */
export function killProcessGroup(pgid: number): boolean {
  try {
    process.kill(-pgid, "SIGKILL");
    return true;
  } catch {
    return false; // ESRCH: every member is gone
  }
}

/**
 * Runs `command` once per task with the contract above. The command is the leader of a new
 * process group (spawned detached); the whole group is SIGKILLed on a timeout, on output overflow,
 * on killAll, and once the command itself exited — so a `sleep` a script left behind neither
 * outlives its task nor holds the stdout pipe (and with it the task, and the agent) open.
 */
export function commandExecutor(command: string[], options: CommandExecutorOptions): CommandExecutor {
  const groups = new Map<number, () => void>();
  const onProcessExit = () => {
    for (const pgid of groups.keys()) killProcessGroup(pgid);
  };
  const track = (pgid: number, abort: () => void) => {
    if (groups.size === 0) process.on("exit", onProcessExit);
    groups.set(pgid, abort);
  };
  const untrack = (pgid: number) => {
    if (!groups.delete(pgid)) return;
    if (groups.size === 0) process.off("exit", onProcessExit);
  };
  const run: TaskExecutor = (context) =>
    new Promise<ExecResult>((resolve) => {
      const startedAt = performance.now();
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        CFN_AGENT_ID: context.agent,
        CFN_TEAM: context.team,
        CFN_BUS_DIR: options.busDir,
        CFN_MESSAGE_TYPE: context.type,
        CFN_MESSAGE_ID: context.messageId,
        CFN_FROM: context.from,
        CFN_PRIORITY: context.priority,
        CFN_TASK_ID: context.taskId ?? "",
        CFN_ROUND_ID: context.roundId ?? "",
        CFN_ATTEMPT: context.attempt === undefined ? "" : String(context.attempt),
      };
      let child: ChildProcessWithoutNullStreams;
      try {
        // detached: setsid(), so the command leads a process group of its own.
        child = spawn(command[0], command.slice(1), {
          env,
          stdio: ["pipe", "pipe", "pipe"],
          detached: true,
        });
      } catch (error) {
        resolve({
          ok: false,
          error: `cannot start ${command[0]}: ${(error as Error).message}`,
          durationMs: 0,
        });
        return;
      }
      const pgid = child.pid;
      const stdout: Buffer[] = [];
      let stdoutBytes = 0;
      let overflow = false;
      let stderr = Buffer.alloc(0);
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const killGroup = () => {
        if (pgid !== undefined) killProcessGroup(pgid);
      };
      const finish = (result: Omit<ExecResult, "durationMs">) => {
        if (settled) return;
        settled = true;
        if (timer) clearTimeout(timer);
        resolve({ ...result, durationMs: performance.now() - startedAt });
      };
      const fail = (signal: string, error: string, timedOut = false) => {
        killGroup();
        finish({ ok: false, signal, error, ...(timedOut ? { timedOut } : {}) });
      };
      if (pgid !== undefined)
        track(pgid, () => fail("SIGKILL", "command killed: the agent is shutting down"));
      child.stdout.on("data", (chunk: Buffer) => {
        stdoutBytes += chunk.length;
        if (stdoutBytes <= OUTPUT_BYTES_MAX) {
          stdout.push(chunk);
          return;
        }
        if (overflow) return;
        overflow = true;
        fail("SIGKILL", `stdout exceeded ${OUTPUT_BYTES_MAX} bytes; the command was killed`);
      });
      child.stderr.on("data", (chunk: Buffer) => {
        stderr = Buffer.concat([stderr, chunk]);
        if (stderr.length > STDERR_TAIL_BYTES) stderr = stderr.subarray(stderr.length - STDERR_TAIL_BYTES);
      });
      child.stdin.on("error", () => {}); // the command may not read its stdin
      child.on("error", (error) => {
        if (pgid !== undefined) untrack(pgid);
        finish({ ok: false, error: `cannot start ${command[0]}: ${error.message}` });
      });
      // The command is done: what it left in its group goes too. Output already in the pipe is
      // still read; 'close' follows once the last writer is gone.
      child.on("exit", killGroup);
      child.on("close", (code, signal) => {
        if (pgid !== undefined) untrack(pgid);
        killGroup();
        if (settled) return;
        const stderrText = stderr.toString("utf8").trim();
        const text = Buffer.concat(stdout).toString("utf8");
        const ok = code === 0;
        finish({
          ok,
          output: parseOutput(text),
          exitCode: code,
          signal,
          ...(ok ? {} : { error: stderrText || `exit code ${code ?? signal}` }),
        });
      });
      if (options.taskTimeoutMs && options.taskTimeoutMs > 0) {
        timer = setTimeout(
          () => fail("SIGKILL", `command ran longer than ${options.taskTimeoutMs} ms and was killed`, true),
          options.taskTimeoutMs,
        );
      }
      const stdin = {
        type: context.type,
        messageId: context.messageId,
        from: context.from,
        agent: context.agent,
        team: context.team,
        taskId: context.taskId,
        roundId: context.roundId,
        attempt: context.attempt,
        input: context.input,
      };
      child.stdin.end(`${JSON.stringify(stdin)}\n`);
    });
  const killAll = () => {
    const aborts = [...groups.values()];
    for (const abort of aborts) abort();
    return aborts.length;
  };
  return Object.defineProperties(run, {
    runningGroups: { get: () => groups.size },
    killAll: { value: killAll },
  }) as CommandExecutor;
}

/** JSON when the whole stdout parses, else the text without its trailing newline. */
export function parseOutput(text: string): unknown {
  const trimmed = text.trim();
  if (trimmed === "") return "";
  try {
    return JSON.parse(trimmed);
  } catch {
    return text.replace(/\n$/, "");
  }
}

/** The task context of a `cfn.task` or `cfn.direct` envelope. */
export function contextOf(message: Envelope, agent: string, team: string): TaskContext {
  if (message.type === MESSAGE.task) {
    const payload = (message.payload ?? {}) as Partial<TaskPayload>;
    return {
      type: "task",
      messageId: message.id,
      from: message.from,
      agent,
      team,
      priority: message.priority,
      taskId: payload.taskId,
      roundId: payload.roundId,
      attempt: payload.attempt,
      input: payload.input ?? null,
    };
  }
  return {
    type: "direct",
    messageId: message.id,
    from: message.from,
    agent,
    team,
    priority: message.priority,
    input: message.payload ?? null,
  };
}

export interface AgentRunnerOptions {
  bus: Bus;
  id: string;
  team?: string;
  executor: TaskExecutor;
  /** Mailbox to tell "ready" once this agent's mailbox is open. */
  readyTo?: string;
  /** Tasks run at once (default 1). */
  concurrency?: number;
  /** On shutdown, longest time spent draining queued tasks, ms (default 10,000). */
  drainTimeoutMs?: number;
  runtimeName?: string;
  logger?: Logger;
  metrics?: Metrics;
  /** Mailbox options (pooled hosts turn watching off and wake agents themselves). */
  watch?: boolean;
  heartbeat?: boolean;
}

/** One agent: receive, run, reply, ack; graceful stop. */
export class AgentRunner {
  readonly id: string;
  readonly team: string;
  readonly mailbox: Mailbox;
  private readonly bus: Bus;
  private readonly executor: TaskExecutor;
  private readonly concurrency: number;
  private readonly drainTimeoutMs: number;
  private readonly logger: Logger;
  private readonly metrics: Metrics | undefined;
  private running = 0;
  private stopRequested = false;
  private idle: Array<() => void> = [];
  /** Tasks answered, for status lines. */
  handled = 0;

  constructor(options: AgentRunnerOptions) {
    this.bus = options.bus;
    this.id = options.id;
    this.team = options.team ?? "";
    this.executor = options.executor;
    this.concurrency = Math.max(1, options.concurrency ?? 1);
    this.drainTimeoutMs = options.drainTimeoutMs ?? 10_000;
    this.logger = (options.logger ?? silentLogger).child("agent");
    this.metrics = options.metrics;
    this.mailbox = this.bus.openMailbox(this.id, { watch: options.watch, heartbeat: options.heartbeat });
    if (options.readyTo) {
      this.bus.sendSync(this.id, options.readyTo, {
        type: MESSAGE.ready,
        priority: "high",
        payload: { agent: this.id, pid: process.pid, runtime: options.runtimeName ?? "node" },
      });
    }
  }

  /** Serves until stop is requested (SIGTERM, `cfn.agent.stop`), then drains and closes. */
  async run(): Promise<void> {
    while (!this.stopRequested) {
      if (this.running >= this.concurrency) {
        await new Promise<void>((resolve) => this.idle.push(resolve));
        continue;
      }
      let deliveries: Delivery[];
      try {
        deliveries = await this.mailbox.receive({ timeoutMs: 1000, max: this.concurrency - this.running });
      } catch (error) {
        if (isCfnError(error, "CFN_ERR_CLOSED")) return;
        throw error;
      }
      for (const delivery of deliveries) this.start(delivery);
    }
    await this.shutdown();
  }

  /** Handles what is available now without waiting (pooled hosts call this on a wake-up). */
  pump(): void {
    if (this.stopRequested || this.mailbox.isClosed) return;
    if (this.running >= this.concurrency) {
      this.wokenWhileBusy = true;
      return;
    }
    while (this.running < this.concurrency) {
      const deliveries = this.mailbox.receiveNow(this.concurrency - this.running);
      if (deliveries.length === 0) return;
      for (const delivery of deliveries) this.start(delivery);
    }
  }

  /** Asks the agent to stop after the running tasks; queued tasks are drained in run(). */
  requestStop(wakeReceiver = true): void {
    if (this.stopRequested) return;
    this.stopRequested = true;
    for (const wake of this.idle.splice(0)) wake();
    // Wake a receive() waiting in run(): a high-priority note to self, ignored by the handler.
    if (wakeReceiver && !this.mailbox.isClosed)
      this.bus.sendSync(this.id, this.id, { type: "cfn.agent.wake", priority: "high" });
  }

  get isStopping(): boolean {
    return this.stopRequested;
  }

  /** Finishes running tasks, drains the inbox up to drainTimeoutMs, closes the mailbox. */
  async shutdown(): Promise<void> {
    while (this.running > 0) await new Promise<void>((resolve) => this.idle.push(resolve));
    if (!this.mailbox.isClosed) {
      await this.mailbox.drain((message) => this.handleMessage(message), { timeoutMs: this.drainTimeoutMs });
      this.mailbox.close({ removeDirs: true });
    }
  }

  private start(delivery: Delivery): void {
    this.running++;
    this.handleMessage(delivery.message)
      .then(
        () => this.mailbox.ack(delivery),
        (error) => {
          this.logger.warn("task handling failed; message handed back", { agent: this.id, error });
          if (!this.mailbox.isClosed)
            this.mailbox.nack(delivery, { reason: String((error as Error)?.message ?? error) });
        },
      )
      .catch(() => {})
      .finally(() => {
        this.running--;
        for (const wake of this.idle.splice(0)) wake();
        // Pooled hosts: look again only when mail arrived meanwhile or a claimed batch has more.
        if (
          !this.stopRequested &&
          this.watchless &&
          (this.wokenWhileBusy || this.mailbox.unsettledCount > 0)
        ) {
          this.wokenWhileBusy = false;
          this.pump();
        }
      });
  }

  /** True when nobody waits on receive() (pooled hosts): the host calls pump() on wake-ups. */
  watchless = false;
  private wokenWhileBusy = false;

  private async handleMessage(message: Envelope): Promise<void> {
    if (message.type === MESSAGE.stop) {
      this.stopRequested = true;
      return;
    }
    if (message.type !== MESSAGE.task && message.type !== MESSAGE.direct) return; // wake-ups, stray replies
    const context = contextOf(message, this.id, this.team);
    const step = startStep("cfn.task", message.headers, {
      "cfn.agent": this.id,
      "cfn.message.id": message.id,
      ...(context.taskId ? { "cfn.task.id": context.taskId } : {}),
    });
    const result = await this.executor(context);
    endStep(step, { "cfn.ok": result.ok }, result.ok ? undefined : (result.error ?? "task failed"));
    this.handled++;
    const payload: ResultPayload = { re: message.id, agent: this.id, ...result };
    // The result carries the task span's context: the coordinator's side of the trace continues it.
    const headers = step.headers;
    await this.bus.send(
      this.id,
      message.from,
      {
        type: message.type === MESSAGE.task ? MESSAGE.result : MESSAGE.directReply,
        priority: message.priority,
        headers,
        payload,
      },
      { waitMs: 5000 },
    );
    this.metrics
      ?.counter("cfn_agent_tasks_total", "Tasks an agent ran, by outcome", ["outcome"])
      .inc({ outcome: result.ok ? "ok" : "failed" });
  }
}
