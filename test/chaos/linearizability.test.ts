import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  checkLinearizable,
  formatCheckResult,
  type KvInput,
  type KvOperation,
  type KvOutput,
  kvModel,
} from "../../chaos/linearizability/index.js";

function op(clientId: string, call: number, ret: number, input: KvInput, output?: KvOutput): KvOperation {
  return { clientId, input, output, call, return: ret };
}
const put = (key: string, value: string): KvInput => ({ op: "put", key, value });
const get = (key: string): KvInput => ({ op: "get", key });
const del = (key: string): KvInput => ({ op: "delete", key });
const cas = (key: string, expected: string | null, value: string): KvInput => ({
  op: "cas",
  key,
  expected,
  value,
});
const ok = (value: string | null): KvOutput => ({ ok: true, value });
const fail = (value: string | null): KvOutput => ({ ok: false, value });

const verdict = (history: KvOperation[]) => checkLinearizable(kvModel, history).verdict;

describe("linearizability checker (KV model)", () => {
  it("accepts an empty history and a sequential legal one", () => {
    expect(verdict([])).toBe("ok");
    expect(
      verdict([
        op("a", 0, 1, put("x", "1"), ok(null)),
        op("a", 2, 3, get("x"), ok("1")),
        op("b", 4, 5, cas("x", "1", "2"), ok("1")),
        op("b", 6, 7, del("x"), ok("2")),
        op("a", 8, 9, get("x"), ok(null)),
      ]),
    ).toBe("ok");
  });

  it("rejects a stale read: a read that starts after a write finished sees the old value", () => {
    const history = [
      op("a", 0, 1, put("x", "1"), ok(null)),
      op("a", 2, 3, put("x", "2"), ok("1")),
      op("b", 4, 5, get("x"), ok("1")),
    ];
    const result = checkLinearizable(kvModel, history);
    expect(result.verdict).toBe("illegal");
    const report = formatCheckResult(kvModel, result);
    expect(report).toContain('key "x": illegal');
    expect(report).toContain("cannot place");
  });

  it("rejects a lost write: an acknowledged put that a later read does not see", () => {
    expect(verdict([op("a", 0, 1, put("x", "1"), ok(null)), op("b", 2, 3, get("x"), ok(null))])).toBe(
      "illegal",
    );
  });

  it("rejects a read of a value never written", () => {
    expect(verdict([op("a", 0, 1, put("x", "1"), ok(null)), op("b", 0, 2, get("x"), ok("7"))])).toBe(
      "illegal",
    );
  });

  it("accepts concurrent operations that can be ordered either way", () => {
    // The read overlaps the write: it may see before or after.
    for (const seen of [null, "1"]) {
      expect(verdict([op("a", 0, 10, put("x", "1"), ok(null)), op("b", 1, 2, get("x"), ok(seen))])).toBe(
        "ok",
      );
    }
    // Two overlapping writes; later reads agree on one winner.
    expect(
      verdict([
        op("a", 0, 5, put("x", "1"), ok("2")),
        op("b", 1, 6, put("x", "2"), ok(null)),
        op("c", 7, 8, get("x"), ok("1")),
        op("d", 9, 10, get("x"), ok("1")),
      ]),
    ).toBe("ok");
  });

  it("rejects reads that flip between two concurrent writes (no single order explains them)", () => {
    expect(
      verdict([
        op("a", 0, 5, put("x", "1"), ok(null)),
        op("b", 0, 5, put("x", "2"), ok(null)),
        op("c", 6, 7, get("x"), ok("1")),
        op("d", 8, 9, get("x"), ok("2")),
      ]),
    ).toBe("illegal");
  });

  it("rejects two successful cas from the same expected value (a double grant)", () => {
    expect(
      verdict([
        op("a", 0, 1, put("lock", "free"), ok(null)),
        op("b", 2, 5, cas("lock", "free", "b"), ok("free")),
        op("c", 2, 5, cas("lock", "free", "c"), ok("free")),
      ]),
    ).toBe("illegal");
    expect(
      verdict([
        op("a", 0, 1, put("lock", "free"), ok(null)),
        op("b", 2, 5, cas("lock", "free", "b"), ok("free")),
        op("c", 2, 5, cas("lock", "free", "c"), fail("b")),
      ]),
    ).toBe("ok");
  });

  it("treats an operation with unknown outcome as possibly applied, at any time after its call", () => {
    // The put timed out; one later read sees it, which is allowed...
    expect(
      verdict([
        op("a", 0, Infinity, put("x", "1")),
        op("b", 5, 6, get("x"), ok(null)),
        op("b", 7, 8, get("x"), ok("1")),
      ]),
    ).toBe("ok");
    // ...but it cannot take effect before it was called,
    expect(verdict([op("b", 0, 1, get("x"), ok("1")), op("a", 2, Infinity, put("x", "1"))])).toBe("illegal");
    // and once seen it cannot disappear.
    expect(
      verdict([
        op("a", 0, Infinity, put("x", "1")),
        op("b", 5, 6, get("x"), ok("1")),
        op("b", 7, 8, get("x"), ok(null)),
      ]),
    ).toBe("illegal");
    // An unknown cas follows the model: it swapped only if the value matched.
    expect(
      verdict([
        op("a", 0, 1, put("x", "0"), ok(null)),
        op("a", 2, Infinity, cas("x", "9", "1")),
        op("b", 5, 6, get("x"), ok("1")),
      ]),
    ).toBe("illegal");
  });

  it("checks keys independently and names the failing key", () => {
    const result = checkLinearizable(kvModel, [
      op("a", 0, 1, put("x", "1"), ok(null)),
      op("a", 0, 1, put("y", "1"), ok(null)),
      op("b", 2, 3, get("x"), ok("1")),
      op("b", 2, 3, get("y"), ok(null)),
    ]);
    expect(result.verdict).toBe("illegal");
    expect(result.partitions.map((p) => [p.name, p.verdict])).toEqual([
      ['key "x"', "ok"],
      ['key "y"', "illegal"],
    ]);
  });

  it("treats equal call and return times as concurrent", () => {
    expect(verdict([op("a", 0, 5, put("x", "1"), ok(null)), op("b", 5, 6, get("x"), ok(null))])).toBe("ok");
  });

  it("rejects malformed histories", () => {
    expect(() => verdict([op("a", 5, 4, get("x"), ok(null))])).toThrow(/invalid operation times/);
    expect(() => verdict([op("a", 0, 4, put("x", "1"))])).toThrow(/no output/);
  });

  it("returns unknown, not a guess, when the step budget runs out", () => {
    // Many fully concurrent writes followed by a read of a value nobody wrote: illegal, but
    // proving it takes a search far longer than 50 steps.
    const history: KvOperation[] = [];
    for (let i = 0; i < 10; i++) history.push(op(`c${i}`, 0, 100, put("x", `${i}`), ok(null)));
    history.push(op("r", 101, 102, get("x"), ok("none")));
    expect(checkLinearizable(kvModel, history, { stepsMaxPerPartition: 50 }).verdict).toBe("unknown");
    expect(checkLinearizable(kvModel, history).verdict).toBe("illegal");
  });

  it("handles a long legal history with concurrency quickly (memoization)", () => {
    // 3 clients, 600 operations, windows overlapping their neighbours; generated from a real
    // sequential execution so it is linearizable.
    const history: KvOperation[] = [];
    let value: string | null = null;
    for (let i = 0; i < 600; i++) {
      const input: KvInput =
        i % 3 === 0 ? put("x", `${i}`) : i % 3 === 1 ? get("x") : cas("x", value, `c${i}`);
      const prev: string | null = value;
      let output: KvOutput = ok(prev);
      if (input.op === "put") value = input.value;
      if (input.op === "cas") value = input.value;
      if (input.op === "get") output = ok(prev);
      history.push(op(`c${i % 3}`, i * 10 - 12, i * 10 + 12, input, output));
    }
    expect(checkLinearizable(kvModel, history).verdict).toBe("ok");
    // One stale read deep inside makes it illegal.
    const stale = history.map((o) => ({ ...o }));
    const victim = stale[301] as KvOperation; // a get (301 % 3 === 1) that saw the put of 300
    expect(victim.input.op).toBe("get");
    victim.output = ok("294"); // overwritten by put 297, which returned before this call
    expect(checkLinearizable(kvModel, stale).verdict).toBe("illegal");
  });

  // --- property: WGL agrees with brute force on small random histories ---

  function bruteForce(history: KvOperation[]): boolean {
    const byKey = new Map<string, KvOperation[]>();
    for (const o of history) byKey.set(o.input.key, [...(byKey.get(o.input.key) ?? []), o]);
    for (const ops of byKey.values()) {
      const placed = new Array<boolean>(ops.length).fill(false);
      const search = (state: string | null, count: number): boolean => {
        if (count === ops.length) return true;
        for (let i = 0; i < ops.length; i++) {
          if (placed[i]) continue;
          const candidate = ops[i] as KvOperation;
          // Real-time order: nothing unplaced may have returned before this call.
          const blocked = ops.some((o, j) => !placed[j] && j !== i && o.return < candidate.call);
          if (blocked) continue;
          const next = kvModel.step(state, candidate.input, candidate.output);
          if (next === undefined) continue;
          placed[i] = true;
          const found = search(next, count + 1);
          placed[i] = false;
          if (found) return true;
        }
        return false;
      };
      if (!search(null, 0)) return false;
    }
    return true;
  }

  const values = ["1", "2", "3"];
  const inputArb: fc.Arbitrary<KvInput> = fc.oneof(
    fc.record({
      op: fc.constant("put" as const),
      key: fc.constantFrom("x", "y"),
      value: fc.constantFrom(...values),
    }),
    fc.record({ op: fc.constant("get" as const), key: fc.constantFrom("x", "y") }),
    fc.record({ op: fc.constant("delete" as const), key: fc.constantFrom("x", "y") }),
    fc.record({
      op: fc.constant("cas" as const),
      key: fc.constantFrom("x", "y"),
      expected: fc.constantFrom(null, ...values),
      value: fc.constantFrom(...values),
    }),
  );
  const opArb: fc.Arbitrary<KvOperation> = fc
    .record({
      input: inputArb,
      call: fc.nat(12),
      length: fc.nat(6),
      unknown: fc.boolean(),
      ok: fc.boolean(),
      value: fc.constantFrom(null, ...values),
    })
    .map(({ input, call, length, unknown, ok: okFlag, value }) => {
      const known = !unknown || input.op === "get";
      return {
        clientId: "c",
        input,
        output: known ? { ok: input.op === "cas" ? okFlag : true, value } : undefined,
        call,
        return: known ? call + length : Infinity,
      };
    });

  it("agrees with a brute-force search on random small histories (property)", () => {
    let illegal = 0;
    let legal = 0;
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 7 }), (history) => {
        const expected = bruteForce(history);
        if (expected) legal++;
        else illegal++;
        expect(verdict(history)).toBe(expected ? "ok" : "illegal");
      }),
      { numRuns: 3000, seed: 42 },
    );
    // The generator must exercise both answers for the agreement to mean anything.
    expect(legal).toBeGreaterThan(100);
    expect(illegal).toBeGreaterThan(100);
  });
});
