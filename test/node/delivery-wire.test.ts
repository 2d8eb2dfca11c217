// Frames of the cross-node delivery protocol (src/node/delivery/wire.ts): what a peer may send,
// what is refused with a reason (never thrown), and the lane of a stream.

import { describe, expect, it } from "vitest";
import {
  FORWARD_LANES,
  FORWARD_LANES_MAX,
  laneKey,
  laneOf,
  PAUSE_MS_MAX,
  parseDeliveryFrame,
  parseLaneKey,
} from "../../src/node/delivery/wire.js";

const message = {
  id: "m1",
  from: "s1",
  to: "r1",
  type: "t",
  priority: "normal",
  headers: {},
  payload: 1,
  ts: 5,
};

describe("delivery frames", () => {
  it("accepts data, ack and resync frames, with a lane or without (lane 0)", () => {
    expect(parseDeliveryFrame({ t: "d", s: "S", f: 3, k: 2, m: [message] })).toEqual({
      ok: true,
      frame: { t: "d", s: "S", f: 3, k: 2, m: [message] },
    });
    // A message may carry its sender bus's seq (versions before 2026-12-07 send none).
    expect(parseDeliveryFrame({ t: "d", s: "S", f: 1, k: 0, m: [{ ...message, seq: 9 }] })).toMatchObject({
      ok: true,
    });
    expect(parseDeliveryFrame({ t: "a", s: "S", u: 7, l: 3 })).toEqual({
      ok: true,
      frame: { t: "a", s: "S", u: 7, l: 3 },
    });
    expect(parseDeliveryFrame({ t: "r", s: "S", e: 1, l: 0 })).toEqual({
      ok: true,
      frame: { t: "r", s: "S", e: 1 },
    });
    expect(parseDeliveryFrame({ t: "p", s: "S", a: "r1", ms: 2000, l: 4 })).toEqual({
      ok: true,
      frame: { t: "p", s: "S", a: "r1", ms: 2000, l: 4 },
    });
  });

  it("refuses malformed frames with a reason", () => {
    const cases: [unknown, string][] = [
      [null, "not an object"],
      [{ t: "d", s: "bad stream!", f: 1, k: 0, m: [message] }, "bad stream"],
      [{ t: "a", s: "S", u: 1, l: FORWARD_LANES_MAX }, "bad lane"],
      [{ t: "a", s: "S", u: 1, l: -1 }, "bad lane"],
      [{ t: "a", s: "S", u: 1, l: "2" }, "bad lane"],
      [{ t: "d", s: "S", f: 0, k: 0, m: [message] }, "bad first seq"],
      [{ t: "d", s: "S", f: 2, k: 2, m: [message] }, "bad acked watermark"],
      [{ t: "d", s: "S", f: 1, k: 0, m: [] }, "bad messages"],
      [{ t: "d", s: "S", f: 1, k: 0, m: [{ ...message, to: "../etc" }] }, "bad to"],
      [{ t: "d", s: "S", f: 1, k: 0, m: [{ ...message, seq: -1 }] }, "bad seq"],
      [{ t: "d", s: "S", f: 1, k: 0, m: [{ ...message, seq: "7" }] }, "bad seq"],
      [{ t: "a", s: "S", u: 1.5 }, "bad ack"],
      [{ t: "r", s: "S", e: 0 }, "bad resync"],
      [{ t: "p", s: "S", a: "../x", ms: 10 }, "bad pause"],
      [{ t: "p", s: "S", a: "r1", ms: PAUSE_MS_MAX + 1 }, "bad pause"],
      [{ t: "p", s: "S", a: "r1" }, "bad pause"],
      [{ t: "x", s: "S" }, "unknown frame type"],
    ];
    for (const [frame, reason] of cases) expect(parseDeliveryFrame(frame)).toEqual({ ok: false, reason });
  });

  it("keys a (node, lane) stream as the node id for lane 0 and node~lane otherwise", () => {
    expect(laneKey("n-1", 0)).toBe("n-1");
    expect(laneKey("n-1", 5)).toBe("n-1~5");
    expect(parseLaneKey("n-1")).toEqual({ node: "n-1", lane: 0 });
    expect(parseLaneKey("n-1~5")).toEqual({ node: "n-1", lane: 5 });
    const lanes = new Set<number>();
    for (let i = 0; i < 200; i++) {
      const lane = laneOf(`worker-${i}`);
      expect(lane).toBe(laneOf(`worker-${i}`));
      lanes.add(lane);
    }
    expect([...lanes].sort((a, b) => a - b)).toEqual(Array.from({ length: FORWARD_LANES }, (_, i) => i));
  });
});
