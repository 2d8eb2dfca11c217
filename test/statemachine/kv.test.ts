import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type Entry, EntryType } from "../../src/raft/types.js";
import {
  decodeKvCommand,
  encodeKvCommand,
  type KvCommand,
  KvStateMachine,
} from "../../src/statemachine/kv.js";

function entry(index: number, command: KvCommand | Uint8Array, type: EntryType = EntryType.Normal): Entry {
  const data = command instanceof Uint8Array ? command : encodeKvCommand(command);
  return { term: 1, index, type, data };
}

describe("KvStateMachine", () => {
  it("applies put, get, delete and cas with the observed value", () => {
    const kv = new KvStateMachine();
    const c = { clientId: "c1" };
    expect(kv.apply(entry(1, { op: "get", key: "a", ...c, requestId: 1 }))).toEqual({
      ok: true,
      value: null,
    });
    expect(kv.apply(entry(2, { op: "put", key: "a", value: "x", ...c, requestId: 2 }))).toEqual({
      ok: true,
      value: null,
    });
    expect(kv.apply(entry(3, { op: "put", key: "a", value: "y", ...c, requestId: 3 }))).toEqual({
      ok: true,
      value: "x",
    });
    expect(
      kv.apply(entry(4, { op: "cas", key: "a", expected: "x", value: "z", ...c, requestId: 4 })),
    ).toEqual({
      ok: false,
      value: "y",
    });
    expect(kv.read("a")).toBe("y");
    expect(
      kv.apply(entry(5, { op: "cas", key: "a", expected: "y", value: "z", ...c, requestId: 5 })),
    ).toEqual({
      ok: true,
      value: "y",
    });
    expect(kv.read("a")).toBe("z");
    expect(kv.apply(entry(6, { op: "delete", key: "a", ...c, requestId: 6 }))).toEqual({
      ok: true,
      value: "z",
    });
    expect(kv.read("a")).toBeNull();
    expect(
      kv.apply(entry(7, { op: "cas", key: "a", expected: null, value: "n", ...c, requestId: 7 })),
    ).toEqual({
      ok: true,
      value: null,
    });
    expect(kv.read("a")).toBe("n");
    expect(kv.appliedIndex).toBe(7);
  });

  it("applies a retried request once and returns the first result again", () => {
    const kv = new KvStateMachine();
    kv.apply(entry(1, { op: "put", key: "k", value: "1", clientId: "c", requestId: 1 }));
    const first = kv.apply(
      entry(2, { op: "cas", key: "k", expected: "1", value: "2", clientId: "c", requestId: 2 }),
    );
    const retry = kv.apply(
      entry(3, { op: "cas", key: "k", expected: "1", value: "2", clientId: "c", requestId: 2 }),
    );
    expect(first).toEqual({ ok: true, value: "1" });
    expect(retry).toEqual(first);
    // Another client's identical request id is a different session.
    expect(kv.apply(entry(4, { op: "put", key: "k", value: "3", clientId: "d", requestId: 2 }))).toEqual({
      ok: true,
      value: "2",
    });
    expect(kv.apply(entry(5, { op: "put", key: "k", value: "old", clientId: "c", requestId: 1 }))).toEqual({
      ok: false,
      value: null,
      error: "stale_request",
    });
    expect(kv.read("k")).toBe("3");
  });

  it("treats no-ops, conf changes and malformed bytes as entries without effect", () => {
    const kv = new KvStateMachine();
    expect(kv.apply(entry(1, new Uint8Array()))).toBeUndefined();
    expect(kv.apply(entry(2, new Uint8Array([1, 2, 3]), EntryType.ConfChange))).toBeUndefined();
    expect(kv.apply(entry(3, new TextEncoder().encode("{not json")))).toEqual({
      ok: false,
      value: null,
      error: "malformed",
    });
    expect(kv.apply(entry(4, new Uint8Array([0xff, 0xfe])))).toEqual({
      ok: false,
      value: null,
      error: "malformed",
    });
    expect(
      kv.apply(entry(5, new TextEncoder().encode('{"op":"put","key":"a","clientId":"c","requestId":1}'))),
    ).toEqual({
      ok: false,
      value: null,
      error: "malformed",
    });
    expect(kv.appliedIndex).toBe(5);
    expect(kv.size).toBe(0);
  });

  it("rejects an entry out of index order as a broken invariant", () => {
    const kv = new KvStateMachine();
    expect(() => kv.apply(entry(2, new Uint8Array()))).toThrow(/invariant/);
  });

  it("evicts the least recently used session past sessionsMax, the same way on every replica", () => {
    const kv = new KvStateMachine({ sessionsMax: 2 });
    kv.apply(entry(1, { op: "put", key: "k", value: "a", clientId: "A", requestId: 1 }));
    kv.apply(entry(2, { op: "put", key: "k", value: "b", clientId: "B", requestId: 1 }));
    kv.apply(entry(3, { op: "get", key: "k", clientId: "A", requestId: 2 }));
    kv.apply(entry(4, { op: "put", key: "k", value: "c", clientId: "C", requestId: 1 })); // evicts B
    // A's session (recently used) survived: its retry returns the cached read, not the current "c".
    expect(kv.apply(entry(5, { op: "get", key: "k", clientId: "A", requestId: 2 }))).toEqual({
      ok: true,
      value: "b",
    });
    // B's retry is no longer recognised, so it applies again: the documented cost of eviction.
    expect(kv.apply(entry(6, { op: "put", key: "k", value: "b", clientId: "B", requestId: 1 }))).toEqual({
      ok: true,
      value: "c",
    });
  });

  it("keeps evicting exactly the least recently used session over thousands of applies (model)", () => {
    // Enough applies that the eviction order is compacted several times; an LRU list is the model.
    const kv = new KvStateMachine({ sessionsMax: 3 });
    const clients = ["A", "B", "C", "D", "E"];
    const lru: string[] = [];
    const lastRequest = new Map<string, number>();
    let index = 0;
    let random = 7;
    let checked = 0;
    for (let i = 1; i <= 6000; i++) {
      random = (random * 1103515245 + 12345) % 2 ** 31;
      const clientId = clients[(random >> 8) % (i % 3 === 0 ? clients.length : 2)];
      const requestId = (lastRequest.get(clientId) ?? 0) + 1;
      lastRequest.set(clientId, requestId);
      kv.apply(
        entry(++index, { op: "put", key: "k", value: `${clientId}${requestId}`, clientId, requestId }),
      );
      const at = lru.indexOf(clientId);
      if (at >= 0) lru.splice(at, 1);
      lru.push(clientId);
      if (lru.length > 3) lru.shift();
      if (i % 97 !== 0) continue;
      // A retry of a remembered session returns its cached result and changes nothing; the retry
      // of an evicted one applies again (k becomes its value). Each check runs on a restored copy,
      // so one re-applied retry does not evict the next client checked.
      const lastWriter = lru[lru.length - 1];
      const current = `${lastWriter}${lastRequest.get(lastWriter)}`;
      for (const id of [...lastRequest.keys()].filter((known) => known !== lastWriter)) {
        const copy = new KvStateMachine({ sessionsMax: 3 });
        copy.restore(kv.snapshot());
        const retry = lastRequest.get(id) as number;
        copy.apply(
          entry(index + 1, { op: "put", key: "k", value: `${id}${retry}`, clientId: id, requestId: retry }),
        );
        expect(copy.read("k")).toBe(lru.includes(id) ? current : `${id}${retry}`);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(200);
  });

  it("keeps its eviction order bounded when every apply is a new client", () => {
    const kv = new KvStateMachine({ sessionsMax: 100 });
    for (let i = 1; i <= 20_000; i++)
      kv.apply(entry(i, { op: "put", key: "k", value: "v", clientId: `c${i}`, requestId: 1 }));
    const { order, orderHead } = kv as unknown as { order: unknown[]; orderHead: number };
    expect(order.length - orderHead).toBe(100);
    expect(order.length).toBeLessThan(100 + 2 * 1024 + 2);
  });

  it("decodes only well-formed commands", () => {
    const cmd: KvCommand = { op: "cas", key: "k", expected: null, value: "v", clientId: "c", requestId: 3 };
    expect(decodeKvCommand(encodeKvCommand(cmd))).toEqual(cmd);
    const bad = (s: string) => decodeKvCommand(new TextEncoder().encode(s));
    expect(bad("null")).toBeUndefined();
    expect(bad('{"op":"nope","key":"k","clientId":"c","requestId":1}')).toBeUndefined();
    expect(bad('{"op":"get","key":"k","clientId":"c","requestId":-1}')).toBeUndefined();
    expect(bad('{"op":"get","key":"k","clientId":"c","requestId":1.5}')).toBeUndefined();
    expect(
      bad('{"op":"cas","key":"k","expected":5,"value":"v","clientId":"c","requestId":1}'),
    ).toBeUndefined();
  });

  it("encodes commands in the binary form and still decodes the JSON form of older logs", () => {
    const commands: KvCommand[] = [
      { op: "put", key: "ключ", value: "v😀", clientId: "c", requestId: 0 },
      { op: "get", key: "", clientId: "c", requestId: 2 ** 40 },
      { op: "delete", key: "k", clientId: "ç", requestId: 7 },
      { op: "cas", key: "k", expected: "old", value: "", clientId: "c", requestId: 9 },
      { op: "cas", key: "k", expected: null, value: "n", clientId: "c", requestId: 10 },
    ];
    for (const command of commands) {
      const bytes = encodeKvCommand(command);
      expect(bytes[0]).toBe(1); // binary, version 1
      expect(decodeKvCommand(bytes)).toEqual(command);
      // Truncated or extended by one byte: not a command.
      expect(decodeKvCommand(bytes.subarray(0, bytes.byteLength - 1))).toBeUndefined();
      expect(decodeKvCommand(Uint8Array.of(...bytes, 0))).toBeUndefined();
      expect(decodeKvCommand(new TextEncoder().encode(JSON.stringify(command)))).toEqual(command);
    }
    const put = encodeKvCommand(commands[2]);
    expect(decodeKvCommand(Uint8Array.of(put[0], 9, ...put.subarray(2)))).toBeUndefined(); // unknown op
    const badUtf8 = Uint8Array.of(...put);
    badUtf8[14] = 0xff; // first byte of the key
    expect(decodeKvCommand(badUtf8)).toBeUndefined();
    expect(decodeKvCommand(new Uint8Array(0))).toBeUndefined();
  });

  const commandArb: fc.Arbitrary<KvCommand> = fc.oneof(
    fc.record({
      op: fc.constant("put" as const),
      key: fc.constantFrom("a", "b", "c"),
      value: fc.string({ maxLength: 3 }),
      clientId: fc.constantFrom("x", "y", "z", "w"),
      requestId: fc.nat(5),
    }),
    fc.record({
      op: fc.constantFrom("get" as const, "delete" as const),
      key: fc.constantFrom("a", "b", "c"),
      clientId: fc.constantFrom("x", "y", "z", "w"),
      requestId: fc.nat(5),
    }),
    fc.record({
      op: fc.constant("cas" as const),
      key: fc.constantFrom("a", "b", "c"),
      expected: fc.option(fc.string({ maxLength: 3 }), { nil: null }),
      value: fc.string({ maxLength: 3 }),
      clientId: fc.constantFrom("x", "y", "z", "w"),
      requestId: fc.nat(5),
    }),
  );

  it("is deterministic and snapshot/restore at any point gives the same final state (property)", () => {
    fc.assert(
      fc.property(fc.array(commandArb, { maxLength: 40 }), fc.nat(40), (commands, cutAt) => {
        const entries = commands.map((c, i) => entry(i + 1, c));
        const cut = Math.min(cutAt, entries.length);
        const a = new KvStateMachine({ sessionsMax: 3 });
        const b = new KvStateMachine({ sessionsMax: 3 });
        const resultsA = entries.map((e) => a.apply(e));
        for (const e of entries.slice(0, cut)) b.apply(e);
        const c = new KvStateMachine({ sessionsMax: 3 });
        c.restore(b.snapshot());
        expect(c.appliedIndex).toBe(cut);
        const resultsC = entries.slice(cut).map((e) => c.apply(e));
        expect(resultsC).toEqual(resultsA.slice(cut));
        expect(c.snapshot()).toEqual(a.snapshot());
      }),
      { numRuns: 300 },
    );
  });
});
