// Asking a cluster for a round from any node's host: the request goes into `<swarm>.rounds` on the
// local bus (the node forwards it to the leader, where the master runs), and the result comes back
// as `cfn.round.result` into the requester's mailbox — wherever the master is by then (a new leader
// that resumed the round answers the same mailbox).

import type { Bus } from "../bus/index.js";
import { CfnError } from "../errors.js";
import {
  ROUND_REQUEST,
  ROUND_RESULT,
  type RoundRequestPayload,
  roundsAgentId,
} from "./cluster-coordination.js";
import type { RoundResult } from "./master.js";

export interface ClusterRoundOptions {
  /** Longest wait for the result, ms (default: the round's timeoutMs + 30,000). */
  waitMs?: number;
}

/** Sends a round request and waits for its result. CFN_ERR_TIMEOUT when none comes in time. */
export async function requestClusterRound(
  bus: Bus,
  swarm: string,
  request: RoundRequestPayload,
  options: ClusterRoundOptions = {},
): Promise<RoundResult> {
  const mailbox = bus.openMailbox(request.replyTo);
  try {
    bus.sendSync(request.replyTo, roundsAgentId(swarm), {
      type: ROUND_REQUEST,
      id: `${request.roundId}.request`,
      priority: "high",
      payload: request,
    });
    const waitMs = options.waitMs ?? (request.timeoutMs ?? 30_000) + 30_000;
    const deadline = Date.now() + waitMs;
    for (;;) {
      const remaining = deadline - Date.now();
      if (remaining <= 0)
        throw new CfnError("CFN_ERR_TIMEOUT", `no result of round ${request.roundId} within ${waitMs} ms`, {
          roundId: request.roundId,
        });
      const deliveries = await mailbox.receive({ timeoutMs: remaining, max: 16 });
      mailbox.ack(deliveries);
      for (const { message } of deliveries) {
        const payload = message.payload as { roundId?: string; result?: RoundResult; error?: string };
        if (message.type !== ROUND_RESULT || payload?.roundId !== request.roundId) continue;
        if (payload.result) return payload.result;
        throw new CfnError("CFN_ERR_INVALID_MESSAGE", `round ${request.roundId} refused: ${payload.error}`, {
          roundId: request.roundId,
        });
      }
    }
  } finally {
    mailbox.close();
  }
}
