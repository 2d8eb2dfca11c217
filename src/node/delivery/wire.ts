// Frames of the cross-node delivery protocol, on the transport channel "deliver" (msgpackr):
//
//   {t:"d", s:<stream>, f:<first seq>, k:<acked>, m:[…]}  messages f, f+1, … of a sender stream; the
//                                                         sender holds nothing ≤ k (acknowledged, or
//                                                         reserved and left unused by a restart)
//   {t:"a", s:<stream>, u:<seq>}                          cumulative ack: every seq ≤ u is in an inbox
//   {t:"r", s:<stream>, e:<seq>}                          resync: the receiver expects e next
//
// Payloads arrive unvalidated from the peer: parseDeliveryFrame checks every field and returns
// a reason for anything else, so a malformed frame is counted and dropped, never thrown.

import { isValidAgentId } from "../../bus/index.js";

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
}

export type DeliveryFrame =
  | { t: "d"; s: string; f: number; k: number; m: WireMessage[] }
  | { t: "a"; s: string; u: number }
  | { t: "r"; s: string; e: number };

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
      return { ok: true, frame: { t: "d", s: f.s, f: f.f, k, m: f.m as WireMessage[] } };
    }
    case "a":
      return isSeq(f.u) ? { ok: true, frame: { t: "a", s: f.s, u: f.u } } : { ok: false, reason: "bad ack" };
    case "r":
      return isSeq(f.e) && f.e >= 1
        ? { ok: true, frame: { t: "r", s: f.s, e: f.e } }
        : { ok: false, reason: "bad resync" };
    default:
      return { ok: false, reason: "unknown frame type" };
  }
}
