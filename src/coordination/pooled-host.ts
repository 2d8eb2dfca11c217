// Pooled agents: many logical agents in one process, each still its own mailbox on the bus (so a
// coordinator cannot tell them from process agents). One fs.watch per inbox wakes exactly the agent
// that got mail; one timer refreshes every heartbeat and one sweep rescans every inbox as the
// safety net under inotify (sweepIntervalMs).

import { existsSync, type FSWatcher, watch } from "node:fs";
import { join } from "node:path";
import type { Bus } from "../bus/index.js";
import { type Logger, silentLogger } from "../obs/logger.js";
import type { Metrics } from "../obs/metrics.js";
import { AgentRunner, type TaskExecutor } from "./agent-runner.js";

/** Safety-net rescan of every inbox of a pooled host, ms. */
export const POOLED_SWEEP_INTERVAL_MS = 1000;

export interface PooledHostOptions {
  bus: Bus;
  agents: Array<{ id: string; team: string }>;
  executor: TaskExecutor;
  readyTo?: string;
  concurrency?: number;
  sweepIntervalMs?: number;
  logger?: Logger;
  metrics?: Metrics;
}

export class PooledHost {
  readonly runners: AgentRunner[] = [];
  private readonly watchers: FSWatcher[] = [];
  private readonly due = new Set<AgentRunner>();
  private scheduled = false;
  private sweepTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private readonly logger: Logger;
  private stopped = false;

  constructor(options: PooledHostOptions) {
    this.logger = (options.logger ?? silentLogger).child("pooled-host");
    for (const agent of options.agents) {
      const runner = new AgentRunner({
        bus: options.bus,
        id: agent.id,
        team: agent.team,
        executor: options.executor,
        readyTo: options.readyTo,
        concurrency: options.concurrency,
        runtimeName: "pooled",
        logger: options.logger,
        metrics: options.metrics,
        watch: false,
        heartbeat: false,
      });
      runner.watchless = true;
      this.runners.push(runner);
      try {
        const inbox = runner.mailbox.paths.inbox;
        const watcher = watch(inbox, { persistent: false }, (_event, fileName) => {
          // Renames out of the inbox (our own claims) fire too: a stat is cheaper than a rescan.
          if (typeof fileName === "string" && fileName.length > 0 && !existsSync(join(inbox, fileName)))
            return;
          this.schedule(runner);
        });
        watcher.on("error", () => watcher.close());
        this.watchers.push(watcher);
      } catch (error) {
        this.logger.warn("cannot watch an inbox; the sweep will find its messages", {
          agent: agent.id,
          error,
        });
      }
      this.schedule(runner);
    }
    const sweepMs = options.sweepIntervalMs ?? POOLED_SWEEP_INTERVAL_MS;
    this.sweepTimer = setInterval(() => {
      for (const runner of this.runners) this.schedule(runner);
    }, sweepMs);
    this.heartbeatTimer = setInterval(() => {
      for (const runner of this.runners) if (!runner.mailbox.isClosed) runner.mailbox.heartbeat();
    }, options.bus.config.heartbeatIntervalMs);
  }

  private schedule(runner: AgentRunner): void {
    if (this.stopped) return;
    this.due.add(runner);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      const batch = [...this.due];
      this.due.clear();
      for (const one of batch) {
        try {
          one.pump();
        } catch (error) {
          this.logger.warn("pump failed", { agent: one.id, error });
        }
      }
    });
  }

  /** Graceful stop: every agent finishes and drains, then closes its mailbox. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    for (const watcher of this.watchers) watcher.close();
    for (const runner of this.runners) runner.requestStop(false);
    await Promise.all(this.runners.map((runner) => runner.shutdown()));
  }
}
