// Frames of the cross-node delivery protocol, on the transport channel "deliver" (msgpackr):
//
//   {t:"d", s:<stream>, f:<first seq>, k:<acked>, m:[…]}  messages f, f+1, … of a sender stream; the
//                                                         sender holds nothing ≤ k (acknowledged, or
//                                                         reserved and left unused by a restart)
//   {t:"a", s:<stream>, u:<seq>}                          cumulative ack: every seq ≤ u is in an inbox
//   {t:"r", s:<stream>, e:<seq>}                          resync: the receiver expects e next
//   {t:"p", s:<stream>, a:<agent>, ms:<n>}                backpressure: stop draining the local
//                                                         mailbox of <agent> for n ms (0: go on);
//                                                         its inbox on the receiver is full and
//                                                         its messages are parked there
//
// Each may carry `l`, the lane (absent: lane 0). A sender keeps one stream per destination node
// and lane; an agent's lane is a hash of its id (laneOf), so every message to one agent from one
// node travels in one stream, in order, and a full inbox holds back only the agents of its lane.
//
// Payloads arrive unvalidated from the peer: parseDeliveryFrame checks every field and returns
// a reason for anything else, so a malformed frame is counted and dropped, never thrown.

import { isValidAgentId } from "../../bus/index.js";
// Registers the ExactJson extension with msgpackr: a payload JSON keeps exact but msgpack would
// not travels as its text (exact-payload.ts), and any process decoding frames must know it.
import "./exact-payload.js";

export const DELIVER_CHANNEL = "deliver";

/** A bus message as it travels between nodes (the envelope minus what the owner's bus assigns). */
export interface WireMessage {
  id: string;
  from: string;
  to: string;
  type: string;
  priority: "high" | "normal" | "low";
  headers: Record<string, string>;
  payload: unknown;
  /** Original send time, µs since the epoch. */
  ts: number;
  /**
   * The sender bus's per-sender `seq`, which the owner's bus keeps (so the owner's file is as long
   * as the sender's). Absent from versions before 2026-12-07 and from their spools: the owner's
   * bus assigns one.
   */
  seq?: number;
}

export type DeliveryFrame =
  | { t: "d"; s: string; f: number; k: number; m: WireMessage[]; l?: number }
  | { t: "a"; s: string; u: number; l?: number }
  | { t: "r"; s: string; e: number; l?: number }
  | { t: "p"; s: string; a: string; ms: number; l?: number };

/** The longest pause a backpressure frame may ask for (a receiver refreshes a longer hold). */
export const PAUSE_MS_MAX = 60_000;

/** Lanes per destination node a sender spreads agents over (a full inbox holds back one lane). */
export const FORWARD_LANES = 8;
/** Lanes a receiver accepts (room for senders configured with more). */
export const FORWARD_LANES_MAX = 64;

/** The lane of an agent: FNV-1a of its id, modulo FORWARD_LANES. */
export function laneOf(agentId: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < agentId.length; i++) {
    hash ^= agentId.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % FORWARD_LANES;
}

/**
 * The key of a (node, lane) stream in spools, ledgers and maps: the node id itself for lane 0 (as
 * data dirs of versions without lanes have it), `<node>~<lane>` otherwise ('~' is not in node ids).
 */
export function laneKey(node: string, lane: number): string {
  return lane === 0 ? node : `${node}~${lane}`;
}

export function parseLaneKey(key: string): { node: string; lane: number } {
  const at = key.lastIndexOf("~");
  return at < 0 ? { node: key, lane: 0 } : { node: key.slice(0, at), lane: Number(key.slice(at + 1)) };
}

/** The frame's lane field (absent for lane 0). */
export function laneField(lane: number): { l?: number } {
  return lane === 0 ? {} : { l: lane };
}

const STREAM_PATTERN = /^[A-Za-z0-9-]{1,64}$/;
const ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;
const TYPE_PATTERN = /^[A-Za-z0-9._:/-]{1,128}$/;
const PRIORITIES = new Set(["high", "normal", "low"]);
/** Messages in one delivery frame; more is malformed. */
export const FRAME_MESSAGES_MAX = 10_000;

function isSeq(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

export function wireMessageProblem(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return "message is not an object";
  const m = value as Record<string, unknown>;
  if (typeof m.id !== "string" || !ID_PATTERN.test(m.id)) return "bad id";
  if (!isValidAgentId(m.from)) return "bad from";
  if (!isValidAgentId(m.to)) return "bad to";
  if (typeof m.type !== "string" || !TYPE_PATTERN.test(m.type)) return "bad type";
  if (typeof m.priority !== "string" || !PRIORITIES.has(m.priority)) return "bad priority";
  if (typeof m.headers !== "object" || m.headers === null || Array.isArray(m.headers)) return "bad headers";
  for (const header of Object.values(m.headers)) if (typeof header !== "string") return "bad header value";
  if (!isSeq(m.ts)) return "bad ts";
  if (m.seq !== undefined && !isSeq(m.seq)) return "bad seq";
  if (!("payload" in m)) return "missing payload";
  return undefined;
}

export function parseDeliveryFrame(
  value: unknown,
): { ok: true; frame: DeliveryFrame } | { ok: false; reason: string } {
  if (typeof value !== "object" || value === null || Array.isArray(value))
    return { ok: false, reason: "not an object" };
  const f = value as Record<string, unknown>;
  if (typeof f.s !== "string" || !STREAM_PATTERN.test(f.s)) return { ok: false, reason: "bad stream" };
  const l = f.l === undefined ? 0 : f.l;
  if (!isSeq(l) || l >= FORWARD_LANES_MAX) return { ok: false, reason: "bad lane" };
  const lane = laneField(l);
  switch (f.t) {
    case "d": {
      if (!isSeq(f.f) || f.f < 1) return { ok: false, reason: "bad first seq" };
      if (!Array.isArray(f.m) || f.m.length === 0 || f.m.length > FRAME_MESSAGES_MAX)
        return { ok: false, reason: "bad messages" };
      for (const message of f.m) {
        const problem = wireMessageProblem(message);
        if (problem) return { ok: false, reason: problem };
      }
      const k = f.k === undefined ? 0 : f.k;
      if (!isSeq(k) || k >= f.f) return { ok: false, reason: "bad acked watermark" };
      return { ok: true, frame: { t: "d", s: f.s, f: f.f, k, m: f.m as WireMessage[], ...lane } };
    }
    case "a":
      return isSeq(f.u)
        ? { ok: true, frame: { t: "a", s: f.s, u: f.u, ...lane } }
        : { ok: false, reason: "bad ack" };
    case "r":
      return isSeq(f.e) && f.e >= 1
        ? { ok: true, frame: { t: "r", s: f.s, e: f.e, ...lane } }
        : { ok: false, reason: "bad resync" };
    case "p":
      return isValidAgentId(f.a) && isSeq(f.ms) && f.ms <= PAUSE_MS_MAX
        ? { ok: true, frame: { t: "p", s: f.s, a: f.a, ms: f.ms, ...lane } }
        : { ok: false, reason: "bad pause" };
    default:
      return { ok: false, reason: "unknown frame type" };
  }
}
