import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { RecentIds } from "../../src/node/delivery/recent-ids.js";
import type { WireMessage } from "../../src/node/delivery/wire.js";
import { decodeFrame, encodeFrame } from "../../src/transport/frame.js";

/** A full garbage collection (the flag set at run time; the function from a fresh context). */
function collectGarbage(): void {
  setFlagsFromString("--expose-gc");
  (runInNewContext("gc") as () => void)();
}

describe("RecentIds (the receiving node's dedup window)", () => {
  it("remembers keys and forgets the oldest past capacity", () => {
    const recent = new RecentIds(3);
    for (const key of ["a", "b", "c"]) recent.add(key);
    expect(["a", "b", "c"].map((key) => recent.has(key))).toEqual([true, true, true]);
    recent.add("d");
    expect(recent.has("a")).toBe(false);
    expect(["b", "c", "d"].every((key) => recent.has(key))).toBe(true);
    expect(recent.size).toBe(3);
  });

  it("does not count a key twice or let a repeat push out an older key", () => {
    const recent = new RecentIds(2);
    recent.add("a");
    recent.add("a");
    recent.add("b");
    expect(recent.has("a") && recent.has("b")).toBe(true);
    expect(recent.size).toBe(2);
  });

  it("holds exactly the last `capacity` distinct keys of any sequence (model check)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 8 }),
        fc.array(fc.integer({ min: 0, max: 20 }), { maxLength: 200 }),
        (capacity, keys) => {
          const recent = new RecentIds(capacity);
          const model: string[] = [];
          for (const n of keys) {
            const key = RecentIds.key("agent", String(n));
            recent.add(key);
            if (!model.includes(key)) {
              model.push(key);
              if (model.length > capacity) model.shift();
            }
          }
          expect(recent.size).toBe(model.length);
          for (let n = 0; n <= 20; n++) {
            const key = RecentIds.key("agent", String(n));
            expect(recent.has(key)).toBe(model.includes(key));
          }
        },
      ),
    );
  });

  it("refuses a capacity that is not a positive integer", () => {
    expect(() => new RecentIds(0)).toThrow(RangeError);
    expect(() => new RecentIds(1.5)).toThrow(RangeError);
  });

  it("a key keeps nothing of the decoded frame its agent and id came from alive", () => {
    // 20,000 delivery frames through the real frame codec, one message each; the window keeps
    // every key. Keys that referred into the frames' decoded strings kept ≈ 650 bytes each here.
    const count = 20_000;
    const recent = new RecentIds(count);
    collectGarbage();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < count; i++) {
      const wire: WireMessage = {
        id: `01JF${String(i).padStart(22, "0")}`,
        from: "bench-sender",
        to: "bench-receiver",
        type: "bench",
        priority: "normal",
        ts: 1_765_000_000_000_000 + i,
        headers: { traceparent: `00-${"0".repeat(32)}-${"0".repeat(16)}-01` },
        payload: { i, text: "x".repeat(200) },
      };
      const frame = decodeFrame(
        encodeFrame("delivery", { t: "d", s: "stream-1", f: i + 1, k: i, m: [wire] }),
      );
      const decoded = (frame.payload as { m: WireMessage[] }).m[0];
      recent.add(RecentIds.key(decoded.to, decoded.id));
    }
    collectGarbage();
    const bytesPerKey = (process.memoryUsage().heapUsed - before) / recent.size;
    expect(recent.size).toBe(count);
    expect(bytesPerKey).toBeLessThan(300); // ≈ 135 – 150 as copies, ≈ 650 as slices
  });
});
