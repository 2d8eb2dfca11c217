// Direct agent-to-agent messages: a `cfn.direct` written straight into the peer's inbox (no
// coordinator on the path), answered by the peer with `cfn.direct.reply` carrying `re` = the id of
// the message answered. Any agent runtime of cfn answers them (lean agents echo the input).

import { randomUUID } from "node:crypto";
import type { Bus } from "../bus/index.js";
import { MESSAGE, type ResultPayload } from "./protocol.js";

export interface DirectOptions {
  /** Wait this long for the reply, ms; 0 sends without waiting. */
  waitMs?: number;
  priority?: "high" | "normal" | "low";
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
  const id = `direct-${randomUUID()}`;
  const waitMs = options.waitMs ?? 5000;
  const mailbox = waitMs > 0 ? bus.openMailbox(from) : undefined;
  try {
    bus.sendSync(from, to, { type: MESSAGE.direct, id, priority: options.priority ?? "normal", payload });
    if (!mailbox) return undefined;
    const deadline = Date.now() + waitMs;
    for (;;) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) return undefined;
      const deliveries = await mailbox.receive({ timeoutMs: remaining, max: 64 });
      let found: ResultPayload | undefined;
      for (const delivery of deliveries) {
        const reply = delivery.message.payload as ResultPayload;
        if (delivery.message.type === MESSAGE.directReply && reply?.re === id) {
          found = reply;
          mailbox.ack(delivery);
        }
        // Anything else stays claimed and is handed back, uncounted, by close().
      }
      if (found) return found;
    }
  } finally {
    mailbox?.close();
  }
}
