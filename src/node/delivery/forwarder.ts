// The sending half of cross-node delivery.
//
// Agents send to a remote agent exactly as to a local one: `bus.send(from, "worker-7", …)` writes
// into worker-7's directory on the local bus. The node keeps a proxy mailbox open for every local
// directory whose agent lives on another node (by the replicated agent → node map), drains it,
// writes the messages to the spool (durable, in order), removes them from the bus, and streams them
// to the owner node over the transport. A proxy does not wait for the spool write of one batch
// before draining the next (at most PROXY_UNSPOOLED_BATCHES_MAX × batchMessagesMax messages wait for the spool;
// their bus files are removed as each becomes durable, in order). Per destination node and lane (the
// hash of the agent id, wire.ts: a full inbox holds back only its lane) there is one stream with consecutive
// sequences; the owner acknowledges cumulatively; a frame not acknowledged within ackTimeoutMs is
// sent again from the first unacknowledged sequence (go-back-N), and a resync request rewinds to
// the sequence the receiver expects. Messages leave the spool only once acknowledged.

import { type FSWatcher, mkdirSync, watch } from "node:fs";
import { join } from "node:path";
import { type Span, SpanKind, trace } from "@opentelemetry/api";
import { isBusFailure } from "../../bus/bus-io-error.js";
import type { Bus, Delivery, Envelope, Mailbox } from "../../bus/index.js";
import { type CfnError, isCfnError } from "../../errors.js";
import type { Logger } from "../../obs/logger.js";
import type { Transport } from "../../transport/index.js";
import { HANDOFF_CHUNK_MESSAGES_MAX, HANDOFF_RETRY_MS, handOffChunk } from "../handoff.js";
import type { NodeMetrics } from "../node-metrics.js";
import { deadLetterRefused, deadLetterWireMessage } from "./dead-letters.js";
import { exactPayload } from "./exact-payload.js";
import type { DeliverySpool, SpooledMessage } from "./spool.js";
import { spanParent, TRACER_NAME } from "./tracing.js";
import {
  DELIVER_CHANNEL,
  type DeliveryFrame,
  laneField,
  laneKey,
  laneOf,
  parseLaneKey,
  type WireMessage,
} from "./wire.js";

export interface ForwarderOptions {
  nodeId: string;
  bus: Bus;
  spool: DeliverySpool;
  transport: Transport;
  logger: Logger;
  metrics: NodeMetrics;
  /** The node owning an agent by the routing state, or undefined. */
  ownerOf: (agentId: string) => string | undefined;
  /** True while `nodeId` is a member (messages for a removed member are re-routed). */
  isMember: (nodeId: string) => boolean;
  batchMessagesMax: number;
  inflightMessagesMax: number;
  ackTimeoutMs: number;
  proxyScanIntervalMs: number;
  spoolMessagesMax: number;
  /** Bytes of spooled records at which draining pauses (messages can be up to messageBytesMax each). */
  spoolBytesMax?: number;
}

/**
 * Drained messages of one proxy waiting for their spool write before their bus files are removed,
 * in units of batchMessagesMax: a bound on claimed-but-not-durable messages (16 × 512 by default)
 * that keeps the drain going while an fsync (spoolSync, persistence) is in flight — at low rates
 * every message is a batch of its own, so a bound in batches would stall on a slow disk.
 */
export const PROXY_UNSPOOLED_BATCHES_MAX = 16;

/** A paused proxy looks again this often (a pause ends early when the owner says so). */
export const PAUSE_CHECK_MS = 50;

interface StreamItem extends SpooledMessage {
  spooledAtMs: number;
  /** The forward hop of a traced message: from spooling to the owner's ack. */
  span?: Span;
}

/**
 * The outbound stream to one destination node. Its sequences are consecutive but for the gaps a
 * restart leaves (sequences reserved and never used, spool.ts): the items after a gap wait in
 * `later` as runs of their own, and a run goes out once everything before it is acknowledged —
 * its frames then carry the run's start − 1 as the acknowledged watermark `k`, which tells the
 * owner that the sender holds nothing in the gap.
 */
class OutboundStream {
  /** Items before `head` are acknowledged and cleared (undefined) until compact() drops them. */
  items: (StreamItem | undefined)[] = [];
  head = 0;
  /** Runs of consecutive sequences after a gap, oldest first. */
  later: StreamItem[][] = [];
  laterCount = 0;
  /** Highest sequence acknowledged and highest sent. */
  acked = 0;
  sent = 0;
  /**
   * Highest sequence covered by a durable reservation (spool.ts): frames go out only up to it.
   * A sequence the owner may have seen is then never handed out again after a crash of this node
   * (docs/NODE.md, "Cross-node delivery").
   */
  sendableUpTo = 0;
  lastProgressMs = Date.now();
  chunkMax: number;
  retryTimer: NodeJS.Timeout | undefined;
  rerouting = false;
  /** The destination node and lane (`dest` is their key in the spool, laneKey). */
  readonly node: string;
  readonly lane: number;

  constructor(
    readonly dest: string,
    chunkMax: number,
  ) {
    this.chunkMax = chunkMax;
    const { node, lane } = parseLaneKey(dest);
    this.node = node;
    this.lane = lane;
  }

  /** Messages waiting for an ack (every run). */
  get pending(): number {
    return this.items.length - this.head + this.laterCount;
  }

  /** Messages of the run going out now. */
  get activePending(): number {
    return this.items.length - this.head;
  }

  get firstSeq(): number {
    return this.head < this.items.length ? (this.items[this.head] as StreamItem).seq : this.acked + 1;
  }

  push(item: StreamItem): void {
    const run = this.later.length > 0 ? this.later[this.later.length - 1] : undefined;
    const last = run
      ? run[run.length - 1].seq
      : this.activePending > 0
        ? (this.items[this.items.length - 1] as StreamItem).seq
        : undefined;
    if (last !== undefined && item.seq <= last)
      throw new Error(`invariant violated: stream ${this.dest} gets seq ${item.seq} after ${last}`);
    if (last !== undefined && (run || item.seq !== last + 1)) {
      // After a gap, or behind one: a run of its own (or the tail of the last run).
      if (run && item.seq === last + 1) run.push(item);
      else this.later.push([item]);
      this.laterCount++;
      return;
    }
    if (last === undefined) {
      // Everything before was acknowledged (or this is the first item since start).
      this.acked = item.seq - 1;
      if (this.sent < this.acked) this.sent = this.acked;
      if (this.sendableUpTo < this.acked) this.sendableUpTo = this.acked;
    }
    this.items.push(item);
  }

  /** Starts the next run once the current one is acknowledged; true when one started. */
  advance(): boolean {
    if (this.activePending > 0 || this.later.length === 0) return false;
    const run = this.later.shift() as StreamItem[];
    this.laterCount -= run.length;
    this.items = run;
    this.head = 0;
    // The sender holds nothing before the run: the gap was never used, the rest is acknowledged.
    this.acked = run[0].seq - 1;
    if (this.sent < this.acked) this.sent = this.acked;
    if (this.sendableUpTo < this.acked) this.sendableUpTo = this.acked;
    return true;
  }

  /** Items at indexes [start, end) of the pending part (start ≥ head: none of them cleared). */
  pendingSlice(start = this.head, end = this.items.length): StreamItem[] {
    return this.items.slice(Math.max(start, this.head), end) as StreamItem[];
  }

  /**
   * Drops the oldest pending item (acknowledged). Its slot is cleared at once, so an acknowledged
   * message is not kept alive until the next compact() (up to ≈ 2,000 of them at light load).
   */
  shift(): StreamItem {
    const item = this.items[this.head] as StreamItem;
    this.items[this.head] = undefined;
    this.head++;
    return item;
  }

  compact(): void {
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }
}

interface Proxy {
  agentId: string;
  mailbox: Mailbox;
  running: Promise<void>;
  /** Drained messages whose spool write is pending: their claims must not be handed back. */
  unspooled: number;
  /** Settles when the latest batch's spool write did (writes complete in issue order). */
  lastSpooled: Promise<void>;
  stopping: boolean;
  /**
   * The agent left the routing state: its mailbox here only ever held messages passing through
   * (a round's reply mailbox, one per round), so its dirs go when it closes empty.
   */
  removeDirsOnClose: boolean;
}

export class DeliveryForwarder {
  private readonly options: ForwarderOptions;
  private readonly logger: Logger;
  private readonly tracer = trace.getTracer(TRACER_NAME);
  private readonly streams = new Map<string, OutboundStream>();
  private readonly proxies = new Map<string, Proxy>();
  /** Agents whose owner asked for a pause (frame "p"), until when (ms since the epoch). */
  private readonly pausedUntil = new Map<string, number>();
  private scanTimer: NodeJS.Timeout | undefined;
  /** Watches on the bus's shard dirs: a new agent dir is proxied at once, not at the next scan. */
  private readonly shardWatchers: FSWatcher[] = [];
  private scanSoon: NodeJS.Timeout | undefined;
  private retransmitTimer: NodeJS.Timeout | undefined;
  private draining = true;
  private closed = false;

  constructor(options: ForwarderOptions) {
    this.options = options;
    this.logger = options.logger.child("deliver-out");
  }

  /** Loads the spool (messages accepted before a restart go out first) and starts the timers. */
  async start(): Promise<void> {
    const outbound = await this.options.spool.loadOutbound();
    const now = Date.now();
    for (const [dest, items] of outbound) {
      const stream = this.stream(dest);
      for (const item of items) stream.push(Object.assign(item, { spooledAtMs: now }));
      if (items.length > 0) stream.sendableUpTo = Math.max(stream.sendableUpTo, items[items.length - 1].seq);
      this.logger.info("spooled messages resumed", { dest, messages: items.length });
    }
    this.scanTimer = setInterval(() => this.scan(), this.options.proxyScanIntervalMs);
    this.scanTimer.unref();
    this.retransmitTimer = setInterval(
      () => this.retransmitStalled(),
      Math.max(5, Math.floor(this.options.ackTimeoutMs / 4)),
    );
    this.retransmitTimer.unref();
    this.watchShards();
    this.scan();
    for (const dest of this.streams.keys()) this.pump(dest);
  }

  private watchShards(): void {
    const { bus } = this.options;
    for (let shard = 0; shard < bus.layout.shards; shard++) {
      try {
        const dir = join(bus.dir, String(shard));
        mkdirSync(dir, { recursive: true, mode: 0o700 });
        const watcher = watch(dir, () => {
          if (this.scanSoon || this.closed) return;
          this.scanSoon = setTimeout(() => {
            this.scanSoon = undefined;
            this.scan();
          }, 1);
        });
        watcher.on("error", () => undefined);
        this.shardWatchers.push(watcher);
      } catch {
        // the shard dir does not exist yet: the periodic scan covers it
      }
    }
  }

  /** An ack, resync or backpressure pause from `from`. */
  handleControl(frame: Exclude<DeliveryFrame, { t: "d" }>, from: string): void {
    if (frame.s !== this.options.spool.streamId) return; // about a previous incarnation of our spool
    if (frame.t === "p") {
      // The owner parks this agent's messages (its inbox is full): its proxy stops draining the
      // local mailbox, so the agent's backlog waits here, in its bus files, and the other agents
      // of its lane are not held behind it. The owner refreshes the pause while it lasts.
      if (frame.ms === 0) this.pausedUntil.delete(frame.a);
      else {
        if (!this.pausedUntil.has(frame.a)) this.options.metrics.backpressurePauses.inc();
        this.pausedUntil.set(frame.a, Date.now() + frame.ms);
      }
      return;
    }
    const stream = this.streams.get(laneKey(from, frame.l ?? 0));
    if (!stream) return;
    // The owner cannot hold a sequence this node has not reserved (none goes out before): an ack
    // beyond it is an anomaly and must not drop messages waiting for their reservation.
    if (frame.t === "a") {
      this.acknowledge(stream, Math.min(frame.u, stream.sendableUpTo));
    } else {
      // The receiver expects frame.e next. Not an ack of what is before it: with persistence the
      // owner acknowledges a message only once its mirror holds it, and its acks say when.
      if (stream.sent >= frame.e) {
        stream.sent = Math.max(stream.acked, frame.e - 1);
        this.options.metrics.retransmits.inc();
      }
    }
    this.pump(stream.dest);
  }

  /** Looks for local mailboxes of remote agents to drain; re-routes streams of removed members. */
  scan(): void {
    if (this.closed) return;
    const { bus, nodeId } = this.options;
    if (this.draining) {
      for (const agentId of bus.listAgents()) {
        const owner = this.options.ownerOf(agentId);
        const remote = owner !== undefined && owner !== nodeId && this.options.isMember(owner);
        if (remote && !this.proxies.has(agentId)) this.openProxy(agentId);
      }
    }
    for (const [agentId, proxy] of this.proxies) {
      const owner = this.options.ownerOf(agentId);
      if (owner === undefined) proxy.removeDirsOnClose = true;
      if (owner === undefined || owner === nodeId) this.closeProxy(agentId, proxy);
    }
    for (const stream of this.streams.values()) {
      if (stream.pending > 0 && !this.options.isMember(stream.node)) void this.reroute(stream.node, stream);
    }
  }

  /** Stops draining the bus (shutdown): proxies hand their claims back to the inboxes. */
  async stopDraining(): Promise<void> {
    this.draining = false;
    const proxies = [...this.proxies.entries()];
    for (const [agentId, proxy] of proxies) this.closeProxy(agentId, proxy);
    await Promise.all(proxies.map(([, proxy]) => proxy.running));
  }

  /** Drains every proxy inbox once more into the spool (shutdown: hand off to the owner nodes). */
  async drainOnce(): Promise<number> {
    let moved = 0;
    const { bus, nodeId } = this.options;
    for (const agentId of bus.listAgents()) {
      const owner = this.options.ownerOf(agentId);
      if (owner === undefined || owner === nodeId || !this.options.isMember(owner)) continue;
      const mailbox = bus.openMailbox(agentId, { heartbeat: false, heartbeatOnOpen: false, watch: false });
      try {
        for (;;) {
          const deliveries = mailbox.receiveNow(this.options.batchMessagesMax);
          if (deliveries.length === 0) break;
          await this.spoolAndStream(owner, deliveries);
          mailbox.ack(deliveries);
          moved += deliveries.length;
        }
      } finally {
        mailbox.close();
      }
    }
    return moved;
  }

  /** Resolves once every spooled message was acknowledged, or false at the deadline. */
  async flush(deadlineMs: number): Promise<boolean> {
    while (Date.now() < deadlineMs) {
      if (this.pendingTotal() === 0) return true;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return this.pendingTotal() === 0;
  }

  pendingTotal(): number {
    let total = 0;
    for (const stream of this.streams.values()) total += stream.pending;
    return total;
  }

  /**
   * Per destination node (its lanes summed): messages waiting for an ack and how many are sent
   * but unacknowledged; `acked` is the highest sequence acknowledged on any of its lanes.
   */
  status(): { dest: string; pending: number; inflight: number; acked: number }[] {
    const byNode = new Map<string, { dest: string; pending: number; inflight: number; acked: number }>();
    for (const stream of this.streams.values()) {
      const entry = byNode.get(stream.node) ?? { dest: stream.node, pending: 0, inflight: 0, acked: 0 };
      entry.pending += stream.pending;
      entry.inflight += Math.max(0, stream.sent - stream.acked);
      entry.acked = Math.max(entry.acked, stream.acked);
      byNode.set(stream.node, entry);
    }
    return [...byNode.values()].sort((a, b) => (a.dest < b.dest ? -1 : 1));
  }

  /** Agents whose local mailbox this node drains now. */
  proxiedAgents(): string[] {
    return [...this.proxies.keys()].sort();
  }

  /** Agents whose owner node asked this one to stop draining them for now (backpressure). */
  pausedAgents(): string[] {
    const now = Date.now();
    return [...this.pausedUntil]
      .filter(([, until]) => until > now)
      .map(([agent]) => agent)
      .sort();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.scanTimer) clearInterval(this.scanTimer);
    if (this.retransmitTimer) clearInterval(this.retransmitTimer);
    if (this.scanSoon) clearTimeout(this.scanSoon);
    for (const watcher of this.shardWatchers) watcher.close();
    for (const stream of this.streams.values()) if (stream.retryTimer) clearTimeout(stream.retryTimer);
    await this.stopDraining();
  }

  // ---- draining the local bus -----------------------------------------------------------------

  private openProxy(agentId: string): void {
    let mailbox: Mailbox;
    try {
      mailbox = this.options.bus.openMailbox(agentId, { heartbeat: false, heartbeatOnOpen: false });
    } catch (error) {
      this.logger.warn("cannot open a proxy mailbox", { agentId, error });
      return;
    }
    const proxy: Proxy = {
      agentId,
      mailbox,
      running: Promise.resolve(),
      unspooled: 0,
      lastSpooled: Promise.resolve(),
      stopping: false,
      removeDirsOnClose: false,
    };
    this.proxies.set(agentId, proxy);
    proxy.running = this.runProxy(proxy).catch((error) => {
      this.logger.error("proxy mailbox failed", { agentId, error });
      this.closeProxy(agentId, proxy);
    });
  }

  /** Closes a proxy; one spooling a batch closes itself once the batch is acknowledged on the bus. */
  private closeProxy(agentId: string, proxy: Proxy): void {
    if (this.proxies.get(agentId) === proxy) this.proxies.delete(agentId);
    proxy.stopping = true;
    if (proxy.unspooled === 0) this.closeProxyMailbox(proxy);
  }

  /** Closes a stopped proxy's mailbox, removing its dirs when empty if its agent is gone. */
  private closeProxyMailbox(proxy: Proxy): void {
    try {
      proxy.mailbox.close({ removeDirs: proxy.removeDirsOnClose });
    } catch (error) {
      this.logger.warn("could not close the mailbox of a remote agent", { agentId: proxy.agentId, error });
    }
  }

  private async runProxy(proxy: Proxy): Promise<void> {
    const { mailbox, agentId } = proxy;
    while (!proxy.stopping && !mailbox.isClosed) {
      const pausedForMs = (this.pausedUntil.get(agentId) ?? 0) - Date.now();
      if (pausedForMs > 0) {
        await new Promise((resolve) => setTimeout(resolve, Math.min(pausedForMs, PAUSE_CHECK_MS)));
        continue;
      }
      this.pausedUntil.delete(agentId);
      const { spool, spoolMessagesMax, spoolBytesMax = Number.POSITIVE_INFINITY } = this.options;
      if (spool.size >= spoolMessagesMax || spool.bytes >= spoolBytesMax) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        continue;
      }
      if (proxy.unspooled >= PROXY_UNSPOOLED_BATCHES_MAX * this.options.batchMessagesMax) {
        await proxy.lastSpooled;
        continue;
      }
      let deliveries: Delivery[];
      try {
        deliveries = await mailbox.receive({ timeoutMs: 500, max: this.options.batchMessagesMax });
      } catch (error) {
        if (isCfnError(error, "CFN_ERR_CLOSED")) return;
        throw error;
      }
      if (deliveries.length === 0) continue;
      const owner = this.options.ownerOf(agentId);
      if (owner === undefined || owner === this.options.nodeId || !this.options.isMember(owner)) {
        this.closeProxy(agentId, proxy); // hands the claims back: the agent is local or unknown now
        return;
      }
      proxy.unspooled += deliveries.length;
      proxy.lastSpooled = this.spoolAndStream(owner, deliveries).then(
        () => {
          try {
            mailbox.ack(deliveries);
          } catch (error) {
            // The files stay claimed and come back after the visibility timeout; ids dedup them.
            this.logger.warn("proxy could not remove spooled files from the bus", { agentId, error });
          }
        },
        (error) => {
          // Not durable: the claims go back to the inbox when the proxy closes and are drained
          // again (the owner drops what it already has by sequence or message id).
          this.logger.error("spool write failed; the proxy hands its claims back", { agentId, error });
          this.closeProxy(agentId, proxy);
        },
      );
      void proxy.lastSpooled.finally(() => {
        proxy.unspooled -= deliveries.length;
        if (proxy.stopping && proxy.unspooled === 0) this.closeProxyMailbox(proxy);
      });
      // Yield to the event loop after each batch: with a backlog, receive() resolves at once and
      // this loop would otherwise run on microtasks alone, starving the socket (acks from the
      // owner node) and the spool's completions until the unspooled bound is reached.
      await new Promise((resolve) => setImmediate(resolve));
    }
    await proxy.lastSpooled;
  }

  /**
   * Spools and streams at once; resolves when the spool holds the messages. The caller removes the
   * bus files only then, so at every moment a message is in its bus file, in the spool, or in the
   * owner's inbox. (A crash before the write completes re-drains the file; the owner drops the
   * copy by message id.)
   */
  private spoolAndStream(owner: string, deliveries: Delivery[]): Promise<void> {
    return this.spoolAndPush(
      deliveries.map((delivery) => ({
        dest: laneKey(owner, laneOf(delivery.message.to)),
        message: toWire(delivery.message),
      })),
    );
  }

  /**
   * Assigns sequences and pushes the items on their streams in one step (traffic of other proxies
   * to the same owners cannot take sequences in between), lets them go out once reserved, and
   * resolves when the spool holds them.
   */
  private spoolAndPush(items: { dest: string; message: WireMessage }[]): Promise<void> {
    const { spooled, durable, sendable } = this.options.spool.appendNow(items);
    this.options.metrics.spooled.inc(spooled.length);
    const now = Date.now();
    const owners = new Set<string>();
    for (const item of spooled) {
      const stream = this.stream(item.dest);
      stream.push(this.streamItem(item, now));
      owners.add(stream.node);
    }
    for (const owner of owners) this.setSpoolDepth(owner);
    this.releaseWhenReserved(spooled, sendable);
    return durable;
  }

  /**
   * Lets the streams send `spooled` once their sequences are reserved durably: at once when they
   * are (the usual case: blocks are reserved ahead), their message write still pending — a crash
   * then leaves the bus file, drained again under a new sequence and dropped by the owner by
   * message id if it had landed. After a failed reservation they go out all the same (the stream
   * cannot skip them), which leaves only a failing disk with the risk of a reused sequence.
   */
  private releaseWhenReserved(spooled: SpooledMessage[], sendable: Promise<void> | undefined): void {
    if (spooled.length === 0) return;
    const release = () => {
      const last = new Map<string, number>();
      for (const item of spooled) last.set(item.dest, item.seq);
      for (const [dest, seq] of last) {
        const stream = this.streams.get(dest);
        if (!stream) continue;
        if (seq > stream.sendableUpTo) stream.sendableUpTo = seq;
        this.pump(dest);
      }
    };
    if (sendable) sendable.then(release, release);
    else release();
  }

  private streamItem(item: SpooledMessage, now: number): StreamItem {
    const streamItem = item as StreamItem;
    streamItem.spooledAtMs = now;
    const parent = spanParent(item.message.headers);
    if (parent)
      streamItem.span = this.tracer.startSpan(
        "cfn.delivery.forward",
        {
          kind: SpanKind.PRODUCER,
          attributes: {
            "messaging.message.id": item.message.id,
            "cfn.agent": item.message.to,
            "cfn.dest": parseLaneKey(item.dest).node,
          },
        },
        parent,
      );
    return streamItem;
  }

  // ---- streaming to owner nodes ---------------------------------------------------------------

  private stream(dest: string): OutboundStream {
    let stream = this.streams.get(dest);
    if (!stream) {
      stream = new OutboundStream(dest, this.options.batchMessagesMax);
      this.streams.set(dest, stream);
    }
    return stream;
  }

  /** The spool-depth gauge of a destination node: its lanes summed. */
  private setSpoolDepth(node: string): void {
    let pending = 0;
    for (const stream of this.streams.values()) if (stream.node === node) pending += stream.pending;
    this.options.metrics.spoolDepth.set({ dest: node }, pending);
  }

  private pump(dest: string): void {
    const stream = this.streams.get(dest);
    if (!stream || this.closed) return;
    while (stream.activePending > 0 && stream.sent - stream.acked < this.options.inflightMessagesMax) {
      const startIndex = stream.head + (stream.sent + 1 - stream.firstSeq);
      const endIndex = Math.min(
        stream.items.length,
        stream.head + (stream.sendableUpTo + 1 - stream.firstSeq),
      );
      if (startIndex >= endIndex) return;
      const chunk = stream.pendingSlice(startIndex, Math.min(startIndex + stream.chunkMax, endIndex));
      const frame: DeliveryFrame = {
        t: "d",
        s: this.options.spool.streamId,
        f: chunk[0].seq,
        k: stream.acked,
        m: chunk.map((item) => item.message),
        ...laneField(stream.lane),
      };
      let queued: boolean;
      try {
        queued = this.options.transport.sendFrame(stream.node, DELIVER_CHANNEL, frame);
      } catch (error) {
        if (isCfnError(error, "CFN_ERR_FRAME_TOO_LARGE") && chunk.length > 1) {
          stream.chunkMax = Math.max(1, Math.floor(stream.chunkMax / 2));
          continue;
        }
        if (isCfnError(error, "CFN_ERR_FRAME_TOO_LARGE")) {
          // One message no frame can carry. Once everything before it is acknowledged it is
          // dead-lettered here and skipped: the next frame's watermark k tells the owner.
          if (chunk[0].seq !== stream.acked + 1) return; // the ack that lets it go pumps again
          this.deadLetterUnsendable(stream, error);
          continue;
        }
        // Unknown peer (not yet added, or removed): retried by the timer / re-routed by scan().
        this.scheduleRetry(stream, 100);
        return;
      }
      if (!queued) {
        this.scheduleRetry(stream, 5);
        return;
      }
      if (stream.sent - stream.acked === 0) stream.lastProgressMs = Date.now();
      stream.sent = chunk[chunk.length - 1].seq;
    }
  }

  /**
   * The head of `stream` cannot be framed (msgpack made it larger than frameBytesMax): it goes to
   * the dead letters of its agent's directory on this bus, with the reason, and counts as
   * acknowledged — the stream is not blocked by it for good.
   */
  private deadLetterUnsendable(stream: OutboundStream, error: unknown): void {
    const item = stream.items[stream.head] as StreamItem;
    const { message } = item;
    const reason = error instanceof Error ? error.message : String(error);
    try {
      deadLetterWireMessage(this.options.bus, message, "unsendable", `${stream.dest}_${item.seq}`, {
        reason,
        dest: stream.node,
      });
    } catch (writeError) {
      this.logger.error("could not dead-letter an unsendable message", { id: message.id, error: writeError });
    }
    this.logger.error("message too large for any frame; dead-lettered on this node", {
      id: message.id,
      to: message.to,
      dest: stream.node,
      reason,
    });
    this.options.metrics.unsendable.inc();
    this.acknowledge(stream, item.seq, false);
  }

  private scheduleRetry(stream: OutboundStream, delayMs: number): void {
    if (stream.retryTimer || this.closed) return;
    stream.retryTimer = setTimeout(() => {
      stream.retryTimer = undefined;
      this.pump(stream.dest);
    }, delayMs);
    stream.retryTimer.unref();
  }

  /** Forgets what the owner acknowledged up to `upTo` (or what this node gave up: `byOwner` false). */
  private acknowledge(stream: OutboundStream, upTo: number, byOwner = true): void {
    if (upTo <= stream.acked) return;
    const now = Date.now();
    let count = 0;
    let first = 0;
    let last = 0;
    while (stream.head < stream.items.length && (stream.items[stream.head] as StreamItem).seq <= upTo) {
      const item = stream.shift();
      if (byOwner) this.options.metrics.forwardLatency.observe((now - item.spooledAtMs) / 1000);
      item.span?.end();
      if (count === 0) first = item.seq;
      last = item.seq;
      count++;
    }
    stream.acked = upTo;
    if (stream.sent < upTo) stream.sent = upTo;
    stream.lastProgressMs = now;
    stream.compact();
    stream.advance(); // the run after a gap, once the one before it is acknowledged
    if (byOwner) this.options.metrics.forwardAcked.inc(count);
    this.setSpoolDepth(stream.node);
    // The messages this ack released (an ack into a restart's gap covers sequences never spooled).
    if (count === 0) return;
    this.options.spool
      .remove(stream.dest, first, last)
      .catch((error) => this.logger.warn("spool delete failed", { error }));
  }

  /** Go-back-N: a stream whose oldest unacknowledged frame is older than ackTimeoutMs is resent. */
  private retransmitStalled(): void {
    const now = Date.now();
    for (const stream of this.streams.values()) {
      if (stream.sent > stream.acked && now - stream.lastProgressMs > this.options.ackTimeoutMs) {
        stream.sent = stream.acked;
        stream.lastProgressMs = now;
        this.options.metrics.retransmits.inc();
        this.pump(stream.dest);
      } else if (stream.activePending > 0 && stream.sent === stream.acked) {
        this.pump(stream.dest);
      }
    }
  }

  // ---- hand-off by a removed node (docs/NODE.md, "Removing a node") ----------------------------

  /**
   * This node was removed from the cluster, so no member takes its frames any more: its spooled
   * messages go to `deliver` (a member's hand-off API), stream by stream in sequence order, in
   * chunks of at most HANDOFF_CHUNK_MESSAGES_MAX messages and about HANDOFF_CHUNK_BYTES_MAX bytes.
   * `deliver` answers how many of a chunk (a prefix) the member took; those count as acknowledged
   * (their spool records go). A chunk taken in part is offered again after HANDOFF_RETRY_MS (a full
   * inbox on the member); a failing `deliver` ends the hand-off. What is left at `deadlineMs`
   * stays spooled. Returns how many messages were handed off.
   */
  async handOff(deliver: (messages: WireMessage[]) => Promise<number>, deadlineMs: number): Promise<number> {
    let handed = 0;
    streams: for (const stream of [...this.streams.values()]) {
      while (stream.pending > 0 && Date.now() < deadlineMs) {
        if (stream.activePending === 0 && !stream.advance()) break;
        const chunk = handOffChunk(
          stream.pendingSlice(stream.head, stream.head + HANDOFF_CHUNK_MESSAGES_MAX),
          (item) => item.message,
        );
        let taken: number;
        try {
          taken = await deliver(chunk.map((item) => item.message));
        } catch (error) {
          this.logger.error("hand-off failed; the rest stays spooled", { handed, error });
          break streams;
        }
        if (taken > 0) {
          this.acknowledge(stream, chunk[Math.min(taken, chunk.length) - 1].seq, false);
          handed += Math.min(taken, chunk.length);
        }
        if (taken < chunk.length) await new Promise((resolve) => setTimeout(resolve, HANDOFF_RETRY_MS));
      }
    }
    for (const stream of this.streams.values()) this.setSpoolDepth(stream.node);
    await this.options.spool.flush(); // the deletes of what was handed off
    return handed;
  }

  /**
   * Takes over messages a removed node handed off (POST /v1/handoff) for agents this node does not
   * own: spooled and streamed to their owners as if drained here (the owner drops what it already
   * has by message id), or, for an agent the routing state does not place on a member, written
   * into its local directory (forwarded once it registers somewhere, as a local send would be).
   * Returns how many (a prefix) were taken; the spooled ones once the spool holds them.
   */
  async adopt(messages: WireMessage[]): Promise<number> {
    const { spool, spoolMessagesMax, spoolBytesMax = Number.POSITIVE_INFINITY, nodeId } = this.options;
    if (this.closed || spool.size >= spoolMessagesMax || spool.bytes >= spoolBytesMax) return 0;
    const moved: { dest: string; message: WireMessage }[] = [];
    let taken = 0;
    for (const message of messages) {
      const owner = this.options.ownerOf(message.to);
      if (owner !== undefined && owner !== nodeId && this.options.isMember(owner)) {
        moved.push({ dest: laneKey(owner, laneOf(message.to)), message });
      } else {
        if (owner === nodeId) break; // the caller writes those (the receiver's dedup window)
        // Spool what comes before first: the order of one sender's messages holds either way
        // (an unknown agent's messages wait in its local directory).
        if (!this.deliverLocally(message)) break;
      }
      taken++;
    }
    if (moved.length > 0) await this.spoolAndPush(moved);
    return taken;
  }

  /** Messages spooled for a node that left the cluster go to their agents' current owners. */
  private async reroute(dest: string, stream: OutboundStream): Promise<void> {
    if (stream.rerouting) return;
    stream.rerouting = true;
    try {
      await this.rerouteOnce(dest, stream);
    } catch (error) {
      // The spool write failed: the messages stay pending for `dest`; the next scan tries again.
      this.logger.error("re-routing failed; retried at the next scan", { from: dest, error });
    } finally {
      stream.rerouting = false;
    }
  }

  private async rerouteOnce(dest: string, stream: OutboundStream): Promise<void> {
    const items = stream.pendingSlice();
    const moved: { dest: string; message: WireMessage }[] = [];
    let handled = 0;
    for (const item of items) {
      const owner = this.options.ownerOf(item.message.to);
      if (
        owner === undefined ||
        owner === dest ||
        (owner !== this.options.nodeId && !this.options.isMember(owner))
      )
        break;
      if (owner === this.options.nodeId) {
        if (!this.deliverLocally(item.message)) break; // full (or failing): the next scan goes on from here
      } else {
        moved.push({ dest: laneKey(owner, laneOf(item.message.to)), message: item.message });
      }
      handled++;
    }
    if (handled === 0) return;
    const last = items[handled - 1].seq;
    if (moved.length > 0) await this.spoolAndPush(moved); // before the old stream lets go of them
    this.logger.info("re-routed messages of a removed member", { from: dest, messages: handled });
    this.acknowledge(stream, last);
  }

  /**
   * Writes a re-routed message for an agent that moved to this node. False when it must be tried
   * again (a full inbox, a failing disk): the message stays spooled. A message the bus refuses as
   * invalid goes to its agent's dead letters (true): no retry could land it.
   */
  private deliverLocally(message: WireMessage): boolean {
    try {
      this.options.bus.sendForwardedSync(message.from, message.to, {
        id: message.id,
        type: message.type,
        priority: message.priority,
        headers: message.headers,
        payload: message.payload,
        seq: message.seq,
      });
      return true;
    } catch (error) {
      if (!isBusFailure(error) && !isCfnError(error, "CFN_ERR_INBOX_FULL")) {
        const { bus, metrics } = this.options;
        deadLetterRefused({ bus, metrics, logger: this.logger }, message, message.id, error as CfnError, {
          rerouted: true,
        });
        return true;
      }
      this.logger.debug("re-routed message waits for room in the local inbox", { to: message.to, error });
      return false;
    }
  }
}

function toWire(envelope: Envelope): WireMessage {
  return {
    id: envelope.id,
    from: envelope.from,
    to: envelope.to,
    type: envelope.type,
    priority: envelope.priority,
    headers: envelope.headers,
    payload: exactPayload(envelope.payload), // JSON text where msgpack would change it
    ts: envelope.ts,
    seq: envelope.seq,
  };
}
