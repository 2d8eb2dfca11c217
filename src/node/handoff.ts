// A removed node's hand-off (docs/NODE.md, "Removed from the cluster"): no member takes its frames
// any more, so what it still holds goes through the members' APIs (POST /v1/handoff) — its spool
// to any member, its last acks to each sender. Used by a running node that learns its removal
// (node.ts) and by `cfn node handoff` on a stopped node's data dir (offline-handoff.ts).

import type { Logger } from "../obs/logger.js";
import { apiRequest } from "./api-client.js";
import type { ReceiverCursor } from "./delivery/spool.js";
import { parseLaneKey, type WireMessage } from "./delivery/wire.js";

/** A removed node hands its spool to a member in chunks of at most this many messages… */
export const HANDOFF_CHUNK_MESSAGES_MAX = 512;
/** …and about this many bytes of JSON (one larger message goes alone). */
export const HANDOFF_CHUNK_BYTES_MAX = 1024 * 1024;
/** A chunk the member took only in part (a full inbox there) is offered again after this. */
export const HANDOFF_RETRY_MS = 200;
/** One hand-off request to a member (a chunk of the spool, or a sender's last acks). */
export const HANDOFF_REQUEST_TIMEOUT_MS = 5_000;
/** One status request when asking the members whether a node is still one of them. */
const STATUS_REQUEST_TIMEOUT_MS = 2_000;

/** Another member's API, as far as the removed node knows it. */
export interface MemberApi {
  id: string;
  apiUrl: string;
}

/** Who hands off: the removed node's id and cluster, and the token the members' APIs take. */
export interface HandOffSender {
  from: string;
  clusterId: string;
  token: string;
  logger: Logger;
}

/**
 * The next chunk of `items` to hand off (taken from the front): at most HANDOFF_CHUNK_MESSAGES_MAX
 * messages and about HANDOFF_CHUNK_BYTES_MAX bytes of JSON; never empty while items are left.
 */
export function handOffChunk<T>(items: Iterable<T>, messageOf: (item: T) => WireMessage): T[] {
  const chunk: T[] = [];
  let bytes = 0;
  for (const item of items) {
    if (chunk.length >= HANDOFF_CHUNK_MESSAGES_MAX) break;
    const size = JSON.stringify(messageOf(item)).length;
    if (chunk.length > 0 && bytes + size > HANDOFF_CHUNK_BYTES_MAX) break;
    chunk.push(item);
    bytes += size;
  }
  return chunk;
}

/**
 * Offers chunks of the spool to the members in turn: each chunk first to the member that took the
 * last one; one that refuses (down, of another cluster, still counting `from` as a member) gives
 * way to the next. `deliver` answers how many (a prefix) the member took and throws once none of
 * them takes any.
 */
export function memberHandOff(
  members: MemberApi[],
  sender: HandOffSender,
): { deliver: (messages: WireMessage[]) => Promise<number>; member: () => string | undefined } {
  let at = 0;
  const deliver = async (messages: WireMessage[]): Promise<number> => {
    for (; at < members.length; at++) {
      try {
        const answer = (await apiRequest(
          members[at].apiUrl,
          "POST",
          "/v1/handoff",
          sender.token,
          { from: sender.from, clusterId: sender.clusterId, messages },
          HANDOFF_REQUEST_TIMEOUT_MS,
        )) as { taken?: unknown };
        if (typeof answer.taken === "number" && Number.isSafeInteger(answer.taken))
          return Math.max(0, Math.min(answer.taken, messages.length));
      } catch (error) {
        sender.logger.warn("member refused the hand-off; trying the next", { member: members[at].id, error });
      }
    }
    throw new Error(`none of ${members.length} known member(s) took the hand-off`);
  };
  return { deliver, member: () => members[at]?.id };
}

/**
 * The last acks: how far the removed node wrote each sender's streams into its inboxes (its
 * ledger's cursors, keyed by lane) go to that sender's API, applied there as ack frames — the
 * sender would otherwise send those messages again to the next node with this id. A sender that is
 * unreachable or still lists `from` (it has not applied the removal yet) is asked again every
 * HANDOFF_RETRY_MS until `deadlineMs`. Answers which senders took them and which did not.
 */
export async function handOffAcks(
  cursors: [string, ReceiverCursor][],
  apis: Map<string, string>,
  sender: HandOffSender,
  deadlineMs: number,
): Promise<{ told: string[]; missed: string[] }> {
  const bySender = new Map<string, { l: number; s: string; u: number }[]>();
  for (const [key, cursor] of cursors) {
    const { node, lane } = parseLaneKey(key);
    bySender.set(node, [...(bySender.get(node) ?? []), { l: lane, s: cursor.stream, u: cursor.seq }]);
  }
  const told: string[] = [];
  const missed: string[] = [];
  await Promise.all(
    [...bySender].map(async ([to, acks]) => {
      const apiUrl = apis.get(to);
      if (apiUrl) {
        while (Date.now() < deadlineMs) {
          try {
            await apiRequest(
              apiUrl,
              "POST",
              "/v1/handoff",
              sender.token,
              { from: sender.from, clusterId: sender.clusterId, acks },
              Math.max(100, Math.min(HANDOFF_REQUEST_TIMEOUT_MS, deadlineMs - Date.now())),
            );
            told.push(to);
            return;
          } catch (error) {
            sender.logger.debug("sender refused the last acks; asked again", { sender: to, error });
            await sleep(Math.min(HANDOFF_RETRY_MS, Math.max(0, deadlineMs - Date.now())));
          }
        }
      }
      missed.push(to);
      sender.logger.warn("last acks not handed to a sender; it may send those messages again", {
        sender: to,
      });
    }),
  );
  return { told: told.sort(), missed: missed.sort() };
}

/**
 * Asks the members' APIs (in turn) whether `sender.from` is still a member: only this cluster's
 * leader can say. Undefined when no leader answered.
 */
export async function askLeaderAboutMember(
  members: MemberApi[],
  sender: HandOffSender,
): Promise<{ member: boolean; leader: string } | undefined> {
  for (const member of members) {
    let status: { node?: { clusterId?: string }; raft?: { role?: string }; members?: { id: string }[] };
    try {
      status = (await apiRequest(
        member.apiUrl,
        "GET",
        "/v1/status",
        sender.token,
        undefined,
        STATUS_REQUEST_TIMEOUT_MS,
      )) as typeof status;
    } catch {
      continue; // down or unreachable: ask the next one
    }
    // Only this cluster's leader can say (an address may now serve another cluster's node).
    if (status.raft?.role !== "leader" || status.node?.clusterId !== sender.clusterId) continue;
    return { member: status.members?.some((entry) => entry.id === sender.from) ?? false, leader: member.id };
  }
  return undefined;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
