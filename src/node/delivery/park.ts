// The park: forwarded messages for an agent whose inbox is full wait on the owner node, on the
// bus's own tmpfs, instead of holding back every agent of their sender's lane (receiver.ts):
//
//   <bus dir>/parked/<agent>/<P_T_N_UNIQ_0.json>   bus message files, as the inbox would get them
//
// - Once an agent has parked messages, every later forwarded message for it is parked too, so
//   that they reach its inbox in order. A file moves into the inbox by rename — atomic, so it is
//   in one place or the other, never both — as the inbox has room (polled with backoff), in the
//   inbox's own order: priority, then arrival.
// - Bounded: at most parkedMessagesMax messages per agent. Past that the receiver holds the
//   sender's stream at the message, as without a park, so backpressure still reaches the
//   sending node; 0 turns parking off. Before that, while an agent has parked messages, the
//   receiver asks its senders to stop draining it (frame "p", receiver.ts): its backlog waits on
//   the sending host, and the park rarely fills.
// - What is parked survives a crash of the node process (tmpfs): load() picks it up at start,
//   crash recovery looks for a frame's messages here as in the inbox, and with persistence the
//   mirror copies parked files like inbox files (and restores them into the inbox).

import { readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { type Bus, type ForwardedMessage, isValidAgentId, parseQueuedName } from "../../bus/index.js";
import type { Logger } from "../../obs/logger.js";
import type { NodeMetrics } from "../node-metrics.js";

export const PARK_DIR = "parked";
/**
 * Messages per parked file at most: small enough that a file fits an inbox with a little room
 * (and at most an eighth of inboxDepthMax, so that a file always fits a drained inbox).
 */
export const PARK_FILE_MESSAGES_MAX = 32;
/** A parked agent's inbox is polled first after this time, doubling up to the max. */
export const PARK_POLL_MS = 10;
export const PARK_POLL_MS_MAX = 250;

/** The park directory of `agent` on `bus`. */
export function parkDirOf(bus: Bus, agent: string): string {
  return join(bus.dir, PARK_DIR, agent);
}

interface ParkedFile {
  name: string;
  count: number;
}

/** A FIFO of files: an array read from `head`, compacted now and then (no shift() per file). */
class FileQueue {
  private files: ParkedFile[] = [];
  private head = 0;

  get length(): number {
    return this.files.length - this.head;
  }

  peek(): ParkedFile {
    return this.files[this.head];
  }

  push(file: ParkedFile): void {
    this.files.push(file);
  }

  shift(): void {
    this.head++;
    if (this.head === this.files.length) {
      this.files = [];
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.files.length) {
      this.files = this.files.slice(this.head);
      this.head = 0;
    }
  }
}

/** One agent's parked files: a queue per priority digit (names within one are in arrival order). */
interface ParkedAgent {
  queues: [FileQueue, FileQueue, FileQueue];
  messages: number;
  delayMs: number;
  timer: NodeJS.Timeout | undefined;
}

export interface InboxParkOptions {
  bus: Bus;
  logger: Logger;
  metrics: NodeMetrics;
  /** Messages parked per agent at most (0: no parking). */
  parkedMessagesMax: number;
}

export class InboxPark {
  private readonly options: InboxParkOptions;
  private readonly logger: Logger;
  private readonly agents = new Map<string, ParkedAgent>();
  private readonly movedListeners: ((agent: string, remaining: number) => void)[] = [];
  private total = 0;
  private closed = false;

  constructor(options: InboxParkOptions) {
    this.options = options;
    this.logger = options.logger.child("park");
  }

  /** Picks up files parked before a restart; returns how many messages they hold. */
  load(): number {
    const { bus } = this.options;
    let agentIds: string[];
    try {
      agentIds = readdirSync(join(bus.dir, PARK_DIR));
    } catch {
      return 0;
    }
    let loaded = 0;
    for (const agent of agentIds) {
      if (!isValidAgentId(agent)) continue;
      let names: string[];
      try {
        names = readdirSync(parkDirOf(bus, agent)).sort();
      } catch {
        continue;
      }
      for (const name of names) {
        const parsed = parseQueuedName(name);
        if (!parsed) {
          // A .<name> temporary of a write the process did not finish (a crash, a full disk):
          // nothing else writes a node's park, and the sender resends what was not acknowledged.
          if (name.startsWith(".")) removeQuietly(join(parkDirOf(bus, agent), name));
          continue;
        }
        this.add(agent, { name, count: parsed.count }, Number(name[0]));
        loaded += parsed.count;
      }
    }
    if (loaded > 0) this.logger.info("parked messages found at start", { messages: loaded });
    return loaded;
  }

  /** Messages parked for `agent` now. */
  messagesOf(agent: string): number {
    return this.agents.get(agent)?.messages ?? 0;
  }

  /** Messages `agent` may still park. */
  room(agent: string): number {
    return Math.max(0, this.options.parkedMessagesMax - this.messagesOf(agent));
  }

  /**
   * Parks `messages` (from one sender to one agent, one priority, in order) in files of at most
   * PARK_FILE_MESSAGES_MAX. Returns how many were parked, and the error that stopped the rest.
   */
  park(from: string, to: string, messages: ForwardedMessage[]): { parked: number; error?: unknown } {
    let parked = 0;
    const { bus } = this.options;
    const dir = parkDirOf(bus, to);
    const perFile = Math.max(1, Math.min(PARK_FILE_MESSAGES_MAX, Math.floor(bus.config.inboxDepthMax / 8)));
    while (parked < messages.length) {
      const chunk = messages.slice(parked, parked + perFile);
      let file: ParkedFile;
      try {
        file = this.options.bus.parkForwarded(dir, from, to, chunk);
      } catch (error) {
        return { parked, error };
      }
      this.add(to, file, Number(file.name[0]));
      parked += file.count;
      this.options.metrics.parked.inc(file.count);
    }
    return { parked };
  }

  /**
   * Calls `listener` after each poll of a parked agent's inbox with what stays parked (0: the
   * agent has nothing parked any more). The receiver keeps its senders paused meanwhile.
   */
  onMoved(listener: (agent: string, remaining: number) => void): void {
    this.movedListeners.push(listener);
  }

  /** Agents with parked messages, for status. */
  parked(): { agent: string; messages: number }[] {
    return [...this.agents].map(([agent, entry]) => ({ agent, messages: entry.messages }));
  }

  close(): void {
    this.closed = true;
    for (const entry of this.agents.values()) clearTimeout(entry.timer);
  }

  private add(agent: string, file: ParkedFile, digit: number): void {
    let entry = this.agents.get(agent);
    if (!entry) {
      entry = {
        queues: [new FileQueue(), new FileQueue(), new FileQueue()],
        messages: 0,
        delayMs: PARK_POLL_MS,
        timer: undefined,
      };
      this.agents.set(agent, entry);
    }
    entry.queues[digit].push(file);
    entry.messages += file.count;
    this.total += file.count;
    this.options.metrics.parkedDepth.set(this.total);
    if (!entry.timer && !this.closed) this.schedule(agent, entry);
  }

  private schedule(agent: string, entry: ParkedAgent): void {
    entry.timer = setTimeout(() => this.move(agent, entry), entry.delayMs);
    entry.timer.unref();
  }

  /** Moves what the inbox has room for, oldest of the highest priority first. */
  private move(agent: string, entry: ParkedAgent): void {
    entry.timer = undefined;
    if (this.closed || this.agents.get(agent) !== entry) return;
    const { bus } = this.options;
    const dir = parkDirOf(bus, agent);
    let moved = 0;
    for (;;) {
      const queue = entry.queues.find((files) => files.length > 0);
      if (!queue) break;
      const file = queue.peek();
      let admitted: boolean;
      try {
        admitted = bus.admitParked(agent, join(dir, file.name), file.name, file.count);
      } catch (error) {
        this.logger.warn("cannot move a parked file into its inbox; retried", {
          agent,
          file: file.name,
          error,
        });
        break;
      }
      if (!admitted) break;
      queue.shift();
      entry.messages -= file.count;
      this.total -= file.count;
      moved += file.count;
    }
    this.options.metrics.parkedDepth.set(this.total);
    if (entry.messages === 0) this.agents.delete(agent);
    else {
      entry.delayMs = moved > 0 ? PARK_POLL_MS : Math.min(PARK_POLL_MS_MAX, entry.delayMs * 2);
      this.schedule(agent, entry);
    }
    for (const listener of this.movedListeners) listener(agent, entry.messages);
  }
}

function removeQuietly(path: string): void {
  try {
    rmSync(path, { force: true });
  } catch {
    // Tried again at the next start.
  }
}
