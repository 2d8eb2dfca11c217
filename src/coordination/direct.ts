// Direct agent-to-agent messages: a `cfn.direct` written straight into the peer's inbox (no
// coordinator on the path), answered by the peer with `cfn.direct.reply` carrying `re` = the id of
// the message answered. Any agent runtime of cfn answers them (lean agents echo the input).
//
// A sender that waits cleans up after itself: the reply mailbox it opened is removed when it
// created it, and on a timeout a message nobody claimed is withdrawn from the peer's inbox (with
// the peer's mailbox, when the send created it), so asking a nonexistent agent leaves nothing.

import { randomUUID } from "node:crypto";
import { unlinkSync } from "node:fs";
import { join } from "node:path";
import type { Bus } from "../bus/index.js";
import { removeDirsIfEmpty } from "../bus/recovery.js";
import { MESSAGE, type ResultPayload } from "./protocol.js";

export interface DirectOptions {
  /** Wait this long for the reply, ms; 0 sends without waiting. */
  waitMs?: number;
  priority?: "high" | "normal" | "low";
  /**
   * Stops the wait when aborted (SIGINT of `cfn agent direct`): the message is withdrawn if nobody
   * claimed it, and the reply mailbox goes as after a timeout.
   */
  signal?: AbortSignal;
}

/** What became of a direct message. */
export interface DirectOutcome {
  reply?: ResultPayload;
  /** No reply in time, and nobody had claimed the message: it was taken back out of the inbox. */
  withdrawn: boolean;
  /** The peer had a mailbox on this bus before the send (an agent that ran or runs there). */
  peerKnown: boolean;
}

/**
 * Sends `payload` from `from` to `to` and, unless waitMs is 0, returns the reply (undefined when
 * none arrived in time). `from` must be a mailbox only this caller reads.
 */
export async function sendDirect(
  bus: Bus,
  from: string,
  to: string,
  payload: unknown,
  options: DirectOptions = {},
): Promise<ResultPayload | undefined> {
  return (await sendDirectMessage(bus, from, to, payload, options)).reply;
}

/** sendDirect, telling also whether an unanswered message was withdrawn and the peer known. */
export async function sendDirectMessage(
  bus: Bus,
  from: string,
  to: string,
  payload: unknown,
  options: DirectOptions = {},
): Promise<DirectOutcome> {
  const id = `direct-${randomUUID()}`;
  const waitMs = options.waitMs ?? 5000;
  const peerKnown = bus.agentStatus(to) !== undefined;
  const replyMailboxExisted = bus.agentStatus(from) !== undefined;
  const mailbox = waitMs > 0 ? bus.openMailbox(from) : undefined;
  try {
    const sent = bus.sendSync(from, to, {
      type: MESSAGE.direct,
      id,
      priority: options.priority ?? "normal",
      payload,
    });
    if (!mailbox) return { withdrawn: false, peerKnown };
    const deadline = Date.now() + waitMs;
    for (;;) {
      const remaining = deadline - Date.now();
      if (remaining <= 0 || options.signal?.aborted)
        return { withdrawn: withdraw(bus, to, sent.file, peerKnown), peerKnown };
      const deliveries = await mailbox.receive({ timeoutMs: remaining, max: 64, signal: options.signal });
      let found: ResultPayload | undefined;
      for (const delivery of deliveries) {
        const reply = delivery.message.payload as ResultPayload;
        if (delivery.message.type === MESSAGE.directReply && reply?.re === id) {
          found = reply;
          mailbox.ack(delivery);
        }
        // Anything else stays claimed and is handed back, uncounted, by close().
      }
      if (found) return { reply: found, withdrawn: false, peerKnown };
    }
  } finally {
    // The reply mailbox goes when this call created it and nothing else arrived in it.
    mailbox?.close({ removeDirs: !replyMailboxExisted });
  }
}

/**
 * Takes an unclaimed message file back out of `to`'s inbox (a claim renames it away first, so
 * the unlink fails then and the message stays with whoever claimed it). When the send created the
 * peer's mailbox and it is empty again, the mailbox goes too.
 */
function withdraw(bus: Bus, to: string, file: string, peerKnown: boolean): boolean {
  const paths = bus.layout.agent(to);
  try {
    unlinkSync(join(paths.inbox, file));
  } catch {
    return false; // claimed: the peer has it
  }
  const status = bus.agentStatus(to);
  // No heartbeat: no agent opened it meanwhile. A message racing in is moved back, never lost.
  if (!peerKnown && status && status.deadLetters === 0 && status.lastSeenMs === null)
    removeDirsIfEmpty(bus, paths);
  return true;
}
