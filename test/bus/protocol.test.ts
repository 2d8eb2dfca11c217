// Pure parts of the protocol: POSIX cksum and shards, agent ids, file names, envelopes.

import { execFileSync } from "node:child_process";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  fitsAfterCount,
  freshEstimate,
  mustRecount,
  RECOUNT_MESSAGES_MAX,
} from "../../src/bus/backpressure.js";
import { decodeFile, type Envelope, encodeBatchFile, encodeMessageFile } from "../../src/bus/envelope.js";
import { posixCksum, shardOf, validateAgentId } from "../../src/bus/index.js";
import {
  CLAIMED_NAME_PATTERN,
  claimedNameOf,
  countOfEntry,
  formatClaimedName,
  formatQueuedName,
  parseClaimedName,
  parseQueuedName,
  QUEUED_NAME_PATTERN,
} from "../../src/bus/names.js";
import { isCfnError } from "../../src/errors.js";

const agentId = fc.stringMatching(/^[A-Za-z0-9._-]{1,128}$/).filter((id) => id !== "." && id !== "..");

function cksumOf(text: string): number {
  const out = execFileSync("cksum", { input: Buffer.from(text, "utf8") }).toString();
  return Number(out.split(" ")[0]);
}

describe("POSIX cksum and shards", () => {
  it("matches coreutils cksum on known and random inputs", () => {
    expect(posixCksum(Buffer.from("abc"))).toBe(1219131554);
    expect(posixCksum(Buffer.alloc(0))).toBe(cksumOf(""));
    const samples = fc.sample(fc.string({ minLength: 0, maxLength: 300, unit: "grapheme" }), 40);
    for (const sample of samples) expect(posixCksum(Buffer.from(sample, "utf8"))).toBe(cksumOf(sample));
    // Lengths that need 1, 2 and 3 length bytes.
    for (const length of [255, 256, 65_536])
      expect(posixCksum(Buffer.alloc(length, 7))).toBe(cksumOf(String.fromCharCode(7).repeat(length)));
  });

  it("gives the shard a bash script computes with cksum", () => {
    for (const id of ["lead", "worker-1", "a.b_c", "x".repeat(128)]) {
      expect(shardOf(id, 16)).toBe(cksumOf(id) % 16);
      expect(shardOf(id, 7)).toBe(cksumOf(id) % 7);
    }
  });
});

describe("agent ids", () => {
  it("accepts safe ids", () => {
    fc.assert(fc.property(agentId, (id) => validateAgentId(id) === id));
  });

  it.each([
    ["", "empty"],
    [".", "dot"],
    ["..", "dot-dot"],
    ["../etc", "traversal"],
    ["a/b", "slash"],
    ["a\\b", "backslash"],
    ["x".repeat(129), "too long"],
    ["name with space", "space"],
    ["ünïcode", "non-ASCII"],
    ["a\0b", "NUL"],
  ])("refuses %j (%s) with CFN_ERR_INVALID_AGENT_ID", (id) => {
    let caught: unknown;
    try {
      validateAgentId(id);
    } catch (error) {
      caught = error;
    }
    expect(isCfnError(caught, "CFN_ERR_INVALID_AGENT_ID")).toBe(true);
  });

  it("refuses non-strings", () => {
    expect(() => validateAgentId(42)).toThrow(/invalid agent id/);
  });
});

describe("file names", () => {
  const queued = fc.record({
    priority: fc.constantFrom("high" as const, "normal" as const, "low" as const),
    arrivalUs: fc.integer({ min: 0, max: 9_000_000_000_000_000 }),
    count: fc.integer({ min: 1, max: 100_000 }),
    unique: fc.stringMatching(/^[A-Za-z0-9.-]{1,40}$/),
    deliveries: fc.integer({ min: 0, max: 1000 }),
  });

  it("round-trip queued and claimed names", () => {
    fc.assert(
      fc.property(
        queued,
        fc.integer({ min: 0, max: 2 ** 45 }),
        fc.integer({ min: 1, max: 4_194_304 }),
        (name, deadlineMs, pid) => {
          const text = formatQueuedName(name);
          expect(parseQueuedName(text)).toEqual(name);
          expect(countOfEntry(text)).toBe(name.count);
          const claimed = { ...name, deadlineMs, pid };
          expect(parseClaimedName(formatClaimedName(claimed))).toEqual(claimed);
          expect(parseQueuedName(formatClaimedName(claimed))).toBeUndefined();
          const next = { ...claimed, deliveries: name.deliveries + 1 };
          expect(claimedNameOf(text, name, deadlineMs, pid)).toBe(formatClaimedName(next));
        },
      ),
    );
  });

  it("sort in delivery order: priority first, then arrival", () => {
    fc.assert(
      fc.property(fc.array(queued, { minLength: 2, maxLength: 30 }), (names) => {
        const sorted = names.map(formatQueuedName).sort();
        const rank = { high: 0, normal: 1, low: 2 };
        for (let index = 1; index < sorted.length; index++) {
          const a = parseQueuedName(sorted[index - 1])!;
          const b = parseQueuedName(sorted[index])!;
          expect(
            rank[a.priority] < rank[b.priority] || (a.priority === b.priority && a.arrivalUs <= b.arrivalUs),
          ).toBe(true);
        }
      }),
    );
  });

  it("the hand-written parsers accept exactly what the reference patterns accept", () => {
    // Names near the grammar: valid ones with one character replaced, inserted or removed, and
    // fields of wrong lengths, so that every check of the character scan is exercised.
    const field = fc.stringMatching(/^[0-9A-Za-z._ -]{0,18}$/);
    const nearName = fc
      .tuple(
        fc.constantFrom("0", "1", "2", "3", "x", ""),
        field,
        field,
        field,
        field,
        fc.option(fc.tuple(field, field)),
        fc.constantFrom(".json", ".jso", "json", ""),
      )
      .map(([p, t, n, u, d, claim, ext]) =>
        [p, t, n, u, d, ...(claim ? [claim[0], claim[1]] : [])].join("_").concat(ext),
      );
    const validQueued = queued.map(formatQueuedName);
    const validClaimed = fc
      .tuple(queued, fc.integer({ min: 0, max: 2 ** 45 }), fc.integer({ min: 1, max: 4_194_304 }))
      .map(([name, deadlineMs, pid]) => formatClaimedName({ ...name, deadlineMs, pid }));
    const mutated = fc
      .tuple(
        fc.oneof(validQueued, validClaimed),
        fc.nat(),
        fc.constantFrom("", "_", "0", "a", ".", "-", " ", "9"),
      )
      .map(([name, at, insert]) => {
        const index = at % (name.length + 1);
        return name.slice(0, index) + insert + name.slice(index + (at % 2));
      });
    fc.assert(
      fc.property(fc.oneof(nearName, mutated, validQueued, validClaimed), (name) => {
        const queuedFields = QUEUED_NAME_PATTERN.exec(name);
        const parsed = parseQueuedName(name);
        expect(parsed !== undefined).toBe(queuedFields !== null);
        if (parsed && queuedFields) {
          expect(parsed.arrivalUs).toBe(Number(queuedFields[2]));
          expect(parsed.count).toBe(Number(queuedFields[3]));
          expect(parsed.unique).toBe(queuedFields[4]);
          expect(parsed.deliveries).toBe(Number(queuedFields[5]));
        }
        const claimedFields = CLAIMED_NAME_PATTERN.exec(name);
        const claimed = parseClaimedName(name);
        expect(claimed !== undefined).toBe(claimedFields !== null);
        if (claimed && claimedFields) {
          expect(claimed.deadlineMs).toBe(Number(claimedFields[6]));
          expect(claimed.pid).toBe(Number(claimedFields[7]));
        }
      }),
      { numRuns: 5000 },
    );
  });

  it("reject foreign names", () => {
    for (const name of [
      "notes.txt",
      "1_123_1_a_0.json",
      "3_0000000000000001_1_a_0.json",
      "1_0000000000000001_0_a_0.json",
      "1_0000000000000001_1_a b_0.json",
      "1_0000000000000001_1_a_0",
    ]) {
      expect(parseQueuedName(name)).toBeUndefined();
    }
    expect(countOfEntry("notes.txt")).toBe(1);
  });
});

describe("envelopes", () => {
  const envelope = (overrides: Partial<Envelope> = {}): Envelope => ({
    v: 1,
    id: "m-1",
    from: "a",
    to: "b",
    type: "task",
    priority: "normal",
    seq: 1,
    ts: 1_700_000_000_000_000,
    headers: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
    payload: { text: 'line1\nline2 "quoted" ,"payload":', list: [1, 2] },
    ...overrides,
  });

  it("are JSON on three fixed lines that decode back", () => {
    const text = encodeMessageFile(envelope());
    const lines = text.split("\n");
    expect(lines).toHaveLength(4); // three lines and the final newline
    expect(lines[1].startsWith('"headers":')).toBe(true);
    expect(lines[2].startsWith('"payload":')).toBe(true);
    expect(JSON.parse(text)).toEqual(envelope());
    expect(decodeFile(text, 1)).toEqual({ ok: true, envelopes: [envelope()] });
  });

  it("batch files hold envelopes in order", () => {
    const batch = [envelope({ id: "m-1" }), envelope({ id: "m-2", seq: 2 }), envelope({ id: "m-3", seq: 3 })];
    const text = encodeBatchFile(batch);
    expect(decodeFile(text, 3)).toEqual({ ok: true, envelopes: batch });
    expect(decodeFile(text, 2).ok).toBe(false);
  });

  it("reject malformed, truncated and foreign contents with a reason", () => {
    const text = encodeMessageFile(envelope());
    const cases = [
      text.slice(0, text.length / 2),
      "",
      "hello",
      "[]",
      JSON.stringify({ ...envelope(), v: 2 }),
      JSON.stringify({ ...envelope(), from: "../x" }),
    ];
    for (const bad of cases) {
      const decoded = decodeFile(bad, 1);
      expect(decoded.ok).toBe(false);
      if (!decoded.ok) expect(decoded.reason.length).toBeGreaterThan(0);
    }
  });
});

describe("backpressure admission", () => {
  it("never admits past the limit for one sender, whatever receivers do", () => {
    // Model: one sender, receivers removing at random; the real depth must stay ≤ depthMax and a
    // refusal must only happen when the real depth leaves no room.
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 300 }),
        fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 1, max: 20 })), { maxLength: 400 }),
        (depthMax, steps) => {
          let depth = 0;
          let estimate: ReturnType<typeof freshEstimate> | undefined;
          for (const [isSend, amount] of steps) {
            if (!isSend) {
              depth = Math.max(0, depth - amount);
              continue;
            }
            const count = Math.min(amount, depthMax);
            if (mustRecount(estimate, count, depthMax)) {
              estimate = freshEstimate(depth, depthMax);
              if (!fitsAfterCount(depth, count, depthMax)) {
                expect(depth + count).toBeGreaterThan(depthMax);
                continue;
              }
            }
            estimate!.sentSinceCount += count;
            depth += count;
            expect(depth).toBeLessThanOrEqual(depthMax);
          }
        },
      ),
    );
  });

  it("recounts at least every RECOUNT_MESSAGES_MAX messages near the limit", () => {
    const estimate = freshEstimate(900, 1000);
    estimate.sentSinceCount = RECOUNT_MESSAGES_MAX;
    expect(mustRecount(estimate, 1, 1000)).toBe(true);
  });
});
