// The receiving half of cross-node delivery: writes forwarded messages into the local bus and
// acknowledges them end to end.
//
// Exactly once into the inbox, with at-least-once transfer underneath:
//  - per sender node and lane (wire.ts), frames carry consecutive sequences of the sender's
//    stream; the receiver keeps a cursor (last sequence written) and skips what is at or below it;
//  - a frame that starts past cursor+1 (a frame lost on a dropped connection) is not written:
//    the receiver asks for a resync from cursor+1, so order per sender→receiver is kept;
//  - before writing, an intent record names the messages about to be written (ledger.ts, a
//    write(2) on the event loop), and a commit record follows the write (without persistence at
//    once, with it after the durability round); after a crash the receiver looks for an
//    uncommitted intent's messages in the inboxes (tmpfs outlives the process) and moves the
//    cursor past those that landed, so a retransmission does not write them twice;
//  - on top, a window of recent (agent, message id) pairs drops a message re-sent under another
//    sequence (a sender that re-spooled it, an agent retrying with the same id).
// A frame is written synchronously as it arrives (no queue, no promise per frame). Acks are
// batched: one per sender per event-loop turn, or — with persistence — one per group fsync: the
// inbox mirror and the ledger are made durable for everything written so far, then the commit is
// recorded and the ack sent, while later frames keep being written (mirroring is off the path).
// INBOX_FULL parks the agent's messages on this node (park.ts): a batch that does not fit is
// written one message per file, so what fits lands, and the rest for that agent waits in its
// park, moved into the inbox as it has room, while the frame goes on with the other agents'
// messages (an agent with parked messages gets its later ones parked too, so order is kept).
// Where the park is full too, or a write fails, the frame stops there: the cursor covers what was
// written or parked, and the stream from that sender is *held* at the blocked sequence: later frames are dropped without a word (no resync each, which
// made the sender rewind its whole window per frame: a storm of resends), the inbox is polled
// with backoff, and once it has room one resync asks the sender to go on from there (or the
// sender's ack timeout resends first). Backpressure reaches the sending node; nothing is lost.

import { readdirSync } from "node:fs";
import { join } from "node:path";
import { type Span, SpanKind, trace } from "@opentelemetry/api";
import { isBusFailure } from "../../bus/bus-io-error.js";
import type { Bus, ForwardedMessage } from "../../bus/index.js";
import { fileBytesMaxOf, readInboxEntry } from "../../bus/safe-read.js";
import { type CfnError, isCfnError } from "../../errors.js";
import type { Logger } from "../../obs/logger.js";
import type { Transport } from "../../transport/index.js";
import type { NodeMetrics } from "../node-metrics.js";
import { deadLetterRefused } from "./dead-letters.js";
import type { DeliveryLedger } from "./ledger.js";
import { type InboxPark, parkDirOf } from "./park.js";
import { RecentIds } from "./recent-ids.js";
import type { ReceiverCursor } from "./spool.js";
import { endSpansWithError, spanParent, TRACER_NAME } from "./tracing.js";
import {
  DELIVER_CHANNEL,
  type DeliveryFrame,
  laneField,
  laneKey,
  parseLaneKey,
  type WireMessage,
} from "./wire.js";

export interface ReceiverOptions {
  bus: Bus;
  ledger: DeliveryLedger;
  /** Cursors of data dirs written before the ledger existed (read once, for an upgrade). */
  legacyCursor?: (from: string) => ReceiverCursor | undefined;
  transport: Transport;
  logger: Logger;
  metrics: NodeMetrics;
  /** Recent (agent, id) pairs remembered for dedup. */
  dedupWindowMessagesMax: number;
  /**
   * Makes what was written durable before it is acknowledged (persistence: mirror the inboxes of
   * these agents, group-fsynced). Runs off the write path; at most one round at a time.
   */
  onWritten?: (agents: Set<string>) => Promise<void> | void;
  /** Where messages for an agent with a full inbox wait (absent: the stream is held at once). */
  park?: InboxPark;
}

/** Header carrying the original send time (µs) across the hop. */
export const ORIGIN_TS_HEADER = "cfn-origin-ts";
/** Header naming the node that forwarded the message. */
export const VIA_HEADER = "cfn-via";

type DataFrame = Extract<DeliveryFrame, { t: "d" }>;

/**
 * Frames written in one event-loop turn before their ack goes out without waiting for the turn to
 * end (no persistence): a starved receiver reading a long backlog still acks often enough for
 * the sender's ackTimeoutMs.
 */
export const ACK_FRAMES_MAX = 16;
/** A resync for the same sequence is not asked again within this time (frames in flight behind a gap). */
export const RESYNC_REPEAT_MS = 100;
/**
 * A sender asked to pause an agent whose messages are parked stops draining it for this long,
 * unless asked again (PAUSE_REFRESH_MS) or told to go on: a lost "go on" costs at most this.
 */
export const PAUSE_MS = 2_000;
export const PAUSE_REFRESH_MS = 500;
/** A held stream polls the full inbox first after this time, doubling up to the max. */
export const HOLD_POLL_MS = 10;
export const HOLD_POLL_MS_MAX = 250;

/** A sender's stream held at `seq` because `agent`'s inbox was full; polled after `delayMs`. */
interface Hold {
  stream: string;
  seq: number;
  agent: string;
  delayMs: number;
  timer: NodeJS.Timeout;
  /** A poll found room and asked the sender to go on. */
  released: boolean;
}

export class DeliveryReceiver {
  private readonly options: ReceiverOptions;
  private readonly logger: Logger;
  private readonly tracer = trace.getTracer(TRACER_NAME);
  /** Per sender node: the last sequence written into inboxes (ahead of the acknowledged one). */
  private readonly written = new Map<string, ReceiverCursor>();
  /** Per sender node: the written cursor to commit and acknowledge at the next ack round. */
  private readonly toAck = new Map<string, ReceiverCursor>();
  /** Agents with messages written since the last durability round (persistence). */
  private dirtyAgents = new Set<string>();
  private ackScheduled = false;
  private framesSinceAck = 0;
  /** The durability round in progress (persistence), and whether another one is wanted. */
  private round: Promise<void> | undefined;
  private roundAgain = false;
  private readonly recent: RecentIds;
  /**
   * Per agent whose messages this node parks: the sender streams (key: sender node and lane)
   * asked to stop draining it, with the stream id and when they were last asked.
   */
  private readonly pauses = new Map<string, Map<string, { stream: string; askedAtMs: number }>>();
  /**
   * Per sender stream: the hold at a full inbox. A poll that finds room releases it but leaves it
   * here (`timer` cleared) so that a hold again at the same sequence backs off further.
   */
  private readonly holds = new Map<string, Hold>();
  /** Per sender node: the last resync asked (sequence, when). */
  private readonly lastResync = new Map<string, { e: number; atMs: number }>();
  private closed = false;

  constructor(options: ReceiverOptions) {
    this.options = options;
    this.logger = options.logger.child("deliver-in");
    this.recent = new RecentIds(options.dedupWindowMessagesMax);
    options.park?.onMoved((agent, remaining) => this.parkMoved(agent, remaining));
  }

  /**
   * Settles intents left by a crash: the targets were written in order, so everything up to the
   * last one found in an inbox (or claimed) was written — one missing before it was consumed by
   * its agent meanwhile — and nothing after it. With persistence, when the bus outlived the
   * process (`busSurvived`: no host restart), the ledger's written mark counts too (messages
   * consumed at the end of the chain leave nothing to find), and the commit waits for one
   * durability round over the chains' agents: what recovery counts as written is mirrored before
   * anything acknowledges it. Without persistence it commits before returning.
   */
  recover(senders: string[], busSurvived = true): Promise<void> {
    const { ledger, onWritten } = this.options;
    const recovered = new Map<string, ReceiverCursor>();
    const agents = new Set<string>();
    for (const from of senders) {
      const intent = ledger.intent(from);
      if (!intent) continue;
      const targets = new Set(intent.targets.map((target) => target.to));
      for (const agent of targets) agents.add(agent);
      const found = this.idsInInboxes(targets);
      let landedCount = 0;
      intent.targets.forEach((target, index) => {
        if (found.has(`${target.to}/${target.id}`)) landedCount = index + 1;
      });
      // Only under persistence now: a mark from an earlier run with persistence, on a node started
      // without it, could follow a host restart (nothing tells it so).
      const mark = busSurvived && onWritten ? ledger.writtenMark(from) : undefined;
      const marked = mark && mark.stream === intent.stream ? Math.min(mark.seq, intent.last) : 0;
      const last = Math.max(intent.first - 1 + landedCount, marked);
      this.logger.info("recovered an interrupted delivery", {
        from,
        stream: intent.stream,
        first: intent.first,
        landed: last - intent.first + 1,
        of: intent.targets.length,
      });
      const cursor = this.cursorOf(from);
      const base = cursor && cursor.stream === intent.stream ? cursor.seq : intent.first - 1;
      const settled = { stream: intent.stream, seq: Math.max(base, last) };
      this.written.set(from, settled);
      recovered.set(from, settled);
    }
    const commit = () => {
      if (!ledger.isOpen) return;
      for (const [from, cursor] of recovered) ledger.commit(from, cursor);
    };
    if (!onWritten || recovered.size === 0) {
      commit();
      return Promise.resolve();
    }
    return (async () => {
      await Promise.all([onWritten(agents), ledger.sync()]);
      commit();
    })();
  }

  /**
   * Writes one validated data frame from node `from` into the inboxes (acks go out batched).
   * Cursors, intents, holds and acks are per stream: per sender node and lane (laneKey).
   */
  handle(frame: DataFrame, from: string): void {
    // A ledger whose write failed stops the node (it takes no more writes): the frame is dropped
    // unacknowledged, and its sender resends it to the next start.
    if (this.closed || !this.options.ledger.isOpen) return;
    this.write(frame, laneKey(from, frame.l ?? 0));
  }

  /** Resolves when the acknowledgements of everything written so far were sent. */
  async idle(): Promise<void> {
    while (this.ackScheduled || this.round) {
      if (this.round) await this.round;
      else await new Promise((resolve) => setImmediate(resolve));
    }
  }

  close(): void {
    this.closed = true;
    for (const hold of this.holds.values()) clearTimeout(hold.timer);
    this.holds.clear();
  }

  /** Incoming streams held at a full inbox: the sender node, its lane, the agent and sequence. */
  held(): { from: string; lane: number; agent: string; seq: number }[] {
    return [...this.holds]
      .filter(([, hold]) => !hold.released)
      .map(([key, hold]) => {
        const { node, lane } = parseLaneKey(key);
        return { from: node, lane, agent: hold.agent, seq: hold.seq };
      });
  }

  private cursorOf(from: string): ReceiverCursor | undefined {
    let cursor = this.written.get(from);
    if (!cursor) {
      cursor = this.options.ledger.cursor(from) ?? this.options.legacyCursor?.(from);
      if (cursor) this.written.set(from, cursor);
    }
    return cursor;
  }

  private write(frame: DataFrame, from: string): void {
    const { ledger, metrics } = this.options;
    let cursor = this.cursorOf(from);
    if (!cursor || cursor.stream !== frame.s) {
      // A stream we never saw (or the sender's spool was recreated): start at the sender's
      // acknowledged watermark k (it holds nothing at or below it), not where this frame starts:
      // an earlier frame may be on its way still (lost with a connection, resent later), and
      // taking it for a duplicate would lose it. A frame past k + 1 then asks for a resync.
      cursor = { stream: frame.s, seq: Math.min(frame.k, frame.f - 1) };
      if (frame.f !== 1)
        this.logger.info("new sender stream mid-sequence", { from, stream: frame.s, first: frame.f });
    }
    const last = frame.f + frame.m.length - 1;
    if (last <= cursor.seq) {
      metrics.duplicates.inc({ reason: "sequence" }, frame.m.length);
      this.written.set(from, cursor);
      this.scheduleAck(from);
      return;
    }
    if (frame.f > cursor.seq + 1 && frame.k >= frame.f - 1) {
      // The sender holds nothing before f: sequences it reserved and never used before a restart
      // (spool.ts), or we acknowledged them and lost the cursor's last move (an unsynced write
      // lost with the host). Nothing to ask for: continue from f.
      this.logger.info("sender holds nothing before this frame; cursor skips ahead", {
        from,
        cursor: cursor.seq,
        acked: frame.k,
      });
      cursor = { stream: frame.s, seq: frame.f - 1 };
    }
    const hold = this.holds.get(from);
    if (hold && !hold.released && hold.stream === frame.s && hold.seq === cursor.seq + 1) {
      // Held at a full inbox: this frame (at the held sequence or past it) waits for room; the
      // poll asks for it again then.
      metrics.heldFrames.inc();
      return;
    }
    if (frame.f > cursor.seq + 1) {
      this.requestResync(from, frame.s, cursor.seq + 1);
      return;
    }
    const fresh = cursor.seq + 1 === frame.f ? frame.m : frame.m.slice(cursor.seq + 1 - frame.f);
    const firstSeq = cursor.seq + 1;
    ledger.appendIntent(from, {
      stream: frame.s,
      first: firstSeq,
      last,
      targets: fresh.map((m) => ({ to: m.to, id: m.id })),
    });
    const { written, landed, full } = this.writeMessages(fresh, from, frame.s);
    if (written > 0) {
      const moved = { stream: frame.s, seq: firstSeq + written - 1 };
      this.written.set(from, moved);
      // Without persistence the commit follows the frame's write at once (one write(2)), not the
      // batched ack: a crash must not leave the intent of messages their agent has consumed since
      // (recovery cannot tell them from unwritten ones and would write them again). With
      // persistence the commit waits for the durability round; a mark says meanwhile how far the
      // write went, for a crash of the process alone (recover()).
      if (this.options.onWritten) ledger.markWritten(from, moved);
      else ledger.commit(from, moved);
    } else this.written.set(from, cursor);
    metrics.delivered.inc(landed);
    if (full) this.hold(from, frame.s, firstSeq + written, full);
    if (written > 0 || !full) this.scheduleAck(from);
  }

  /**
   * Writes messages that `from`, a node removed from the cluster, handed off (POST /v1/handoff)
   * for agents of this node, as a frame's are: the window of recent ids drops what already landed,
   * a full inbox parks, what the bus refuses is dead-lettered. Returns how many of them (a prefix)
   * were taken, with persistence once the mirror holds them; the rest are offered again.
   */
  async writeHandedOff(messages: WireMessage[], from: string): Promise<number> {
    if (this.closed) return 0;
    const { written, landed } = this.writeMessages(messages, from);
    this.options.metrics.delivered.inc(landed);
    if (written > 0 && this.options.onWritten)
      await this.options.onWritten(new Set(messages.slice(0, written).map((message) => message.to)));
    return written;
  }

  /**
   * Backpressure ahead of the park's bound: `agent`'s messages from `from` were parked (its inbox
   * is full), so `from` is asked to stop draining its local mailbox of `agent` for PAUSE_MS — its
   * backlog then waits on the sending host, and what is in flight already fits the park, which
   * would otherwise fill and hold the whole lane. Asked again at most every PAUSE_REFRESH_MS.
   */
  private askPause(from: string, stream: string, agent: string): void {
    let senders = this.pauses.get(agent);
    if (!senders) {
      senders = new Map();
      this.pauses.set(agent, senders);
    }
    const asked = senders.get(from);
    const now = Date.now();
    if (asked && asked.stream === stream && now - asked.askedAtMs < PAUSE_REFRESH_MS) return;
    if (!asked) this.options.metrics.backpressureAsked.inc();
    senders.set(from, { stream, askedAtMs: now });
    this.sendControl(from, { t: "p", s: stream, a: agent, ms: PAUSE_MS });
  }

  /** After a poll of the park: keeps the senders of `agent` paused while it has parked messages. */
  private parkMoved(agent: string, remaining: number): void {
    const senders = this.pauses.get(agent);
    if (!senders || this.closed) return;
    const now = Date.now();
    for (const [from, asked] of senders) {
      if (remaining > 0 && now - asked.askedAtMs < PAUSE_REFRESH_MS) continue;
      asked.askedAtMs = now;
      this.sendControl(from, { t: "p", s: asked.stream, a: agent, ms: remaining > 0 ? PAUSE_MS : 0 });
    }
    if (remaining === 0) this.pauses.delete(agent);
  }

  /** Asks `from` to send again from `e`, once per RESYNC_REPEAT_MS for the same `e`. */
  private requestResync(from: string, stream: string, e: number, force = false): void {
    const now = Date.now();
    const last = this.lastResync.get(from);
    if (!force && last && last.e === e && now - last.atMs < RESYNC_REPEAT_MS) return;
    this.lastResync.set(from, { e, atMs: now });
    this.options.metrics.resyncs.inc();
    this.sendControl(from, { t: "r", s: stream, e });
  }

  /** Holds `from`'s stream at `seq` until `agent`'s inbox has room (polled with backoff). */
  private hold(from: string, stream: string, seq: number, full: { agent: string }): void {
    const previous = this.holds.get(from);
    if (previous) clearTimeout(previous.timer);
    // Held again at the same sequence after a poll found room (a batch larger than the room, a
    // failing disk): back off further instead of starting over.
    const again = previous && previous.stream === stream && previous.seq === seq;
    const delayMs = again ? Math.min(HOLD_POLL_MS_MAX, previous.delayMs * 2) : HOLD_POLL_MS;
    const hold: Hold = {
      stream,
      seq,
      agent: full.agent,
      delayMs,
      timer: undefined as never,
      released: false,
    };
    this.holds.set(from, hold);
    this.schedulePoll(from, hold);
  }

  private schedulePoll(from: string, hold: Hold): void {
    hold.timer = setTimeout(() => this.pollHold(from, hold), hold.delayMs);
    hold.timer.unref();
  }

  private pollHold(from: string, hold: Hold): void {
    if (this.closed || this.holds.get(from) !== hold) return;
    const { park } = this.options;
    let room: boolean;
    try {
      room =
        park && park.messagesOf(hold.agent) > 0
          ? park.room(hold.agent) > 0
          : this.options.bus.inboxDepth(hold.agent) < this.options.bus.config.inboxDepthMax;
    } catch {
      room = true; // the directory went away: let the write say what is wrong
    }
    if (!room) {
      hold.delayMs = Math.min(HOLD_POLL_MS_MAX, hold.delayMs * 2);
      this.schedulePoll(from, hold);
      return;
    }
    hold.released = true;
    this.requestResync(from, hold.stream, hold.seq, true);
  }

  /**
   * Writes messages in order; consecutive ones from one sender to one agent as one batch file.
   * Messages for an agent whose inbox is full are parked (park.ts), and so are the later ones for
   * an agent with parked messages; `full` names the agent where the park had no room either.
   */
  private writeMessages(
    fresh: WireMessage[],
    from: string,
    /** The sender's stream (absent for a hand-off): its sender is asked to pause parked agents. */
    stream?: string,
  ): { written: number; landed: number; full: { agent: string } | undefined } {
    const { bus, metrics, park } = this.options;
    const batchMax = bus.config.batchMessagesMax;
    let written = 0;
    let landed = 0;
    let index = 0;
    /** Messages before this index are written one per file (a batch of them was refused). */
    let singlyUntil = -1;
    while (index < fresh.length) {
      const head = fresh[index];
      const parking = park !== undefined && park.messagesOf(head.to) > 0;
      let end = index + 1;
      while (
        (parking || index >= singlyUntil) &&
        end < fresh.length &&
        end - index < batchMax &&
        fresh[end].from === head.from &&
        fresh[end].to === head.to &&
        fresh[end].priority === head.priority
      )
        end++;
      const group: WireMessage[] = [];
      const keys: string[] = [];
      /** Index in `fresh` of each message of the group. */
      const at: number[] = [];
      for (let i = index; i < end; i++) {
        const key = RecentIds.key(fresh[i].to, fresh[i].id);
        if (this.recent.has(key)) continue;
        group.push(fresh[i]);
        keys.push(key);
        at.push(i);
      }
      metrics.duplicates.inc({ reason: "message_id" }, end - index - group.length);
      let toPark = false;
      if (group.length > 0 && parking) toPark = true;
      else if (group.length > 0) {
        const spans = this.startSpans(group, from);
        try {
          if (group.length === 1) this.sendOne(group[0]);
          else
            bus.sendForwardedBatchSync(
              head.from,
              head.to,
              group.map((message) => toOutgoing(message)),
            );
          for (const key of keys) this.recent.add(key);
          landed += group.length;
          this.dirtyAgents.add(head.to);
          if (spans) for (const span of spans) span.end();
        } catch (error) {
          if (spans) endSpansWithError(spans, error);
          if (isCfnError(error, "CFN_ERR_INBOX_FULL")) {
            if (group.length > 1 && index >= singlyUntil) {
              // The batch does not fit: write what does, one message per file.
              singlyUntil = end;
              continue;
            }
            metrics.inboxFull.inc();
            if (!park) return { written, landed, full: { agent: head.to } };
            toPark = true;
          } else if (isBusFailure(error)) {
            // CFN_ERR_BUS_IO (ENOSPC, EMFILE, EIO): not the message's fault. Stop here like a
            // full inbox; the sender resends what was not acknowledged.
            this.logger.warn("inbox write failed; retried on the sender's resend", {
              from,
              to: head.to,
              error,
            });
            return { written, landed, full: { agent: head.to } };
          } else if (group.length > 1) {
            // One message of the batch may be at fault: write them one by one, so that only the
            // one the bus refuses is dead-lettered.
            singlyUntil = end;
            continue;
          } else {
            // A message the bus can never take (invalid for this bus's limits, e.g. a sender with
            // a larger messageBytesMax): dead-lettered with the reason and skipped, so that it
            // does not block its stream forever.
            this.deadLetterRefused(group[0], from, error as CfnError);
          }
        }
      }
      if (toPark) {
        const taken = this.parkGroup(group, keys, from);
        if (taken > 0 && stream !== undefined) this.askPause(from, stream, head.to);
        landed += taken;
        if (taken < group.length) {
          // The park is full too (or failing): the stream is held at the first message not taken.
          written += at[taken] - index;
          return { written, landed, full: { agent: head.to } };
        }
      }
      written += end - index;
      index = end;
    }
    return { written, landed, full: undefined };
  }

  /**
   * Parks `group` (consecutive messages for one agent) as far as its park has room; returns how
   * many it took: parked, or refused by the bus and dead-lettered. Stops at a failing write.
   */
  private parkGroup(group: WireMessage[], keys: string[], from: string): number {
    const park = this.options.park as InboxPark;
    const to = group[0].to;
    let taken = 0;
    while (taken < group.length) {
      const room = park.room(to);
      if (room === 0) break;
      const slice = group.slice(taken, taken + room);
      const { parked, error } = park.park(
        slice[0].from,
        to,
        slice.map((message) => toOutgoing(message)),
      );
      for (let i = taken; i < taken + parked; i++) this.recent.add(keys[i]);
      if (parked > 0) this.dirtyAgents.add(to);
      taken += parked;
      if (error === undefined) continue;
      if (isBusFailure(error)) {
        this.logger.warn("parking failed; retried on the sender's resend", { from, to, error });
        break;
      }
      // A message of that file is refused: the next one alone, without the origin header if that
      // is what pushed it past messageBytesMax, else dead-lettered.
      const message = group[taken];
      let single = park.park(message.from, to, [toOutgoing(message)]);
      if (
        isCfnError(single.error, "CFN_ERR_MESSAGE_TOO_LARGE") &&
        message.headers[ORIGIN_TS_HEADER] === undefined
      )
        single = park.park(message.from, to, [toOutgoing(message, false)]);
      if (single.error !== undefined && isBusFailure(single.error)) break;
      if (single.error === undefined) {
        this.recent.add(keys[taken]);
        this.dirtyAgents.add(to);
      } else this.deadLetterRefused(message, from, single.error as CfnError);
      taken++;
    }
    return taken;
  }

  /**
   * Writes one message; one at the sender's messageBytesMax that the origin header pushes past
   * this bus's limit is written without it (the header is the hop's metadata, the message the
   * sender's: readers enforce the limit on the file, so the owner cannot take more).
   */
  private sendOne(message: WireMessage): void {
    try {
      this.options.bus.sendForwardedSync(message.from, message.to, toOutgoing(message));
    } catch (error) {
      if (!isCfnError(error, "CFN_ERR_MESSAGE_TOO_LARGE") || message.headers[ORIGIN_TS_HEADER] !== undefined)
        throw error;
      this.options.bus.sendForwardedSync(message.from, message.to, toOutgoing(message, false));
    }
  }

  private deadLetterRefused(message: WireMessage, from: string, error: CfnError): void {
    const { bus, metrics } = this.options;
    deadLetterRefused({ bus, metrics, logger: this.logger }, message, `${from}_${message.id}`, error, {
      via: parseLaneKey(from).node,
    });
  }

  /** A span per traced message (a `traceparent` header) around its inbox write; none otherwise. */
  private startSpans(group: WireMessage[], from: string): Span[] | undefined {
    let spans: Span[] | undefined;
    for (const message of group) {
      const parent = spanParent(message.headers);
      if (!parent) continue;
      spans ??= [];
      spans.push(
        this.tracer.startSpan(
          "cfn.delivery.inbox_write",
          {
            kind: SpanKind.CONSUMER,
            attributes: {
              "messaging.message.id": message.id,
              "cfn.agent": message.to,
              "cfn.via": parseLaneKey(from).node,
            },
          },
          parent,
        ),
      );
    }
    return spans;
  }

  // ---- acknowledgements -----------------------------------------------------------------------

  /** Acks go out once per event-loop turn (all frames read in one turn get one ack per sender). */
  private scheduleAck(from: string): void {
    const cursor = this.written.get(from);
    if (cursor) this.toAck.set(from, cursor);
    if (!this.options.onWritten && ++this.framesSinceAck >= ACK_FRAMES_MAX) {
      this.framesSinceAck = 0;
      this.commitAndAck(this.takeAcks());
      return;
    }
    if (this.ackScheduled) return;
    this.ackScheduled = true;
    setImmediate(() => {
      this.ackScheduled = false;
      this.framesSinceAck = 0;
      if (this.options.onWritten) this.startRound();
      else this.commitAndAck(this.takeAcks());
    });
  }

  private takeAcks(): Map<string, ReceiverCursor> {
    const acks = new Map(this.toAck);
    this.toAck.clear();
    return acks;
  }

  private commitAndAck(acks: Map<string, ReceiverCursor>): void {
    // Closed under us (shutdown): no commit, so no ack; the sender resends to the next incarnation.
    if (!this.options.ledger.isOpen) return;
    for (const [from, cursor] of acks) {
      if (this.options.ledger.cursor(from) !== cursor) this.options.ledger.commit(from, cursor);
      this.sendControl(from, { t: "a", s: cursor.stream, u: cursor.seq });
    }
  }

  /**
   * Persistence: one round makes everything written so far durable (mirror and ledger fsync, in
   * parallel), then commits and acks it. Frames arriving meanwhile are written and wait for the next round:
   * the commit record is written only after the mirror holds the messages it covers, so a synced
   * ledger never claims a message the disk does not have.
   */
  private startRound(): void {
    if (this.round) {
      this.roundAgain = true;
      return;
    }
    const acks = this.takeAcks();
    const agents = this.dirtyAgents;
    this.dirtyAgents = new Set();
    this.round = (async () => {
      try {
        // onWritten reads the inboxes synchronously when called, so every file it mirrors was
        // preceded by its intent, and the ledger fsync started after it covers those intents:
        // after a host crash, recovery finds the restored messages and does not write them twice.
        const mirrored = this.options.onWritten?.(agents);
        await Promise.all([mirrored, this.options.ledger.sync()]);
        this.commitAndAck(acks);
      } catch (error) {
        // Not acknowledged: the sender resends after its ack timeout and the next round retries.
        this.logger.error("delivery durability round failed", { error });
        for (const agent of agents) this.dirtyAgents.add(agent);
      }
    })().finally(() => {
      this.round = undefined;
      if (this.roundAgain || this.toAck.size > 0) {
        this.roundAgain = false;
        if (this.toAck.size > 0) this.startRound();
      }
    });
  }

  /** Sends an ack or resync on the stream `key` (the sender node and lane). */
  private sendControl(key: string, frame: DeliveryFrame): void {
    const { node: to, lane } = parseLaneKey(key);
    try {
      this.options.transport.sendFrame(
        to,
        DELIVER_CHANNEL,
        lane === 0 ? frame : { ...frame, ...laneField(lane) },
      );
    } catch (error) {
      // The sender will retransmit after its ack timeout and get the ack then.
      this.logger.debug("ack not sent", { to, error });
    }
  }

  /** (agent/id) of every message in the inbox and claimed dirs of `agents` (crash recovery). */
  private idsInInboxes(agents: Set<string>): Set<string> {
    const found = new Set<string>();
    const { messageBytesMax } = this.options.bus.config;
    for (const agent of agents) {
      const paths = this.options.bus.layout.agent(agent);
      for (const dir of [parkDirOf(this.options.bus, agent), paths.inbox, paths.claimed]) {
        let names: string[] = [];
        try {
          names = readdirSync(dir);
        } catch {
          continue;
        }
        for (const name of names) {
          if (name.startsWith(".")) continue; // a park file never renamed into place: not written
          let text: string;
          try {
            // As a claim reads it (bus/safe-read.ts): a FIFO, symlink or oversized entry holds no
            // message this node wrote (its receiver dead-letters it); never waited on or followed.
            const read = readInboxEntry(join(dir, name), fileBytesMaxOf(name, messageBytesMax));
            if (!read.ok) continue;
            text = read.text;
          } catch {
            continue;
          }
          for (const match of text.matchAll(/"id":"([A-Za-z0-9._:-]{1,128})","from"/g))
            found.add(`${agent}/${match[1]}`);
        }
      }
    }
    return found;
  }
}

function toOutgoing(message: WireMessage, originHeader = true): ForwardedMessage {
  const headers = { ...message.headers };
  if (originHeader && Object.keys(headers).length < 62) {
    if (headers[ORIGIN_TS_HEADER] === undefined) headers[ORIGIN_TS_HEADER] = String(message.ts);
  }
  return {
    id: message.id,
    type: message.type,
    priority: message.priority,
    headers,
    payload: message.payload,
    seq: message.seq,
  };
}
