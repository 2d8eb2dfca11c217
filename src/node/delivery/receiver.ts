// The receiving half of cross-node delivery: writes forwarded messages into the local bus and
// acknowledges them end to end.
//
// Exactly once into the inbox, with at-least-once transfer underneath:
//  - per sender node, frames carry consecutive sequences of the sender's stream; the receiver
//    keeps a cursor (last sequence written) in its spool and skips what is at or below it;
//  - a frame that starts past cursor+1 (a frame lost on a dropped connection) is not written:
//    the receiver asks for a resync from cursor+1, so order per sender→receiver is kept;
//  - before writing, an intent record names the messages about to be written; after a crash
//    the receiver looks for them in the inboxes (tmpfs outlives the process) and moves the
//    cursor past those that landed, so a retransmission does not write them twice;
//  - on top, a window of recent (agent, message id) pairs drops a message re-sent under another
//    sequence (a sender that re-spooled it, an agent retrying with the same id).
// INBOX_FULL stops a batch where it is: the cursor covers what was written, the rest comes again
// after the sender's ack timeout (backpressure reaches the sending node, nothing is dropped).

import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Bus, OutgoingMessage } from "../../bus/index.js";
import { isCfnError } from "../../errors.js";
import type { Logger } from "../../obs/logger.js";
import type { Transport } from "../../transport/index.js";
import type { NodeMetrics } from "../node-metrics.js";
import type { DeliverySpool } from "./spool.js";
import { DELIVER_CHANNEL, type DeliveryFrame, type WireMessage } from "./wire.js";

export interface ReceiverOptions {
  bus: Bus;
  spool: DeliverySpool;
  transport: Transport;
  logger: Logger;
  metrics: NodeMetrics;
  /** Recent (agent, id) pairs remembered for dedup. */
  dedupWindowMessagesMax: number;
  /** Awaited after messages were written and before they are acknowledged (persistence mirror). */
  onWritten?: (messages: WireMessage[]) => Promise<void> | void;
}

/** Messages written as one group (one intent, one cursor write) when frames queue up. */
const MERGED_MESSAGES_MAX = 4096;

/** Header carrying the original send time (µs) across the hop. */
export const ORIGIN_TS_HEADER = "cfn-origin-ts";
/** Header naming the node that forwarded the message. */
export const VIA_HEADER = "cfn-via";

export class DeliveryReceiver {
  private readonly options: ReceiverOptions;
  private readonly logger: Logger;
  /** Per sender node: frames waiting for the one being written. */
  private readonly chains = new Map<string, Promise<void>>();
  /** Per sender node: frames waiting while one is being written. */
  private readonly queues = new Map<string, Extract<DeliveryFrame, { t: "d" }>[]>();
  private readonly recent = new Map<string, true>();
  private closed = false;

  constructor(options: ReceiverOptions) {
    this.options = options;
    this.logger = options.logger.child("deliver-in");
  }

  /** Settles intents left by a crash: messages found in inboxes count as written. */
  recover(senders: string[]): void {
    for (const from of senders) {
      const intent = this.options.spool.intent(from);
      if (!intent) continue;
      const found = this.idsInInboxes(new Set(intent.targets.map((target) => target.to)));
      let last = intent.first - 1;
      for (const target of intent.targets) {
        if (!found.has(`${target.to}/${target.id}`)) break;
        last++;
      }
      this.logger.info("recovered an interrupted delivery", {
        from,
        stream: intent.stream,
        first: intent.first,
        landed: last - intent.first + 1,
        of: intent.targets.length,
      });
      const cursor = this.options.spool.cursor(from);
      const base = cursor && cursor.stream === intent.stream ? cursor.seq : intent.first - 1;
      void this.options.spool.commitCursor(from, { stream: intent.stream, seq: Math.max(base, last) });
    }
  }

  /** Handles one validated frame from `from` (data frames; acks go to the forwarder). */
  handle(frame: Extract<DeliveryFrame, { t: "d" }>, from: string): void {
    if (this.closed) return;
    // Frames that arrive while a write is in progress wait in a queue and are written together
    // (group commit: one intent, one cursor write, one mirror fsync for all of them).
    const queue = this.queues.get(from);
    if (queue) {
      queue.push(frame);
      return;
    }
    this.queues.set(from, [frame]);
    const running = this.drain(from).catch((error) => {
      this.logger.error("delivery write failed", { from, error });
    });
    this.chains.set(from, running);
  }

  private async drain(from: string): Promise<void> {
    try {
      for (;;) {
        const queue = this.queues.get(from);
        if (!queue || queue.length === 0 || this.closed) return;
        // Merge the contiguous run at the head of the queue into one frame.
        const head = queue.shift() as Extract<DeliveryFrame, { t: "d" }>;
        let merged = head;
        while (queue.length > 0) {
          const next = queue[0];
          if (next.s !== merged.s || next.f !== merged.f + merged.m.length) break;
          if (merged.m.length + next.m.length > MERGED_MESSAGES_MAX) break;
          queue.shift();
          merged = {
            t: "d",
            s: merged.s,
            f: merged.f,
            k: Math.max(merged.k, Math.min(next.k, merged.f - 1)),
            m: [...merged.m, ...next.m],
          };
        }
        await this.write(merged, from);
      }
    } finally {
      this.queues.delete(from);
    }
  }

  async idle(): Promise<void> {
    await Promise.all([...this.chains.values()]);
  }

  close(): void {
    this.closed = true;
  }

  private async write(frame: Extract<DeliveryFrame, { t: "d" }>, from: string): Promise<void> {
    if (this.closed) return;
    const { spool, metrics } = this.options;
    let cursor = spool.cursor(from);
    if (!cursor || cursor.stream !== frame.s) {
      // A stream we never saw (or the sender's spool was recreated): start where the frame starts.
      cursor = { stream: frame.s, seq: frame.f - 1 };
      if (frame.f !== 1)
        this.logger.info("new sender stream mid-sequence", { from, stream: frame.s, first: frame.f });
    }
    const last = frame.f + frame.m.length - 1;
    if (last <= cursor.seq) {
      metrics.duplicates.inc({ reason: "sequence" }, frame.m.length);
      this.sendControl(from, { t: "a", s: frame.s, u: cursor.seq });
      return;
    }
    if (frame.f > cursor.seq + 1 && frame.k >= frame.f - 1) {
      // The sender holds nothing before f: we acknowledged it all, and lost the cursor's last
      // move (an unsynced write lost with the host). Nothing to ask for: continue from f.
      this.logger.warn("delivery cursor behind the sender's acknowledged watermark; skipping ahead", {
        from,
        cursor: cursor.seq,
        acked: frame.k,
      });
      cursor = { stream: frame.s, seq: frame.f - 1 };
    }
    if (frame.f > cursor.seq + 1) {
      metrics.resyncs.inc();
      this.sendControl(from, { t: "r", s: frame.s, e: cursor.seq + 1 });
      return;
    }
    const fresh = frame.m.slice(cursor.seq + 1 - frame.f);
    const firstSeq = cursor.seq + 1;
    await spool.writeIntent(from, {
      stream: frame.s,
      first: firstSeq,
      last,
      targets: fresh.map((m) => ({ to: m.to, id: m.id })),
    });
    let written = 0;
    let full = false;
    const landed: WireMessage[] = [];
    // Consecutive messages from one sender to one agent at one priority go as one batch file.
    let index = 0;
    while (index < fresh.length) {
      const head = fresh[index];
      let end = index + 1;
      const batchMax = this.options.bus.config.batchMessagesMax;
      while (
        end < fresh.length &&
        end - index < batchMax &&
        fresh[end].from === head.from &&
        fresh[end].to === head.to &&
        fresh[end].priority === head.priority
      )
        end++;
      const group = fresh.slice(index, end).filter((message) => !this.seen(message));
      metrics.duplicates.inc({ reason: "message_id" }, end - index - group.length);
      if (group.length > 0) {
        try {
          const outgoing = group.map(toOutgoing);
          if (outgoing.length === 1) this.options.bus.sendSync(head.from, head.to, outgoing[0]);
          else this.options.bus.sendBatchSync(head.from, head.to, outgoing);
          for (const message of group) this.remember(message);
          landed.push(...group);
        } catch (error) {
          if (isCfnError(error, "CFN_ERR_INBOX_FULL")) {
            metrics.inboxFull.inc();
            full = true;
            break;
          }
          // A message the bus can never take (invalid for this bus's limits): counted, skipped,
          // so that it does not block its stream forever.
          metrics.rejected.inc({ reason: isCfnError(error) ? error.code : "error" }, group.length);
          this.logger.warn("forwarded message refused by the local bus; dropped", {
            from,
            to: head.to,
            error,
          });
        }
      }
      written += end - index;
      index = end;
    }
    const newCursor = { stream: frame.s, seq: firstSeq + written - 1 };
    if (landed.length > 0) await this.options.onWritten?.(landed);
    await spool.commitCursor(from, newCursor);
    metrics.delivered.inc(landed.length);
    if (written > 0 || !full) this.sendControl(from, { t: "a", s: frame.s, u: newCursor.seq });
  }

  private seen(message: WireMessage): boolean {
    return this.recent.has(`${message.to}/${message.id}`);
  }

  private remember(message: WireMessage): void {
    this.recent.set(`${message.to}/${message.id}`, true);
    if (this.recent.size > this.options.dedupWindowMessagesMax) {
      const oldest = this.recent.keys().next().value;
      if (oldest !== undefined) this.recent.delete(oldest);
    }
  }

  private sendControl(to: string, frame: DeliveryFrame): void {
    try {
      this.options.transport.sendFrame(to, DELIVER_CHANNEL, frame);
    } catch (error) {
      // The sender will retransmit after its ack timeout and get the ack then.
      this.logger.debug("ack not sent", { to, error });
    }
  }

  /** (agent/id) of every message in the inbox and claimed dirs of `agents` (crash recovery). */
  private idsInInboxes(agents: Set<string>): Set<string> {
    const found = new Set<string>();
    for (const agent of agents) {
      const paths = this.options.bus.layout.agent(agent);
      for (const dir of [paths.inbox, paths.claimed]) {
        let names: string[] = [];
        try {
          names = readdirSync(dir);
        } catch {
          continue;
        }
        for (const name of names) {
          let text: string;
          try {
            text = readFileSync(join(dir, name), "utf8");
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

function toOutgoing(message: WireMessage): OutgoingMessage {
  const headers = { ...message.headers };
  if (Object.keys(headers).length < 62) {
    if (headers[ORIGIN_TS_HEADER] === undefined) headers[ORIGIN_TS_HEADER] = String(message.ts);
  }
  return {
    id: message.id,
    type: message.type,
    priority: message.priority,
    headers,
    payload: message.payload,
  };
}
