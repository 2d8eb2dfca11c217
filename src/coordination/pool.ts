// An agent pool: pre-spawned agents (default 50) kept warm, tasks assigned to idle agents, and
// auto-scaling between a minimum and a maximum — up when tasks queue and no agent is idle, down
// when agents stay idle longer than idleTimeoutMs. decideScale is the pure core; AgentPool is the
// shell (spawning, the bus, timers). A task whose agent dies moves to another agent.

import type { Bus, Delivery, Mailbox } from "../bus/index.js";
import { CfnError, isCfnError } from "../errors.js";
import { type Logger, silentLogger } from "../obs/logger.js";
import { isProcessAlive, ringDoorbell } from "./liveness.js";
import { MESSAGE, type ResultPayload } from "./protocol.js";
import type { AgentRecord, AgentRuntime, ProcessRecord } from "./registry.js";
import { killProcesses, type LeanOptions, spawnAgents } from "./spawner.js";

export const POOL_INITIAL_DEFAULT = 50;

export interface ScaleInput {
  size: number;
  /** Agents being spawned now. */
  spawning: number;
  queued: number;
  idle: Array<{ id: string; idleSinceMs: number }>;
  min: number;
  max: number;
  nowMs: number;
  idleTimeoutMs: number;
  /** Most agents added in one step. */
  stepMax: number;
}

export interface ScaleDecision {
  spawn: number;
  retire: string[];
}

/** How the pool should change now. Pure. */
export function decideScale(input: ScaleInput): ScaleDecision {
  const { size, spawning, queued, idle, min, max, nowMs, idleTimeoutMs, stepMax } = input;
  let spawn = 0;
  if (size + spawning < min) spawn = min - size - spawning;
  const waiting = queued - idle.length - spawning;
  if (waiting > 0) spawn = Math.max(spawn, Math.min(waiting, stepMax, max - size - spawning));
  spawn = Math.max(0, Math.min(spawn, max - size - spawning));
  const retire: string[] = [];
  if (queued === 0) {
    const oldestFirst = [...idle].sort((a, b) => a.idleSinceMs - b.idleSinceMs);
    for (const agent of oldestFirst) {
      if (size - retire.length <= min) break;
      if (nowMs - agent.idleSinceMs >= idleTimeoutMs) retire.push(agent.id);
    }
  }
  return { spawn, retire };
}

export interface PoolOptions {
  bus: Bus;
  /** Pool name: prefix of its agent ids ([A-Za-z0-9_-]). */
  name: string;
  runtime?: AgentRuntime;
  command?: string[];
  lean?: LeanOptions;
  initial?: number;
  min?: number;
  max?: number;
  idleTimeoutMs?: number;
  stepMax?: number;
  /** A task not answered in this time moves to another agent, ms (default 30,000). */
  taskTimeoutMs?: number;
  attemptsMax?: number;
  /** How often scaling and liveness are checked, ms (default 100). */
  tickMs?: number;
  logger?: Logger;
}

export interface PoolTaskResult {
  ok: boolean;
  output?: unknown;
  agent: string;
  attempts: number;
  error?: string;
}

interface PendingTask {
  input: unknown;
  priority: "high" | "normal" | "low";
  attempts: number;
  resolve: (result: PoolTaskResult) => void;
  agent?: string;
  messageId?: string;
  sentAtMs?: number;
  lastError?: string;
}

interface PoolAgent {
  record: AgentRecord;
  busy?: PendingTask;
  idleSinceMs: number;
  retiring: boolean;
}

export interface PoolStats {
  size: number;
  idle: number;
  busy: number;
  queued: number;
  spawned: number;
  retired: number;
}

export class AgentPool {
  private readonly options: Required<Omit<PoolOptions, "command" | "lean" | "logger">> &
    Pick<PoolOptions, "command" | "lean">;
  private readonly bus: Bus;
  private readonly logger: Logger;
  private readonly agents = new Map<string, PoolAgent>();
  private readonly queue: PendingTask[] = [];
  private readonly byMessage = new Map<string, PendingTask>();
  private readonly processes: ProcessRecord[] = [];
  private readonly mailbox: Mailbox;
  private spawning = 0;
  private nextAgent = 0;
  private nextMessage = 0;
  private spawned = 0;
  private retired = 0;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  private loop: Promise<void> | undefined;
  private scaling: Promise<void> = Promise.resolve();

  private constructor(options: PoolOptions) {
    this.bus = options.bus;
    this.logger = (options.logger ?? silentLogger).child("pool");
    this.options = {
      bus: options.bus,
      name: options.name,
      runtime: options.runtime ?? "lean",
      command: options.command,
      lean: options.lean,
      initial: options.initial ?? POOL_INITIAL_DEFAULT,
      min: options.min ?? 0,
      max: options.max ?? Math.max(options.initial ?? POOL_INITIAL_DEFAULT, 200),
      idleTimeoutMs: options.idleTimeoutMs ?? 30_000,
      stepMax: options.stepMax ?? 50,
      taskTimeoutMs: options.taskTimeoutMs ?? 30_000,
      attemptsMax: options.attemptsMax ?? 3,
      tickMs: options.tickMs ?? 100,
    };
    const { min, max, initial } = this.options;
    if (!(min >= 0 && min <= initial && initial <= max && max >= 1)) {
      throw new CfnError(
        "CFN_ERR_CONFIG_INVALID",
        `pool limits must satisfy 0 ≤ min ≤ initial ≤ max, max ≥ 1 (min ${min}, initial ${initial}, max ${max})`,
      );
    }
    this.mailbox = this.bus.openMailbox(`${options.name}.pool`);
  }

  /** Starts a pool with `initial` agents ready. */
  static async start(options: PoolOptions): Promise<AgentPool> {
    const pool = new AgentPool(options);
    try {
      await pool.grow(pool.options.initial);
    } catch (error) {
      await pool.stop();
      throw error;
    }
    pool.loop = pool.serve();
    pool.timer = setInterval(() => pool.tick(), pool.options.tickMs);
    return pool;
  }

  /** Runs one task on an idle agent (queued until one is free). */
  submit(input: unknown, options: { priority?: "high" | "normal" | "low" } = {}): Promise<PoolTaskResult> {
    if (this.closed) return Promise.reject(new CfnError("CFN_ERR_CLOSED", "the pool is stopped"));
    return new Promise((resolve) => {
      this.queue.push({ input, priority: options.priority ?? "normal", attempts: 0, resolve });
      this.assign();
    });
  }

  get stats(): PoolStats {
    let idle = 0;
    let busy = 0;
    for (const agent of this.agents.values()) {
      if (agent.retiring) continue;
      if (agent.busy) busy++;
      else idle++;
    }
    return {
      size: idle + busy,
      idle,
      busy,
      queued: this.queue.length,
      spawned: this.spawned,
      retired: this.retired,
    };
  }

  /** Ids of the pool's live agents. */
  agentIds(): string[] {
    return [...this.agents.values()].filter((agent) => !agent.retiring).map((agent) => agent.record.id);
  }

  async stop(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.scaling.catch(() => {});
    this.mailbox.close();
    await this.loop;
    await killProcesses(
      this.processes,
      5000,
      [...this.agents.values()].map((agent) => ({
        pid: agent.record.pid,
        processStart: agent.record.processStart,
      })),
    );
    for (const task of this.queue.splice(0))
      task.resolve({
        ok: false,
        agent: "",
        attempts: task.attempts,
        error: "pool stopped before the task ran",
      });
    for (const task of this.byMessage.values())
      task.resolve({
        ok: false,
        agent: task.agent ?? "",
        attempts: task.attempts,
        error: "pool stopped while the task ran",
      });
    this.byMessage.clear();
  }

  // ---- internals ------------------------------------------------------------------------------

  private async grow(count: number, counted = false): Promise<void> {
    if (count <= 0) return;
    if (!counted) this.spawning += count;
    try {
      const agents = Array.from({ length: count }, () => ({
        id: `${this.options.name}.a${this.nextAgent++}`,
        team: this.options.name,
      }));
      const result = await spawnAgents({
        bus: this.bus,
        agents,
        runtime: this.options.runtime,
        command: this.options.command,
        lean: this.options.lean,
        readyTo: `${this.options.name}.spawner`,
        logger: this.logger,
      });
      this.processes.push(...result.processes);
      const nowMs = Date.now();
      for (const record of result.agents)
        this.agents.set(record.id, { record, idleSinceMs: nowMs, retiring: false });
      this.spawned += result.agents.length;
    } finally {
      this.spawning -= count;
    }
    this.assign();
  }

  private assign(): void {
    if (this.queue.length === 0) return;
    for (const agent of this.agents.values()) {
      if (this.queue.length === 0) return;
      if (agent.busy || agent.retiring) continue;
      const task = this.takeNext();
      this.dispatch(agent, task);
    }
  }

  /** High before normal before low, first come first served within a priority. */
  private takeNext(): PendingTask {
    const rank = { high: 0, normal: 1, low: 2 };
    let best = 0;
    for (let index = 1; index < this.queue.length; index++)
      if (rank[this.queue[index].priority] < rank[this.queue[best].priority]) best = index;
    return this.queue.splice(best, 1)[0];
  }

  private dispatch(agent: PoolAgent, task: PendingTask): void {
    task.attempts += 1;
    task.agent = agent.record.id;
    task.messageId = `${this.options.name}.task.${++this.nextMessage}`;
    task.sentAtMs = Date.now();
    agent.busy = task;
    this.byMessage.set(task.messageId, task);
    try {
      this.bus.sendSync(this.mailbox.agentId, agent.record.id, {
        type: MESSAGE.task,
        id: task.messageId,
        priority: task.priority,
        payload: { taskId: task.messageId, input: task.input },
      });
      if (agent.record.doorbell) ringDoorbell(agent.record.pid, agent.record.processStart);
    } catch (error) {
      this.lose(agent, task, `cannot deliver: ${(error as Error).message}`);
    }
  }

  private lose(agent: PoolAgent, task: PendingTask, why: string): void {
    agent.busy = undefined;
    if (task.messageId) this.byMessage.delete(task.messageId);
    task.lastError = `attempt ${task.attempts} on ${agent.record.id}: ${why}`;
    if (task.attempts >= this.options.attemptsMax)
      task.resolve({ ok: false, agent: agent.record.id, attempts: task.attempts, error: task.lastError });
    else this.queue.unshift(task);
  }

  private async serve(): Promise<void> {
    while (!this.closed) {
      let deliveries: Delivery[];
      try {
        deliveries = await this.mailbox.receive({ timeoutMs: 1000, max: 1024 });
      } catch (error) {
        if (isCfnError(error, "CFN_ERR_CLOSED")) return;
        throw error;
      }
      for (const delivery of deliveries) {
        const result = delivery.message.payload as ResultPayload;
        const task = this.byMessage.get(result?.re);
        if (delivery.message.type === MESSAGE.result && task) {
          this.byMessage.delete(result.re);
          const agent = this.agents.get(task.agent ?? "");
          if (agent) {
            agent.busy = undefined;
            agent.idleSinceMs = Date.now();
          }
          task.resolve({
            ok: result.ok,
            output: result.output,
            agent: delivery.message.from,
            attempts: task.attempts,
            error: result.error,
          });
        }
      }
      this.mailbox.ack(deliveries);
      this.assign();
    }
  }

  private tick(): void {
    if (this.closed) return;
    const nowMs = Date.now();
    for (const agent of [...this.agents.values()]) {
      const task = agent.busy;
      const dead = !isProcessAlive(agent.record.pid, agent.record.processStart);
      if (dead) {
        this.agents.delete(agent.record.id);
        if (task) this.lose(agent, task, `agent died (pid ${agent.record.pid} gone)`);
        continue;
      }
      if (task && task.sentAtMs !== undefined && nowMs - task.sentAtMs >= this.options.taskTimeoutMs) {
        this.lose(agent, task, `no answer within ${this.options.taskTimeoutMs} ms`);
        agent.retiring = true; // a stuck agent gets no more work
        this.retire(agent);
      }
    }
    const idle = [...this.agents.values()]
      .filter((agent) => !agent.busy && !agent.retiring)
      .map((agent) => ({ id: agent.record.id, idleSinceMs: agent.idleSinceMs }));
    const decision = decideScale({
      size: this.stats.size,
      spawning: this.spawning,
      queued: this.queue.length,
      idle,
      min: this.options.min,
      max: this.options.max,
      nowMs,
      idleTimeoutMs: this.options.idleTimeoutMs,
      stepMax: this.options.stepMax,
    });
    for (const id of decision.retire) {
      const agent = this.agents.get(id);
      if (agent) this.retire(agent);
    }
    if (decision.spawn > 0) {
      const count = decision.spawn;
      this.spawning += count; // counted now, so the next tick does not ask again
      this.scaling = this.scaling
        .then(() => {
          if (!this.closed) return this.grow(count, true);
          this.spawning -= count;
          return undefined;
        })
        .catch((error) => this.logger.warn("scale-up failed", { error }));
    }
    this.assign();
  }

  private retire(agent: PoolAgent): void {
    agent.retiring = true;
    this.agents.delete(agent.record.id);
    this.retired += 1;
    try {
      this.bus.sendSync(this.mailbox.agentId, agent.record.id, { type: MESSAGE.stop, priority: "high" });
      if (agent.record.doorbell) ringDoorbell(agent.record.pid, agent.record.processStart);
    } catch {
      // Its inbox is gone or full: a SIGTERM does the same (drain, then exit).
      try {
        process.kill(agent.record.pid, "SIGTERM");
      } catch {}
    }
  }
}
