// The receiving side of one agent: claims files from its inbox in delivery order (priority, then
// arrival: a byte-sorted readdir), hands out their messages, and settles them — ack removes the
// claim, nack puts it back (or into dead-letter after deliveriesMax). fs.watch only wakes a waiting
// receive; the inbox is always rescanned, on wake-up and on a rescanIntervalMs timer, because
// inotify drops events past its queue limit.
//
// Claims carry their visibility deadline and the claimant's pid in the file name, so any consumer
// can return an expired claim to the inbox, and a new mailbox returns the claims of dead processes
// at once (crashed-consumer recovery).

import {
  closeSync,
  type FSWatcher,
  fstatSync,
  openSync,
  readdirSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  utimesSync,
  watch,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { CfnError } from "../errors.js";
import type { Logger } from "../obs/logger.js";
import type { Bus } from "./bus.js";
import { isProcessAlive, wallClockUs } from "./clock.js";
import { type DeadLetterCause, type DeadLetterContext, moveToDeadLetter } from "./dead-letter.js";
import { decodeFile, type Envelope, encodeBatchFile, encodeMessageFile } from "./envelope.js";
import { type AgentPaths, FILE_MODE } from "./layout.js";
import {
  type ClaimedName,
  claimedNameOf,
  formatQueuedName,
  parseClaimedName,
  parseQueuedName,
} from "./names.js";

export interface MailboxOptions {
  /** Refresh the heartbeat every heartbeatIntervalMs while open (default true). */
  heartbeat?: boolean;
  /** Watch the inbox with fs.watch for fast wake-ups (default true); rescans happen regardless. */
  watch?: boolean;
}

export interface ReceiveOptions {
  /** Longest wait for a first message, in ms; 0 (default) returns at once. */
  timeoutMs?: number;
  /** Most messages returned (default 1). */
  max?: number;
}

/** One message handed to a consumer; settle it with ack or nack. */
export interface Delivery {
  readonly message: Envelope;
  /** Times this message's file has been claimed, 1 on the first delivery. */
  readonly deliveries: number;
  /** @internal */
  readonly claim: Claim;
  /** @internal position of the message in its file */
  readonly index: number;
}

export interface NackOptions {
  /** Why the consumer gave up; kept in the dead-letter reason when deliveries are exhausted. */
  reason?: string;
}

/** @internal A claimed file and the settlement of its messages. */
interface Claim {
  path: string;
  fileName: string;
  name: ClaimedName;
  envelopes: Envelope[];
  /** Per message: UNSETTLED, ACKED or REQUEUED. */
  states: number[];
  /** Messages not yet acked or nacked. */
  unsettled: number;
  /** True once at least one requeued message was nacked (counts a delivery) rather than handed back. */
  penalised: boolean;
  lastReason: string | undefined;
  done: boolean;
  /** The visibility deadline passed before settlement; the file went back to the inbox. */
  expired: boolean;
}

/** Shortest interval between two latency observations of one mailbox. */
const LATENCY_SAMPLE_INTERVAL_MS = 1;

const CLAIMED_SINCE_SCAN_MAX = 4096;

/** Names remembered from fs.watch between scans; past this the next receive rescans instead. */
const ARRIVALS_MAX = 64;

/** Age after which a temp file whose writer cannot be told from its name is removed. */
const STALE_TEMP_AGE_MS = 60_000;

const UNSETTLED = 0;
const ACKED = 1;
const REQUEUED = 2;

/** Largest read buffer a mailbox keeps between reads. */
const READ_BUFFER_BYTES_KEPT = 8 * 1024 * 1024;
/** Extra bytes allowed per message of a batch file for its wrapper. */
const BATCH_OVERHEAD_BYTES = 64;

export class Mailbox {
  readonly agentId: string;
  readonly paths: AgentPaths;
  private readonly bus: Bus;
  private readonly logger: Logger;
  private readonly deadLetterContext: DeadLetterContext;
  /** Sorted inbox names from the last scan and the next one to try. */
  private queue: string[] = [];
  private queueIndex = 0;
  /** Set by fs.watch: something changed in the inbox since the last scan. */
  private inboxChanged = true;
  /** Names fs.watch reported since the last scan (the idle fast path), unless there were too many. */
  private arrivals: string[] = [];
  /** Inbox names this mailbox claimed since its last scan (their departure events are not arrivals). */
  private readonly claimedSinceScan = new Set<string>();
  private arrivalsOverflowed = false;
  /** Messages of claimed batch files not yet handed out. */
  private readonly ready: Delivery[] = [];
  /** Claims with unsettled messages, by claimed path. */
  private readonly claims = new Map<string, Claim>();
  private lastSweepMs = 0;
  private lastScanEndMs = 0;
  private lastLatencySampleUs = 0;
  private lastScanCostMs = 0;
  private watcher: FSWatcher | undefined;
  private watchWanted: boolean;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private wake: (() => void) | undefined;
  private readBuffer: Buffer;
  private closed = false;

  /** Use Bus.openMailbox. */
  constructor(bus: Bus, agentId: string, options: MailboxOptions = {}) {
    this.bus = bus;
    this.agentId = agentId;
    this.logger = bus.logger.child("mailbox");
    this.paths = bus.layout.agent(agentId);
    this.readBuffer = Buffer.allocUnsafe(bus.config.messageBytesMax + 1);
    bus.layout.ensureAgent(this.paths, true);
    this.deadLetterContext = {
      paths: this.paths,
      logger: this.logger,
      metrics: bus.metrics,
      busMetrics: bus.busMetrics,
    };
    this.heartbeat();
    this.recoverClaims();
    this.removeStaleTemps();
    this.watchWanted = options.watch ?? true;
    if (this.watchWanted) this.startWatch();
    if (options.heartbeat ?? true) {
      this.heartbeatTimer = setInterval(() => this.heartbeat(), bus.config.heartbeatIntervalMs);
      this.heartbeatTimer.unref();
    }
  }

  /**
   * Returns up to `max` messages, waiting up to `timeoutMs` for the first. An empty array means the
   * deadline passed. Throws CFN_ERR_CLOSED after close().
   */
  async receive(options: ReceiveOptions = {}): Promise<Delivery[]> {
    const max = options.max ?? 1;
    const deadline = Date.now() + Math.max(0, options.timeoutMs ?? 0);
    for (;;) {
      const deliveries = this.receiveNow(max);
      if (deliveries.length > 0) {
        // A full batch means a backlog: stop inotify for now (two callbacks per file would cost
        // the busy receiver ~10 % of its time); it is re-armed when the inbox runs dry.
        if (deliveries.length === max) this.pauseWatch();
        return deliveries;
      }
      if (this.watchWanted && !this.watcher) {
        // Re-armed: anything that arrived while unwatched is found by one more scan.
        this.startWatch();
        this.inboxChanged = true;
        continue;
      }
      const now = Date.now();
      if (now >= deadline) return deliveries;
      await this.waitForChange(Math.min(deadline - now, this.bus.config.rescanIntervalMs));
    }
  }

  /** Returns up to `max` messages that are available now, without waiting. */
  receiveNow(max = 1): Delivery[] {
    this.assertOpen();
    const out: Delivery[] = [];
    this.maybeSweep();
    let rescanned = false;
    if (this.ready.length === 0 && this.queueIndex >= this.queue.length && this.maybeClaimArrivals()) {
      // Idle fast path: claimed what fs.watch named, no readdir on the wake-up path. The inbox
      // stays marked changed, so the next call rescans and finds anything inotify did not name.
      rescanned = true;
    } else if (this.inboxChanged && this.ready.length < max && this.rescanAffordable()) {
      this.scanInbox();
      rescanned = true;
    }
    while (out.length < max) {
      const next = this.ready.shift();
      if (next) {
        out.push(next);
        continue;
      }
      if (this.queueIndex >= this.queue.length) {
        if (rescanned) break;
        this.scanInbox();
        rescanned = true;
        if (this.queue.length === 0) break;
      }
      this.claimFile(this.queue[this.queueIndex++]);
    }
    return out;
  }

  /** Acknowledges processed messages: their file is removed once all its messages are settled. */
  ack(delivery: Delivery | Delivery[]): void {
    for (const one of Array.isArray(delivery) ? delivery : [delivery]) this.settle(one, undefined, false);
  }

  /**
   * Gives a message back: it is redelivered (to this or another consumer), or moved to dead-letter
   * once it has been delivered deliveriesMax times.
   */
  nack(delivery: Delivery, options: NackOptions = {}): void {
    this.settle(delivery, options.reason ?? "nacked", true);
  }

  /** Refreshes the liveness mark (heartbeat file mtime). Called on a timer while open. */
  heartbeat(): void {
    const now = new Date();
    try {
      utimesSync(this.paths.heartbeat, now, now);
    } catch {
      try {
        writeFileSync(this.paths.heartbeat, `${process.pid}\n`, { mode: FILE_MODE });
      } catch (error) {
        this.logger.warn("heartbeat failed", { agent: this.agentId, error });
      }
    }
  }

  /** Messages held by this mailbox and not yet settled (handed out or waiting in a claimed batch). */
  get unsettledCount(): number {
    let count = 0;
    for (const claim of this.claims.values()) count += claim.unsettled;
    return count;
  }

  /**
   * Graceful shutdown, step 1: processes every message now in the inbox with `handler` (ack on
   * success, nack on a throw) until the inbox is empty or `timeoutMs` passes. Returns the number
   * of messages acked.
   */
  async drain(
    handler: (message: Envelope, delivery: Delivery) => unknown,
    options: { timeoutMs?: number } = {},
  ): Promise<number> {
    const deadline = Date.now() + (options.timeoutMs ?? this.bus.config.visibilityTimeoutMs);
    let acked = 0;
    while (Date.now() < deadline) {
      this.inboxChanged = true;
      const deliveries = this.receiveNow(64);
      if (deliveries.length === 0) break;
      for (const delivery of deliveries) {
        try {
          await handler(delivery.message, delivery);
          this.ack(delivery);
          acked++;
        } catch (error) {
          this.nack(delivery, {
            reason: `handler failed during drain: ${(error as Error)?.message ?? String(error)}`,
          });
        }
      }
    }
    return acked;
  }

  /**
   * Graceful shutdown, step 2: hands every unsettled message back to the inbox (without counting a
   * delivery), stops watching and heartbeating. With `removeDirs`, removes the agent's directories
   * when its inbox and claims are empty — a message that races in is moved back, never lost.
   */
  close(options: { removeDirs?: boolean } = {}): void {
    if (this.closed) return;
    this.closed = true;
    this.watchWanted = false;
    this.watcher?.close();
    this.watcher = undefined;
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.wake?.();
    for (const claim of [...this.claims.values()]) {
      for (let index = 0; index < claim.states.length; index++)
        if (claim.states[index] === UNSETTLED) claim.states[index] = REQUEUED;
      claim.unsettled = 0;
      this.finishClaim(claim);
    }
    this.ready.length = 0;
    if (options.removeDirs) this.removeDirsIfEmpty();
  }

  /**
   * Graceful shutdown in one call: drain with `handler` (when given), then close, handing back what
   * is still held and removing the mailbox's directories if nothing is left in them. Returns the
   * number of messages processed and how many remain queued for a later consumer.
   */
  async shutdown(
    handler?: (message: Envelope, delivery: Delivery) => unknown,
    options: { timeoutMs?: number } = {},
  ): Promise<{ processed: number; remaining: number }> {
    const processed = handler ? await this.drain(handler, options) : 0;
    this.close({ removeDirs: true });
    const remaining = this.bus.agentStatus(this.agentId);
    return { processed, remaining: remaining ? remaining.inboxDepth + remaining.claimed : 0 };
  }

  get isClosed(): boolean {
    return this.closed;
  }

  // ---- claiming -------------------------------------------------------------------------------

  /**
   * A change-triggered rescan (to let later high-priority files overtake the cached list) is done
   * when the remaining cached list is short, or when at least 10× the last scan's duration has
   * passed: with a deep inbox (a 30,000-entry readdir + sort costs ~30 ms) rescans then take at
   * most ~10 % of the receiver's time instead of dominating it.
   */
  private rescanAffordable(): boolean {
    if (this.queue.length - this.queueIndex <= 64) return true;
    return performance.now() - this.lastScanEndMs >= this.lastScanCostMs * 10;
  }

  /**
   * When the receiver was idle (its scanned list is used up), the names fs.watch reported since
   * are all that can have arrived — unless inotify overflowed, which the next rescan covers.
   * Claims them in name order. Returns false when there is nothing to try.
   */
  private maybeClaimArrivals(): boolean {
    if (this.arrivals.length === 0 || this.arrivalsOverflowed) return false;
    const names = this.arrivals.sort();
    this.arrivals = [];
    for (const name of names) {
      const before = this.ready.length;
      if (name.startsWith(".") && name.length <= 2) continue;
      this.claimFileIfPresent(name);
      if (this.ready.length > before && this.ready.length >= 64) break;
    }
    this.queue = [];
    this.queueIndex = 0;
    return true;
  }

  private scanInbox(): void {
    const startMs = performance.now();
    this.inboxChanged = false;
    this.arrivals = [];
    this.arrivalsOverflowed = false;
    this.claimedSinceScan.clear();
    let names: string[];
    try {
      names = readdirSync(this.paths.inbox);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      this.bus.layout.ensureAgent(this.paths, true);
      names = [];
    }
    names.sort();
    this.queue = names;
    this.queueIndex = 0;
    this.lastScanEndMs = performance.now();
    this.lastScanCostMs = this.lastScanEndMs - startMs;
  }

  /**
   * claimFile for a name fs.watch reported. inotify reports our own claims leaving the inbox too;
   * skipping those avoids a failing rename each (Node builds an exception object per failure).
   */
  private claimFileIfPresent(fileName: string): void {
    if (this.claimedSinceScan.has(fileName)) return;
    this.claimFile(fileName);
  }

  /** Claims one inbox file by rename; pushes its messages to `ready`. Losing the race is normal. */
  private claimFile(fileName: string): void {
    const inboxPath = `${this.paths.inbox}/${fileName}`;
    const queued = parseQueuedName(fileName);
    if (!queued) {
      moveToDeadLetter(
        this.deadLetterContext,
        inboxPath,
        fileName,
        "foreign",
        "file name does not follow the protocol",
        0,
        this.bus.uniqueNames.next(),
      );
      return;
    }
    const config = this.bus.config;
    if (queued.deliveries >= config.deliveriesMax) {
      moveToDeadLetter(
        this.deadLetterContext,
        inboxPath,
        fileName,
        "deliveries_exhausted",
        `already delivered ${queued.deliveries} times`,
        queued.deliveries,
        this.bus.uniqueNames.next(),
      );
      return;
    }
    const deadlineMs = Date.now() + config.visibilityTimeoutMs;
    const name: ClaimedName = {
      priority: queued.priority,
      arrivalUs: queued.arrivalUs,
      count: queued.count,
      unique: queued.unique,
      deliveries: queued.deliveries + 1,
      deadlineMs,
      pid: process.pid,
    };
    const claimedName = claimedNameOf(fileName, queued, deadlineMs, process.pid);
    const claimedPath = `${this.paths.claimed}/${claimedName}`;
    try {
      renameSync(inboxPath, claimedPath);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return; // another consumer won
      throw error;
    }
    if (this.claimedSinceScan.size < CLAIMED_SINCE_SCAN_MAX) this.claimedSinceScan.add(fileName);
    const text = this.readClaimed(claimedPath, name.count);
    if (typeof text !== "string") {
      this.deadLetterClaim(claimedPath, claimedName, text.cause, text.reason, name.deliveries);
      return;
    }
    const decoded = decodeFile(text, name.count);
    if (!decoded.ok) {
      this.deadLetterClaim(claimedPath, claimedName, "malformed", decoded.reason, name.deliveries);
      return;
    }
    for (const envelope of decoded.envelopes) {
      if (envelope.to !== this.agentId) {
        this.deadLetterClaim(
          claimedPath,
          claimedName,
          "misaddressed",
          `addressed to ${envelope.to}`,
          name.deliveries,
        );
        return;
      }
    }
    const claim: Claim = {
      path: claimedPath,
      fileName: claimedName,
      name,
      envelopes: decoded.envelopes,
      states:
        decoded.envelopes.length === 1
          ? [UNSETTLED]
          : new Array<number>(decoded.envelopes.length).fill(UNSETTLED),
      unsettled: decoded.envelopes.length,
      penalised: false,
      lastReason: undefined,
      done: false,
      expired: false,
    };
    this.claims.set(claimedPath, claim);
    const metrics = this.bus.busMetrics;
    metrics.received.inc(decoded.envelopes.length);
    this.maybeObserveLatency(decoded.envelopes[0]);
    for (let index = 0; index < decoded.envelopes.length; index++) {
      this.ready.push({ message: decoded.envelopes[index], deliveries: name.deliveries, claim, index });
    }
  }

  /**
   * Send → claim latency, sampled: at most one observation per LATENCY_SAMPLE_INTERVAL_MS per
   * mailbox (a prom-client observe costs ~2 µs, a noticeable share of a 30 µs receive). At light
   * load every message is observed; under load the histogram is a uniform-in-time sample.
   */
  private maybeObserveLatency(envelope: Envelope): void {
    const nowUs = wallClockUs();
    if (nowUs - this.lastLatencySampleUs < LATENCY_SAMPLE_INTERVAL_MS * 1000) return;
    this.lastLatencySampleUs = nowUs;
    this.bus.busMetrics.latency.observe(Math.max(0, nowUs - envelope.ts) / 1e6);
  }

  /**
   * Reads a claimed file, refusing one larger than its messages may be. A single read into a buffer
   * of messageBytesMax + 1 bytes settles most files in three syscalls (open, read, close); only a
   * file that fills the buffer (a batch) costs an fstat and more reads.
   */
  private readClaimed(path: string, count: number): string | { cause: DeadLetterCause; reason: string } {
    const config = this.bus.config;
    const bytesMax =
      count === 1 ? config.messageBytesMax : count * (config.messageBytesMax + BATCH_OVERHEAD_BYTES);
    const fd = openSync(path, "r");
    try {
      let buffer = this.readBuffer;
      let length = readSync(fd, buffer, 0, buffer.length, 0);
      if (length === buffer.length) {
        const size = fstatSync(fd).size;
        if (size > bytesMax)
          return { cause: "oversized", reason: `file of ${size} bytes exceeds ${bytesMax}` };
        if (size >= buffer.length) {
          buffer = Buffer.allocUnsafe(size + 1);
          this.readBuffer.copy(buffer, 0, 0, length);
          if (size + 1 <= READ_BUFFER_BYTES_KEPT) this.readBuffer = buffer;
        }
        for (;;) {
          const read = readSync(fd, buffer, length, buffer.length - length, length);
          if (read === 0) break;
          length += read;
          if (length > bytesMax) return { cause: "oversized", reason: `file exceeds ${bytesMax} bytes` };
          if (length === buffer.length) {
            const bigger = Buffer.allocUnsafe(buffer.length * 2);
            buffer.copy(bigger, 0, 0, length);
            buffer = bigger;
          }
        }
      }
      if (length > bytesMax)
        return { cause: "oversized", reason: `file of ${length} bytes exceeds ${bytesMax}` };
      return buffer.toString("utf8", 0, length);
    } finally {
      closeSync(fd);
    }
  }

  private deadLetterClaim(
    path: string,
    fileName: string,
    cause: DeadLetterCause,
    reason: string,
    deliveries: number,
  ): void {
    moveToDeadLetter(
      this.deadLetterContext,
      path,
      fileName,
      cause,
      reason,
      deliveries,
      this.bus.uniqueNames.next(),
    );
  }

  // ---- settling -------------------------------------------------------------------------------

  /**
   * Our own claim passed its visibility deadline (a handler that hangs or forgot to ack): forget it
   * here, so the file is returned to the inbox like anyone else's; a late ack or nack of its
   * messages is then ignored (the message is delivered again: at-least-once).
   */
  private expireOwnClaim(claim: Claim): void {
    claim.expired = true;
    this.claims.delete(claim.path);
    for (let index = this.ready.length - 1; index >= 0; index--)
      if (this.ready[index].claim === claim) this.ready.splice(index, 1);
    this.logger.warn("claim passed its visibility timeout before it was settled", {
      agent: this.agentId,
      file: claim.fileName,
    });
  }

  private settle(delivery: Delivery, reason: string | undefined, penalise: boolean): void {
    const claim = delivery.claim;
    if (claim?.expired) return;
    if (!claim || claim.done || claim.states[delivery.index] !== UNSETTLED || !this.claims.has(claim.path)) {
      throw new CfnError(
        "CFN_ERR_INVALID_MESSAGE",
        "this delivery is already settled or belongs to another mailbox",
      );
    }
    if (penalise) {
      claim.states[delivery.index] = REQUEUED;
      claim.penalised = true;
      claim.lastReason = reason;
    } else {
      claim.states[delivery.index] = ACKED;
    }
    claim.unsettled -= 1;
    if (claim.unsettled === 0) this.finishClaim(claim);
  }

  /** All messages of a claim are settled: remove it, put it back, or dead-letter what was nacked. */
  private finishClaim(claim: Claim): void {
    claim.done = true;
    this.claims.delete(claim.path);
    const requeue = claim.envelopes.filter((_, index) => claim.states[index] === REQUEUED);
    const deliveries = claim.name.deliveries;
    const exhausted = claim.penalised && deliveries >= this.bus.config.deliveriesMax;
    // Handed back without a nack: the delivery does not count.
    const nextDeliveries = claim.penalised ? deliveries : deliveries - 1;
    if (requeue.length === 0) {
      this.unlinkClaim(claim.path);
      return;
    }
    if (exhausted) {
      const reason = `delivered ${deliveries} times (deliveriesMax ${this.bus.config.deliveriesMax}); last: ${claim.lastReason ?? "nacked"}`;
      if (requeue.length === claim.envelopes.length) {
        this.deadLetterClaim(claim.path, claim.fileName, "deliveries_exhausted", reason, deliveries);
      } else {
        const fileName = this.writeRemainder(this.paths.dead, claim, requeue, deliveries);
        moveToDeadLetterAfterWrite(this.deadLetterContext, fileName, reason, deliveries);
        this.unlinkClaim(claim.path);
      }
      return;
    }
    this.bus.busMetrics.redeliveries.inc({ cause: claim.penalised ? "nack" : "handed_back" }, requeue.length);
    if (requeue.length === claim.envelopes.length) {
      const inboxName = formatQueuedName({ ...claim.name, deliveries: nextDeliveries });
      try {
        renameSync(claim.path, join(this.paths.inbox, inboxName));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
        this.logger.debug("claim vanished before requeue (visibility timeout)", { file: claim.fileName });
      }
      return;
    }
    this.writeRemainder(this.paths.inbox, claim, requeue, nextDeliveries);
    this.unlinkClaim(claim.path);
  }

  /** Writes the requeued part of a batch as a new file (same priority and arrival); returns its name. */
  private writeRemainder(dir: string, claim: Claim, envelopes: Envelope[], deliveries: number): string {
    const ordered = envelopes;
    const fileName = formatQueuedName({
      priority: claim.name.priority,
      arrivalUs: claim.name.arrivalUs,
      count: ordered.length,
      unique: this.bus.uniqueNames.next(),
      deliveries,
    });
    const tmpPath = join(this.paths.tmp, fileName);
    writeFileSync(tmpPath, ordered.length === 1 ? encodeMessageFile(ordered[0]) : encodeBatchFile(ordered), {
      mode: FILE_MODE,
    });
    renameSync(tmpPath, join(dir, fileName));
    return fileName;
  }

  private unlinkClaim(path: string): void {
    try {
      unlinkSync(path);
    } catch (error) {
      // The visibility timeout returned it to the inbox meanwhile: it will be delivered again.
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      this.logger.debug("claim vanished before ack (visibility timeout passed)", { path });
    }
  }

  // ---- recovery -------------------------------------------------------------------------------

  private maybeSweep(): void {
    const now = Date.now();
    if (now - this.lastSweepMs < this.bus.config.rescanIntervalMs) return;
    this.lastSweepMs = now;
    this.recoverClaims();
  }

  /**
   * Returns expired claims (any claimant) and claims of processes that no longer exist (crashed
   * consumers) to the inbox, or to dead-letter after deliveriesMax. Runs on open and every
   * rescanIntervalMs while receiving.
   */
  private recoverClaims(): void {
    let names: string[];
    try {
      names = readdirSync(this.paths.claimed);
    } catch {
      return;
    }
    const now = Date.now();
    for (const fileName of names) {
      const path = join(this.paths.claimed, fileName);
      const own = this.claims.get(path);
      if (own) {
        if (own.name.deadlineMs > now) continue;
        this.expireOwnClaim(own);
      }
      const name = parseClaimedName(fileName);
      if (!name) {
        moveToDeadLetter(
          this.deadLetterContext,
          path,
          fileName,
          "foreign",
          "file name in claimed/ does not follow the protocol",
          0,
          this.bus.uniqueNames.next(),
        );
        continue;
      }
      const expired = name.deadlineMs <= now;
      const crashed = !expired && name.pid !== process.pid && !isProcessAlive(name.pid);
      if (!expired && !crashed) continue;
      if (name.deliveries >= this.bus.config.deliveriesMax) {
        moveToDeadLetter(
          this.deadLetterContext,
          path,
          fileName,
          "deliveries_exhausted",
          `${expired ? "visibility timeout" : "consumer died"} after ${name.deliveries} deliveries`,
          name.deliveries,
          this.bus.uniqueNames.next(),
        );
        continue;
      }
      try {
        renameSync(path, join(this.paths.inbox, formatQueuedName(name)));
        this.bus.busMetrics.redeliveries.inc(
          { cause: expired ? "visibility_timeout" : "consumer_died" },
          name.count,
        );
        this.inboxChanged = true;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      }
    }
  }

  /** Removes files left in tmp/ by processes that died mid-write. */
  private removeStaleTemps(): void {
    let names: string[];
    try {
      names = readdirSync(this.paths.tmp);
    } catch {
      return;
    }
    const now = Date.now();
    for (const fileName of names) {
      const path = join(this.paths.tmp, fileName);
      const pid = pidOfTemp(fileName);
      try {
        if (pid !== undefined) {
          if (pid === process.pid || isProcessAlive(pid)) continue;
        } else if (now - statSync(path).mtimeMs < STALE_TEMP_AGE_MS) {
          continue; // a name we cannot attribute: only remove it once it is clearly abandoned
        }
        unlinkSync(path);
      } catch {}
    }
  }

  private removeDirsIfEmpty(): void {
    if (readdirSafe(this.paths.inbox).length > 0 || readdirSafe(this.paths.claimed).length > 0) return;
    const trash = join(this.bus.dir, `.trash-${this.bus.uniqueNames.next()}`);
    try {
      renameSync(this.paths.dir, trash);
    } catch {
      return;
    }
    this.bus.layout.forgetAgent(this.agentId);
    // A sender may have renamed a message in between: move it back into a fresh mailbox.
    const late = readdirSafe(join(trash, "inbox"));
    const lateClaims = readdirSafe(join(trash, "claimed"));
    const lateDead = readdirSafe(join(trash, "dead"));
    if (late.length + lateClaims.length + lateDead.length > 0) {
      this.bus.layout.ensureAgent(this.paths, true);
      for (const fileName of late)
        renameSync(join(trash, "inbox", fileName), join(this.paths.inbox, fileName));
      for (const fileName of lateClaims)
        renameSync(join(trash, "claimed", fileName), join(this.paths.claimed, fileName));
      for (const fileName of lateDead)
        renameSync(join(trash, "dead", fileName), join(this.paths.dead, fileName));
    }
    rmSync(trash, { recursive: true, force: true });
  }

  // ---- waiting --------------------------------------------------------------------------------

  private pauseWatch(): void {
    if (!this.watcher) return;
    this.watcher.close();
    this.watcher = undefined;
    this.arrivals = [];
    this.arrivalsOverflowed = true; // names seen so far are incomplete until the next scan
  }

  private startWatch(): void {
    try {
      this.watcher = watch(this.paths.inbox, { persistent: false }, (_event, fileName) => {
        this.inboxChanged = true;
        if (typeof fileName === "string" && fileName.length > 0 && this.arrivals.length < ARRIVALS_MAX)
          this.arrivals.push(fileName);
        else this.arrivalsOverflowed = true;
        const wake = this.wake;
        if (wake) wake();
      });
      this.watcher.on("error", (error) => {
        this.logger.warn("inbox watch failed; polling every rescanIntervalMs", {
          agent: this.agentId,
          error,
        });
        this.watcher?.close();
        this.watcher = undefined;
        this.watchWanted = false;
      });
    } catch (error) {
      this.logger.warn("cannot watch inbox; polling every rescanIntervalMs", { agent: this.agentId, error });
      this.watchWanted = false;
    }
  }

  /** Resolves on an inbox change, after `waitMs`, or on close. The timer rescan is the safety net. */
  private waitForChange(waitMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, waitMs);
      const self = this;
      function done(): void {
        clearTimeout(timer);
        if (self.wake === done) self.wake = undefined;
        // A timer wake-up rescans too: inotify may have dropped the event.
        self.inboxChanged = true;
        resolve();
      }
      this.wake = done;
    });
  }

  private assertOpen(): void {
    if (this.closed) throw new CfnError("CFN_ERR_CLOSED", `mailbox of ${this.agentId} is closed`);
  }
}

/** Dead-letters a file already written into dead/ (the remainder of a batch): reason file only. */
function moveToDeadLetterAfterWrite(
  context: DeadLetterContext,
  fileName: string,
  reason: string,
  deliveries: number,
): void {
  const reasonPath = join(context.paths.dead, `${fileName}.reason`);
  const record = {
    cause: "deliveries_exhausted",
    reason,
    deliveries,
    agent: context.paths.agentId,
    at: new Date().toISOString(),
    pid: process.pid,
  };
  writeFileSync(reasonPath, `${JSON.stringify(record)}\n`, { mode: FILE_MODE });
  context.busMetrics.deadLetters.inc({ reason: "deliveries_exhausted" });
  context.logger.warn("message moved to dead-letter", {
    agent: context.paths.agentId,
    file: fileName,
    reason,
  });
}

/** The pid in a temp file's UNIQ field (<host>-<pid>-<random>-<counter>), when readable. */
function pidOfTemp(fileName: string): number | undefined {
  let unique: string | undefined;
  if (fileName.startsWith(".reason.")) unique = fileName.slice(".reason.".length);
  else unique = parseQueuedName(fileName)?.unique;
  if (!unique) return undefined;
  const parts = unique.split("-");
  if (parts.length < 4) return undefined;
  const pid = Number(parts[parts.length - 3]);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
