// The receiving side of one agent: claims files from its inbox in delivery order (priority, then
// arrival: a byte-sorted readdir), hands out their messages, and settles them — ack removes the
// claim, nack puts it back (or into dead-letter after deliveriesMax). fs.watch only wakes a waiting
// receive and names what arrived; the inbox is listed again whenever those names may be incomplete
// and at least every rescanIntervalMs, because inotify drops events past its queue limit.
//
// Claims carry their visibility deadline and the claimant's pid in the file name, so any consumer
// can return an expired claim to the inbox, and a new mailbox returns the claims of dead processes
// at once (crashed-consumer recovery, src/bus/recovery.ts).
//
// Everything on the receive path is synchronous: a tmpfs syscall costs a few microseconds, a hop
// through the libuv threadpool and a promise costs more than the file operation itself.

import {
  closeSync,
  constants,
  fstatSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  utimesSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { CfnError, isCfnError } from "../errors.js";
import type { Logger } from "../obs/logger.js";
import type { Bus } from "./bus.js";
import { busIoError, isSystemError, RESOURCE_ERRNOS, withBusIoError } from "./bus-io-error.js";
import { ClaimReader, type ReadProblem } from "./claim-reader.js";
import { wallClockUs } from "./clock.js";
import {
  type DeadLetterCause,
  type DeadLetterContext,
  moveToDeadLetter,
  moveToDeadLetterAfterWrite,
} from "./dead-letter.js";
import {
  decodeFile,
  type Envelope,
  EXPIRES_AT_HEADER,
  encodeBatchFile,
  encodeMessageFile,
} from "./envelope.js";
import { InboxWatch } from "./inbox-watch.js";
import { type AgentPaths, FILE_MODE } from "./layout.js";
import { formatQueuedName, parseQueuedName, type QueuedName, queuedPrefixOf } from "./names.js";
import { recoverClaims, removeDirsIfEmpty, removeStaleTemps } from "./recovery.js";

export interface MailboxOptions {
  /** Refresh the heartbeat every heartbeatIntervalMs while open (default true). */
  heartbeat?: boolean;
  /** Watch the inbox with fs.watch for fast wake-ups (default true); rescans happen regardless. */
  watch?: boolean;
  /**
   * Touch the heartbeat once when the mailbox opens (default true, also with `heartbeat: false`,
   * for hosts that refresh it on their own timer). False: a receiver that does not serve the agent
   * (a one-shot `cfn recv`) leaves its liveness mark alone.
   */
  heartbeatOnOpen?: boolean;
}

export interface ReceiveOptions {
  /** Longest wait for a first message, in ms; 0 (default) returns at once. */
  timeoutMs?: number;
  /** Most messages returned (default 1). */
  max?: number;
  /** Ends the wait when aborted: receive() then returns what it has (an empty array). */
  signal?: AbortSignal;
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
  /** The fields of the queued name it was claimed under. */
  queued: QueuedName;
  /** "P_T_N_UNIQ_" of that name, kept by a requeue. */
  prefix: string;
  /** This delivery's number (queued.deliveries + 1). */
  deliveries: number;
  deadlineMs: number;
  envelopes: Envelope[];
  /** Per message: UNSETTLED, ACKED or REQUEUED. */
  states: number[];
  /** Messages not yet acked or nacked. */
  unsettled: number;
  /** Messages nacked or handed back. */
  requeued: number;
  /** True once at least one requeued message was nacked (counts a delivery) rather than handed back. */
  penalised: boolean;
  lastReason: string | undefined;
  done: boolean;
  /** The visibility deadline passed before settlement; the file went back to the inbox. */
  expired: boolean;
}

/** Shortest interval between two latency observations of one mailbox. */
const LATENCY_SAMPLE_INTERVAL_MS = 1;

/**
 * A change reported while a long sorted listing is still being worked through triggers a rescan
 * (so that a later high-priority file can overtake) only when at most this many names remain, or
 * when the rescan is affordable (rescanAffordable).
 */
const RESCAN_REMAINING_MAX = 64;

/** Messages one drain step claims at once (the deadline is checked before each of them). */
const DRAIN_CLAIM_MAX = 64;

const UNSETTLED = 0;
const ACKED = 1;
const REQUEUED = 2;

const OPEN_WRITE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC;

/**
 * Mailboxes of one process that may hold directory descriptors at once (two each: inbox and
 * claims); further mailboxes claim by path (docs/BUS.md, "Directory descriptors"). Lowered so
 * that they take at most a quarter of the process's descriptor limit (dirFdsMailboxesMax).
 */
export const MAILBOX_DIR_FDS_MAX = 1024;
let mailboxesWithDirFds = 0;
let dirFdsMailboxesLimit: number | undefined;

/**
 * MAILBOX_DIR_FDS_MAX, or fewer where the soft limit on open files (Linux: /proc/self/limits)
 * would leave less than three quarters of it to everything else.
 */
export function dirFdsMailboxesMax(limitsText?: string): number {
  if (limitsText === undefined && dirFdsMailboxesLimit !== undefined) return dirFdsMailboxesLimit;
  let text = limitsText;
  if (text === undefined) {
    try {
      text = readFileSync("/proc/self/limits", "utf8");
    } catch {
      text = "";
    }
  }
  const soft = Number(/^Max open files\s+(\d+)/m.exec(text)?.[1]);
  const limit = Number.isSafeInteger(soft)
    ? Math.min(MAILBOX_DIR_FDS_MAX, Math.floor(soft / 8))
    : MAILBOX_DIR_FDS_MAX;
  if (limitsText === undefined) dirFdsMailboxesLimit = limit;
  return limit;
}

/** Descriptors of a mailbox's inbox and claims directories (FileIo.openDirectory). */
interface DirFds {
  inbox: number;
  claimed: number;
}

/** Mailboxes of this process holding directory descriptors now (for tests and status). */
export function mailboxDirFdsHeld(): number {
  return mailboxesWithDirFds;
}

/** Indexes of the messages whose cfn-expires-at has passed (PROTOCOL.md §6), or undefined. */
function expiredIndexes(envelopes: Envelope[]): number[] | undefined {
  let expired: number[] | undefined;
  let nowMs = 0;
  for (let index = 0; index < envelopes.length; index++) {
    const expiresAt = envelopes[index].headers[EXPIRES_AT_HEADER];
    if (expiresAt === undefined) continue;
    if (nowMs === 0) nowMs = Date.now();
    if (!(Number(expiresAt) <= nowMs)) continue; // not yet, or not a number: no expiry
    if (expired) expired.push(index);
    else expired = [index];
  }
  return expired;
}

function expiryReason(envelope: Envelope): string {
  const expiresAt = Number(envelope.headers[EXPIRES_AT_HEADER]);
  return `expired at ${new Date(expiresAt).toISOString()} (header ${EXPIRES_AT_HEADER})`;
}

export class Mailbox {
  readonly agentId: string;
  readonly paths: AgentPaths;
  private readonly bus: Bus;
  private readonly logger: Logger;
  private readonly deadLetterContext: DeadLetterContext;
  private readonly reader: ClaimReader;
  private readonly watch: InboxWatch;
  /** "<inbox>/" and "<claimed>/": paths are built by one concatenation per file. */
  private readonly inboxPrefix: string;
  private readonly claimedPrefix: string;
  /** "_<deadline>_<pid>.json", the end of the claimed names of the current receiveNow call. */
  private claimSuffix = "";
  /** Sorted inbox names from the last listing and the next one to try. */
  private queue: string[] = [];
  private queueIndex = 0;
  /** The last listing may miss files (recovery returned some, drain asked): list again. */
  private listingStale = true;
  /** Messages of claimed batch files not yet handed out. */
  private readonly ready: Delivery[] = [];
  /** Claims with unsettled messages, by claimed path. */
  private readonly claims = new Map<string, Claim>();
  /** Deadline given to the claims of the current receiveNow call (one clock read per call). */
  private claimDeadlineMs = 0;
  private claimedMessages = 0;
  private lastSweepMs = 0;
  private lastScanMs = 0;
  private lastScanEndMs = 0;
  private lastScanCostMs = 0;
  /** When the watch was last checked against the inbox now at its path (scanInbox). */
  private lastWatchCheckMs = 0;
  /** The descriptors were checked against the paths since the last listing (claimFile). */
  private dirFdsCheckedSinceListing = false;
  private lastLatencySampleUs = 0;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** The inbox and claims directories open for the helper's *At calls; undefined: use paths. */
  private dirFds: DirFds | undefined;

  /** Use Bus.openMailbox. */
  constructor(bus: Bus, agentId: string, options: MailboxOptions = {}) {
    this.bus = bus;
    this.agentId = agentId;
    this.logger = bus.logger.child("mailbox");
    this.paths = bus.layout.agent(agentId);
    this.inboxPrefix = `${this.paths.inbox}/`;
    this.claimedPrefix = `${this.paths.claimed}/`;
    this.reader = new ClaimReader(bus.config.messageBytesMax, bus.io);
    bus.layout.ensureAgent(this.paths, true);
    this.deadLetterContext = {
      paths: this.paths,
      logger: this.logger,
      metrics: bus.metrics,
      busMetrics: bus.busMetrics,
    };
    if (options.heartbeatOnOpen ?? true) this.heartbeat();
    this.sweep(Date.now());
    removeStaleTemps(this.paths);
    // Last of the steps that may throw: a mailbox that fails to open holds no descriptors.
    this.openDirFds();
    this.watch = new InboxWatch(this.paths.inbox, this.logger, options.watch ?? true);
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
      const deliveries = this.take(max, true);
      if (deliveries.length > 0) {
        // A backlog (more names listed than taken, or a full batch): stop inotify for now, two
        // callbacks per file would cost the busy receiver ~10 % of its time. Re-armed when dry.
        if (this.queueIndex < this.queue.length || (deliveries.length === max && max > 1)) this.watch.pause();
        return deliveries;
      }
      if (this.watch.paused) {
        // Re-armed: anything that arrived while unwatched is found by one more listing.
        this.watch.start();
        this.listingStale = true;
        continue;
      }
      const now = Date.now();
      const signal = options.signal;
      if (now >= deadline || signal?.aborted) return deliveries;
      const waitMs = Math.min(deadline - now, this.bus.config.rescanIntervalMs);
      if (!signal) {
        await this.watch.wait(waitMs);
        continue;
      }
      const interrupt = () => this.watch.interrupt();
      signal.addEventListener("abort", interrupt, { once: true });
      try {
        await this.watch.wait(waitMs);
      } finally {
        signal.removeEventListener("abort", interrupt);
      }
    }
  }

  /**
   * Returns up to `max` messages that are available now, without waiting. It lists the inbox
   * rather than trust fs.watch's names, whose events may still be on their way to this process.
   */
  receiveNow(max = 1): Delivery[] {
    return this.take(max, false);
  }

  /**
   * receiveNow for `receive`, which may trust the names fs.watch reported (`trustArrivals`): it
   * waits for the events anyway, so an empty answer costs no readdir on the wake-up path.
   */
  private take(max: number, trustArrivals: boolean): Delivery[] {
    this.assertOpen();
    const out: Delivery[] = [];
    const nowMs = Date.now();
    try {
      this.maybeSweep(nowMs);
      const deadlineMs = nowMs + this.bus.config.visibilityTimeoutMs;
      if (deadlineMs !== this.claimDeadlineMs) {
        this.claimDeadlineMs = deadlineMs;
        this.claimSuffix = `_${deadlineMs}_${process.pid}.json`;
      }
      while (out.length < max && this.ready.length > 0) out.push(this.ready.shift() as Delivery);
      if (out.length < max) this.claimInto(out, max, nowMs, trustArrivals);
    } catch (error) {
      this.takeFailed(out, error);
    } finally {
      if (this.claimedMessages > 0) {
        this.bus.busMetrics.countReceived(this.claimedMessages);
        this.claimedMessages = 0;
      }
    }
    return out;
  }

  /**
   * A step of take() failed after `out` got some messages, or before. A failure of the bus
   * directory (CFN_ERR_BUS_IO) with messages in hand returns them: they are claimed, and left in
   * claimed/ they would wait for the visibility timeout with a delivery counted; the failure comes
   * back on the next call if it persists. Otherwise what was taken is handed back and it throws.
   */
  private takeFailed(out: Delivery[], error: unknown): void {
    const typed = busIoError(error, `receiving for ${this.agentId}`);
    this.listingStale = true;
    if (out.length > 0 && isCfnError(typed, "CFN_ERR_BUS_IO")) {
      this.logger.warn("receive stopped early; handing out what it claimed", {
        agent: this.agentId,
        messages: out.length,
        error: typed,
      });
      return;
    }
    for (const delivery of out) {
      try {
        this.handBack(delivery);
      } catch (handBackError) {
        this.logger.warn("cannot hand a message back; it returns after the visibility timeout", {
          agent: this.agentId,
          error: handBackError,
        });
      }
    }
    throw typed;
  }

  /** Acknowledges processed messages: their file is removed once all its messages are settled. */
  ack(delivery: Delivery | Delivery[]): void {
    if (!Array.isArray(delivery)) {
      this.settleTyped(delivery, undefined, false);
      return;
    }
    // Every one is settled even when one of them fails (a full bus): the first failure is thrown.
    let failure: unknown;
    for (const one of delivery) {
      try {
        this.settleTyped(one, undefined, false);
      } catch (error) {
        failure ??= error;
      }
    }
    if (failure !== undefined) throw failure;
  }

  /**
   * Gives a message back: it is redelivered (to this or another consumer), or moved to dead-letter
   * once it has been delivered deliveriesMax times.
   */
  nack(delivery: Delivery, options: NackOptions = {}): void {
    this.settleTyped(delivery, options.reason ?? "nacked", true);
  }

  /** settle() with a failure of the bus directory as CFN_ERR_BUS_IO. */
  private settleTyped(delivery: Delivery, reason: string | undefined, penalise: boolean): void {
    try {
      this.settle(delivery, reason, penalise);
    } catch (error) {
      throw busIoError(error, `settling a message of ${this.agentId}`);
    }
  }

  /** Refreshes the liveness mark (heartbeat file mtime). Called on a timer while open. */
  heartbeat(): void {
    const now = new Date();
    try {
      utimesSync(this.paths.heartbeat, now, now);
    } catch {
      try {
        const fd = openSync(this.paths.heartbeat, OPEN_WRITE_FLAGS, FILE_MODE);
        try {
          writeSync(fd, `${process.pid}\n`);
        } catch (error) {
          unlinkQuietly(this.paths.heartbeat); // not an empty mark (a full bus): none
          throw error;
        } finally {
          closeSync(fd);
        }
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
   * success, nack on a throw) until the inbox is empty or `timeoutMs` passes. The deadline is
   * checked before each message: a handler already running finishes, and the messages claimed but
   * not yet handled are handed back to the inbox (no delivery counted). Returns the number of
   * messages acked.
   */
  async drain(
    handler: (message: Envelope, delivery: Delivery) => unknown,
    options: { timeoutMs?: number } = {},
  ): Promise<number> {
    const deadline = Date.now() + (options.timeoutMs ?? this.bus.config.visibilityTimeoutMs);
    let acked = 0;
    while (Date.now() < deadline) {
      this.listingStale = true;
      const deliveries = this.receiveNow(DRAIN_CLAIM_MAX);
      if (deliveries.length === 0) break;
      for (const [position, delivery] of deliveries.entries()) {
        if (Date.now() >= deadline) {
          for (const left of deliveries.slice(position)) this.handBack(left);
          return acked;
        }
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
    this.watch.stop();
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    // Every claim is handed back even when one of them fails (a full or read-only tmpfs; it
    // returns after its visibility timeout): the first failure is thrown once all were tried.
    let failure: unknown;
    for (const claim of [...this.claims.values()]) {
      for (let index = 0; index < claim.states.length; index++) {
        if (claim.states[index] !== UNSETTLED) continue;
        claim.states[index] = REQUEUED;
        claim.requeued += 1;
      }
      claim.unsettled = 0;
      try {
        this.finishClaim(claim);
      } catch (error) {
        failure ??= error;
      }
    }
    this.ready.length = 0;
    this.bus.io.flush();
    this.closeDirFds();
    if (failure !== undefined) throw busIoError(failure, `handing back the messages of ${this.agentId}`);
    if (options.removeDirs)
      withBusIoError(`removing the mailbox of ${this.agentId}`, () =>
        removeDirsIfEmpty(this.bus, this.paths),
      );
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
   * Claims files until `out` holds `max` messages or nothing is left. Sources, cheapest first: the
   * sorted listing of the last readdir; when it is used up, the names fs.watch reported since
   * (trusted only when complete: no readdir on the wake-up path); otherwise a new listing.
   */
  private claimInto(out: Delivery[], max: number, nowMs: number, trustArrivals: boolean): void {
    const watch = this.watch;
    // The listing may miss files put back by this mailbox or recovery, or is simply old.
    const listingOld = this.listingStale || nowMs - this.lastScanMs >= this.bus.config.rescanIntervalMs;
    const arrivalsExact = trustArrivals && watch.complete && !listingOld;
    let listed = false;
    let arrivalsTried = false;
    if (
      this.queueIndex < this.queue.length &&
      (listingOld || watch.arrivals.length > 0) &&
      this.rescanAffordable()
    ) {
      this.scanInbox(nowMs);
      listed = true;
    }
    while (out.length < max) {
      if (this.queueIndex >= this.queue.length) {
        if (listed) return;
        if (arrivalsExact && !arrivalsTried) {
          arrivalsTried = true;
          if (this.claimArrivals(out, max)) return;
          continue; // a reported name was gone: list instead
        }
        this.scanInbox(nowMs);
        listed = true;
        if (this.queue.length === 0) return;
      }
      this.claimFile(this.queue[this.queueIndex++], out, max, true);
    }
  }

  /**
   * Claims the names fs.watch reported, in name order, until `out` is full; keeps the rest. False
   * when a reported name was gone already: the watch's events lag behind this mailbox (late
   * events of files it claimed from a listing while working through a backlog, or another
   * consumer won). The remaining names are then dropped and the watch marked incomplete, so the
   * caller lists the inbox instead of trying a run of stale names one by one.
   */
  private claimArrivals(out: Delivery[], max: number): boolean {
    const arrivals = this.watch.arrivals;
    if (arrivals.length === 0) return true;
    if (arrivals.length > 1) arrivals.sort();
    let index = 0;
    while (index < arrivals.length && out.length < max) {
      const name = arrivals[index++];
      if (name.charCodeAt(0) === 46 && name.length <= 2) continue; // "." and ".."
      if (!this.claimFile(name, out, max, false)) {
        this.watch.arrivals = [];
        this.watch.complete = false;
        return false;
      }
    }
    this.watch.arrivals = index === arrivals.length ? [] : arrivals.slice(index);
    return true;
  }

  /**
   * A change-triggered rescan (to let later high-priority files overtake the cached list) is done
   * when the remaining cached list is short, or when at least 10× the last scan's duration has
   * passed: with a deep inbox (a 30,000-entry readdir + sort costs ~30 ms) rescans then take at
   * most ~10 % of the receiver's time instead of dominating it.
   */
  private rescanAffordable(): boolean {
    if (this.queue.length - this.queueIndex <= RESCAN_REMAINING_MAX) return true;
    return performance.now() - this.lastScanEndMs >= this.lastScanCostMs * 10;
  }

  private scanInbox(nowMs: number): void {
    const startMs = performance.now();
    this.listingStale = false;
    this.lastScanMs = nowMs;
    this.dirFdsCheckedSinceListing = false;
    // Names reported before this listing are in it (the watch, when on, started before it).
    this.watch.listed();
    let names: string[];
    try {
      names = readdirSync(this.paths.inbox);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      // Removed under us: the directories are new, so are their descriptors and the watch (the
      // old ones would find nothing, its events would never come).
      this.bus.layout.ensureAgent(this.paths, true);
      this.openDirFds();
      this.watch.restart();
      this.lastWatchCheckMs = nowMs;
      names = [];
    }
    if (nowMs - this.lastWatchCheckMs >= this.bus.config.rescanIntervalMs) {
      // The inbox may have been replaced by another process (removed and created again) while
      // this mailbox did not look: without this the receiver would only poll from then on.
      this.lastWatchCheckMs = nowMs;
      if (this.watch.replaced()) {
        this.watch.restart();
        this.listingStale = true;
      }
    }
    if (names.length > 1) names.sort();
    this.queue = names;
    this.queueIndex = 0;
    this.lastScanEndMs = performance.now();
    this.lastScanCostMs = this.lastScanEndMs - startMs;
  }

  /**
   * Claims one inbox file by rename and hands out its messages (into `out` up to `max`, the rest of
   * a batch into `ready`). Losing the race to another consumer is normal.
   */
  /** False only when the file was gone (another consumer won, or a stale name); else true. */
  private claimFile(fileName: string, out: Delivery[], max: number, fromListing: boolean): boolean {
    const inboxPath = this.inboxPrefix + fileName;
    const queued = parseQueuedName(fileName);
    if (!queued) {
      this.deadLetter(inboxPath, fileName, "foreign", "file name does not follow the protocol", 0);
      return true;
    }
    if (queued.deliveries >= this.bus.config.deliveriesMax) {
      const reason = `already delivered ${queued.deliveries} times`;
      this.deadLetter(inboxPath, fileName, "deliveries_exhausted", reason, queued.deliveries);
      return true;
    }
    const deliveries = queued.deliveries + 1;
    const deadlineMs = this.claimDeadlineMs;
    const prefix = queuedPrefixOf(fileName);
    const claimedName = `${prefix}${deliveries}${this.claimSuffix}`;
    const claimedPath = this.claimedPrefix + claimedName;
    let text: string | ReadProblem | null;
    try {
      text = this.claimTextChecked(fileName, inboxPath, claimedName, claimedPath, queued.count, fromListing);
    } catch (error) {
      return this.claimFailed(error, fileName, inboxPath, claimedName, claimedPath, deliveries);
    }
    if (text === null) return false; // another consumer won
    this.watch.claimed(fileName);
    if (typeof text !== "string") {
      this.deadLetter(claimedPath, claimedName, text.cause, text.reason, deliveries);
      return true;
    }
    const decoded = decodeFile(text, queued.count);
    if (!decoded.ok) {
      this.deadLetter(claimedPath, claimedName, "malformed", decoded.reason, deliveries);
      return true;
    }
    const envelopes = decoded.envelopes;
    for (let index = 0; index < envelopes.length; index++) {
      if (envelopes[index].to !== this.agentId) {
        const reason = `addressed to ${envelopes[index].to}`;
        this.deadLetter(claimedPath, claimedName, "misaddressed", reason, deliveries);
        return true;
      }
    }
    // A sender may say when a message stops being of use (a task past its round's deadline): it is
    // not delivered after that.
    const expired = expiredIndexes(envelopes);
    if (expired && expired.length === envelopes.length) {
      this.deadLetter(claimedPath, claimedName, "expired", expiryReason(envelopes[expired[0]]), deliveries);
      return true;
    }
    const claim: Claim = {
      path: claimedPath,
      fileName: claimedName,
      queued,
      prefix,
      deliveries,
      deadlineMs,
      envelopes,
      states: envelopes.length === 1 ? [UNSETTLED] : new Array<number>(envelopes.length).fill(UNSETTLED),
      unsettled: envelopes.length,
      requeued: 0,
      penalised: false,
      lastReason: undefined,
      done: false,
      expired: false,
    };
    if (expired) this.deadLetterExpiredPart(claim, expired);
    this.claims.set(claimedPath, claim);
    this.claimedMessages += claim.unsettled;
    this.maybeObserveLatency(envelopes[0]);
    for (let index = 0; index < envelopes.length; index++) {
      if (claim.states[index] !== UNSETTLED) continue;
      const delivery: Delivery = { message: envelopes[index], deliveries, claim, index };
      if (out.length < max) out.push(delivery);
      else this.ready.push(delivery);
    }
    return true;
  }

  /**
   * claimText, and once per listing, when a name the listing just found is gone, a check of the
   * directory descriptors: usually another consumer of this inbox won, but the directories may
   * have been replaced under the descriptors (removed and created again). Checked once per listing
   * (a name fs.watch reported may be the late event of a file claimed already, and competing
   * consumers lose often). If so: open the new ones, watch the new inbox, and try once more.
   */
  private claimTextChecked(
    fileName: string,
    inboxPath: string,
    claimedName: string,
    claimedPath: string,
    count: number,
    fromListing: boolean,
  ): string | ReadProblem | null {
    const text = this.claimText(fileName, inboxPath, claimedName, claimedPath, count);
    if (text !== null || !fromListing || !this.dirFds || this.dirFdsCheckedSinceListing) return text;
    this.dirFdsCheckedSinceListing = true;
    if (this.dirFdsCurrent(this.dirFds)) return text;
    this.openDirFds();
    this.watch.restart();
    this.listingStale = true;
    return this.claimText(fileName, inboxPath, claimedName, claimedPath, count);
  }

  /**
   * The claim of `fileName` threw. A failed rename left it in the inbox: CFN_ERR_BUS_IO. A failed
   * open or read after the rename: when the process or system is out of something (descriptors,
   * memory: RESOURCE_ERRNOS) the file is fine, so it goes back to the inbox under its queued name
   * (no delivery counted) and the failure is thrown as CFN_ERR_BUS_IO; otherwise the file itself
   * cannot be read (bad input) and is dead-lettered. Returns true (the name was dealt with).
   */
  private claimFailed(
    error: unknown,
    fileName: string,
    inboxPath: string,
    claimedName: string,
    claimedPath: string,
    deliveries: number,
  ): boolean {
    if (!isSystemError(error)) throw error;
    const operation = `claiming ${fileName} for ${this.agentId}`;
    if (error.syscall === "rename") throw busIoError(error, operation);
    if (RESOURCE_ERRNOS.has(error.code as string)) {
      try {
        renameSync(claimedPath, inboxPath);
        this.listingStale = true;
      } catch (backError) {
        this.logger.warn("cannot put a claim back; it returns after the visibility timeout", {
          agent: this.agentId,
          file: claimedName,
          error: backError,
        });
      }
      throw busIoError(error, operation);
    }
    this.watch.claimed(fileName);
    this.deadLetter(claimedPath, claimedName, "foreign", `cannot be read: ${error.message}`, deliveries);
    return true;
  }

  /** The claim of one file, through the directory descriptors when held, else by path. */
  private claimText(
    fileName: string,
    inboxPath: string,
    claimedName: string,
    claimedPath: string,
    count: number,
  ): string | ReadProblem | null {
    const dirs = this.dirFds;
    if (dirs === undefined) return this.reader.claim(inboxPath, claimedPath, count);
    return this.reader.claimAt(dirs.inbox, fileName, dirs.claimed, claimedName, claimedPath, count);
  }

  /**
   * Opens (again) the descriptors of the inbox and claims directories, when the helper offers the
   * *At calls and the process is under MAILBOX_DIR_FDS_MAX. A failure only means paths are used.
   */
  private openDirFds(): void {
    this.closeDirFds();
    if (this.closed || mailboxesWithDirFds >= dirFdsMailboxesMax()) return;
    let inbox = -1;
    try {
      inbox = this.bus.io.openDirectory(this.paths.inbox);
      if (inbox < 0) return;
      const claimed = this.bus.io.openDirectory(this.paths.claimed);
      this.dirFds = { inbox, claimed };
      mailboxesWithDirFds++;
    } catch (error) {
      if (inbox >= 0) closeQuietly(inbox);
      this.logger.debug("cannot open the mailbox's directories; claiming by path", {
        agent: this.agentId,
        error,
      });
    }
  }

  private closeDirFds(): void {
    const dirs = this.dirFds;
    if (dirs === undefined) return;
    this.dirFds = undefined;
    mailboxesWithDirFds--;
    closeQuietly(dirs.inbox);
    closeQuietly(dirs.claimed);
  }

  /**
   * True while the descriptors still name the directories at the mailbox's paths. Checked only
   * after a claim found nothing (usually another consumer won), so it costs nothing on the hot path.
   */
  private dirFdsCurrent(dirs: DirFds): boolean {
    try {
      for (const [fd, path] of [
        [dirs.inbox, this.paths.inbox],
        [dirs.claimed, this.paths.claimed],
      ] as const) {
        const held = fstatSync(fd);
        if (held.nlink === 0) return false; // removed
        const named = statSync(path);
        if (named.ino !== held.ino || named.dev !== held.dev) return false; // moved away, replaced
      }
      return true;
    } catch {
      return false;
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
    this.bus.busMetrics.observeLatency(Math.max(0, nowUs - envelope.ts) / 1e6);
  }

  /**
   * Moves a file to dead-letter. A failure (a read-only bus) is logged, never thrown: one bad file
   * must not stop the receiver from reaching the good ones behind it. The file then stays where it
   * is (in claimed/ it returns after its visibility timeout) and is tried again later.
   */
  private deadLetter(
    path: string,
    fileName: string,
    cause: DeadLetterCause,
    reason: string,
    deliveries: number,
  ): void {
    try {
      moveToDeadLetter(
        this.deadLetterContext,
        path,
        fileName,
        cause,
        reason,
        deliveries,
        this.bus.uniqueNames.next(),
      );
    } catch (error) {
      this.logger.warn("cannot move a file to dead-letter; it is tried again later", {
        agent: this.agentId,
        file: fileName,
        cause,
        reason,
        error,
      });
    }
  }

  // ---- settling -------------------------------------------------------------------------------

  /** Returns an unprocessed message to the inbox without counting a delivery (as close() does). */
  private handBack(delivery: Delivery): void {
    const claim = delivery.claim;
    if (claim.expired || claim.done || claim.states[delivery.index] !== UNSETTLED) return;
    claim.states[delivery.index] = REQUEUED;
    claim.requeued += 1;
    claim.unsettled -= 1;
    if (claim.unsettled === 0) this.finishClaim(claim);
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
      claim.requeued += 1;
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
    if (claim.requeued === 0) {
      this.unlinkClaim(claim);
      return;
    }
    const requeue = claim.envelopes.filter((_, index) => claim.states[index] === REQUEUED);
    const deliveries = claim.deliveries;
    const config = this.bus.config;
    if (claim.penalised && deliveries >= config.deliveriesMax) {
      const reason = `delivered ${deliveries} times (deliveriesMax ${config.deliveriesMax}); last: ${claim.lastReason ?? "nacked"}`;
      if (requeue.length === claim.envelopes.length) {
        this.deadLetter(claim.path, claim.fileName, "deliveries_exhausted", reason, deliveries);
        return;
      }
      let fileName: string;
      try {
        fileName = this.writeRemainder(this.paths.dead, claim, requeue, deliveries);
      } catch (error) {
        // No room for the remainder (a full bus): the whole file goes, its acked messages too.
        const acked = claim.envelopes.length - requeue.length;
        this.logger.warn("cannot write a batch's remainder; the whole file goes to dead-letter", {
          agent: this.agentId,
          file: claim.fileName,
          acked,
          error,
        });
        const wholeReason = `${reason} (the whole batch: ${acked} of its messages were acked)`;
        this.deadLetter(claim.path, claim.fileName, "deliveries_exhausted", wholeReason, deliveries);
        return;
      }
      moveToDeadLetterAfterWrite(
        this.deadLetterContext,
        fileName,
        "deliveries_exhausted",
        reason,
        deliveries,
      );
      this.unlinkClaim(claim);
      return;
    }
    this.listingStale = true; // it goes back to the inbox: list it again rather than wait for its event
    // Handed back without a nack: the delivery does not count.
    const nextDeliveries = claim.penalised ? deliveries : deliveries - 1;
    this.bus.busMetrics.redeliveries.inc({ cause: claim.penalised ? "nack" : "handed_back" }, requeue.length);
    if (requeue.length === claim.envelopes.length) {
      this.requeueWholeClaim(claim, nextDeliveries);
      return;
    }
    try {
      this.writeRemainder(this.paths.inbox, claim, requeue, nextDeliveries);
    } catch (error) {
      // No room for a new file (a full bus): the whole claim goes back instead, a rename that
      // needs no space. Its acked messages are delivered again (at-least-once), but nothing waits
      // in claimed/ for the visibility timeout with a delivery counted against it.
      this.logger.warn("cannot write a batch's remainder; the whole file goes back to the inbox", {
        agent: this.agentId,
        file: claim.fileName,
        acked: claim.envelopes.length - requeue.length,
        error,
      });
      this.requeueWholeClaim(claim, nextDeliveries);
      return;
    }
    this.unlinkClaim(claim);
  }

  /** Renames a claimed file back into the inbox under its queued name with `deliveries`. */
  private requeueWholeClaim(claim: Claim, deliveries: number): void {
    try {
      renameSync(claim.path, `${this.inboxPrefix}${claim.prefix}${deliveries}.json`);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      this.logger.debug("claim vanished before requeue (visibility timeout)", { file: claim.fileName });
    }
  }

  /**
   * The expired messages of a batch whose others are not: written to dead-letter as a file of their
   * own (cause "expired") and settled in the claim, which hands out the rest. Without room for that
   * file (a full bus) they are delivered with the others: expiry is a sender's hint, and losing a
   * message to a full disk is worse than delivering it late.
   */
  private deadLetterExpiredPart(claim: Claim, expired: number[]): void {
    const envelopes = expired.map((index) => claim.envelopes[index]);
    const reason = expiryReason(envelopes[0]);
    let fileName: string;
    try {
      fileName = this.writeRemainder(this.paths.dead, claim, envelopes, claim.deliveries);
    } catch (error) {
      this.logger.warn("cannot dead-letter the expired part of a batch; it is delivered", {
        agent: this.agentId,
        file: claim.fileName,
        expired: expired.length,
        error,
      });
      return;
    }
    moveToDeadLetterAfterWrite(this.deadLetterContext, fileName, "expired", reason, claim.deliveries);
    for (const index of expired) claim.states[index] = ACKED;
    claim.unsettled -= expired.length;
  }

  /** Writes the requeued part of a batch as a new file (same priority and arrival); returns its name. */
  private writeRemainder(dir: string, claim: Claim, envelopes: Envelope[], deliveries: number): string {
    const fileName = formatQueuedName({
      ...claim.queued,
      count: envelopes.length,
      unique: this.bus.uniqueNames.next(),
      deliveries,
    });
    const tmpPath = join(this.paths.tmp, fileName);
    const text = envelopes.length === 1 ? encodeMessageFile(envelopes[0]) : encodeBatchFile(envelopes);
    try {
      this.bus.io.writeAndRename(tmpPath, join(dir, fileName), text, FILE_MODE);
    } catch (error) {
      unlinkQuietly(tmpPath); // writeAndRename removes it too; a failed open may leave an empty one
      throw error;
    }
    return fileName;
  }

  private unlinkClaim(claim: Claim): void {
    try {
      if (this.dirFds) {
        try {
          this.bus.io.unlinkAt(this.dirFds.claimed, claim.fileName);
          return;
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
          // The claims directory may have been replaced since the claim (another consumer's
          // removal moves late files back into the new one, PROTOCOL.md §10): try its path.
        }
      }
      this.bus.io.unlink(claim.path);
    } catch (error) {
      // The visibility timeout returned it to the inbox meanwhile: it will be delivered again.
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      this.logger.debug("claim vanished before ack (visibility timeout passed)", { path: claim.path });
    }
  }

  // ---- recovery -------------------------------------------------------------------------------

  private maybeSweep(nowMs: number): void {
    if (nowMs - this.lastSweepMs >= this.bus.config.rescanIntervalMs) this.sweep(nowMs);
  }

  /** Returns expired and orphaned claims to the inbox (on open and every rescanIntervalMs). */
  private sweep(nowMs: number): void {
    this.lastSweepMs = nowMs;
    const returned = recoverClaims({
      bus: this.bus,
      paths: this.paths,
      deadLetterContext: this.deadLetterContext,
      ownClaimDeadlineMs: (path) => this.claims.get(path)?.deadlineMs,
      expireOwnClaim: (path) => this.expireOwnClaim(path),
    });
    if (returned) this.listingStale = true;
  }

  /**
   * Our own claim passed its visibility deadline (a handler that hangs or forgot to ack): forget it
   * here, so the file is returned to the inbox like anyone else's; a late ack or nack of its
   * messages is then ignored (the message is delivered again: at-least-once).
   */
  private expireOwnClaim(path: string): void {
    const claim = this.claims.get(path);
    if (!claim) return;
    claim.expired = true;
    this.claims.delete(path);
    for (let index = this.ready.length - 1; index >= 0; index--)
      if (this.ready[index].claim === claim) this.ready.splice(index, 1);
    this.logger.warn("claim passed its visibility timeout before it was settled", {
      agent: this.agentId,
      file: claim.fileName,
    });
  }

  private assertOpen(): void {
    if (this.closed) throw new CfnError("CFN_ERR_CLOSED", `mailbox of ${this.agentId} is closed`);
  }
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {}
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {}
}
