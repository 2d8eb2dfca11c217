import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { RecentIds } from "../../src/node/delivery/recent-ids.js";

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
});
