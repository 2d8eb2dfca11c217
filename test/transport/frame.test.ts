// The frame codec and the Raft message validator: valid messages round-trip, anything else is
// refused with CFN_ERR_BAD_FRAME (never another kind of exception, which would be a bug).

import fc from "fast-check";
import { Packr } from "msgpackr";
import { describe, expect, it } from "vitest";
import { isCfnError } from "../../src/errors.js";
import { type Message, MessageType } from "../../src/raft/types.js";
import { decodeFrame, encodeFrame, encodeRaftFrames, parseRaftPayload } from "../../src/transport/frame.js";

const id = fc.constantFrom("a", "b");
const index = fc.nat({ max: 2 ** 40 });
const bytes = fc.uint8Array({ maxLength: 64 });
const entry = fc.record({
  term: index,
  index,
  type: fc.constantFrom(0, 1) as fc.Arbitrary<0 | 1>,
  data: bytes,
});
const conf = fc.record({
  voters: fc.array(id),
  learners: fc.array(id),
  votersOutgoing: fc.array(id),
  learnersNext: fc.array(id),
  autoLeave: fc.boolean(),
});
const messageArbitrary: fc.Arbitrary<Message> = fc.record(
  {
    type: fc.constantFrom(...Object.values(MessageType)),
    from: fc.constant("a"),
    to: fc.constant("b"),
    term: index,
    index,
    logTerm: index,
    entries: fc.array(entry, { maxLength: 4 }),
    commit: index,
    reject: fc.boolean(),
    rejectHint: index,
    snapshot: fc.record({ metadata: fc.record({ index, term: index, conf }), data: bytes }),
    snapshotChunk: fc.record({ offset: index, total: index, last: fc.boolean() }),
    context: bytes,
    leaderTransfer: fc.constant(true),
  },
  {
    requiredKeys: [
      "type",
      "from",
      "to",
      "term",
      "index",
      "logTerm",
      "entries",
      "commit",
      "reject",
      "rejectHint",
    ],
  },
);

function roundTrip(messages: Message[]): Message[] {
  const { channel, payload } = decodeFrame(encodeFrame("raft", messages));
  expect(channel).toBe("raft");
  return parseRaftPayload(payload, "a", "b");
}

function refusal(run: () => unknown): unknown {
  try {
    run();
    return undefined;
  } catch (error) {
    return error;
  }
}

describe("frame codec", () => {
  it("round-trips any valid batch of Raft messages", () => {
    fc.assert(
      fc.property(fc.array(messageArbitrary, { minLength: 1, maxLength: 5 }), (messages) => {
        expect(roundTrip(messages)).toEqual(messages);
      }),
      { numRuns: 300 },
    );
  });

  it("refuses random bytes with CFN_ERR_BAD_FRAME only", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (garbage) => {
        const error = refusal(() => {
          const { channel, payload } = decodeFrame(garbage);
          if (channel === "raft") parseRaftPayload(payload, "a", "b");
        });
        if (error !== undefined) expect(isCfnError(error, "CFN_ERR_BAD_FRAME")).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it("refuses well-encoded but ill-shaped Raft payloads with CFN_ERR_BAD_FRAME only", () => {
    const packr = new Packr({ useRecords: false });
    fc.assert(
      fc.property(fc.anything({ withTypedArray: true, maxDepth: 3 }), (payload) => {
        const encoded = (() => {
          try {
            return Uint8Array.prototype.slice.call(packr.pack([1, "raft", payload]));
          } catch {
            return undefined; // not msgpack-encodable; nothing to test
          }
        })();
        if (!encoded) return;
        const error = refusal(() => parseRaftPayload(decodeFrame(encoded).payload, "a", "b"));
        expect(error === undefined || isCfnError(error, "CFN_ERR_BAD_FRAME")).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });

  it("refuses each kind of malformed message, naming the reason", () => {
    const good: Message = {
      type: MessageType.App,
      from: "a",
      to: "b",
      term: 1,
      index: 0,
      logTerm: 0,
      entries: [],
      commit: 0,
      reject: false,
      rejectHint: 0,
    };
    const cases: [unknown, string][] = [
      [[], "shape"],
      [[{ ...good, type: "nope" }], "shape"],
      [[{ ...good, term: -1 }], "shape"],
      [[{ ...good, term: 1.5 }], "shape"],
      [[{ ...good, from: "c" }], "sender"],
      [[{ ...good, to: "c" }], "shape"],
      [[{ ...good, entries: [{ term: 1, index: 1, type: 0, data: "text" }] }], "shape"],
      [[{ ...good, snapshot: { metadata: { index: 1, term: 1 }, data: new Uint8Array() } }], "shape"],
      [[{ ...good, context: 5 }], "shape"],
      [[{ ...good, leaderTransfer: "yes" }], "shape"],
    ];
    for (const [payload, reason] of cases) {
      const error = refusal(() => parseRaftPayload(payload, "a", "b"));
      expect(isCfnError(error, "CFN_ERR_BAD_FRAME"), JSON.stringify(payload)).toBe(true);
      expect((error as { details: { reason: string } }).details.reason).toBe(reason);
    }
    expect(
      (refusal(() => decodeFrame(encodeFrame("raft", [good]).slice(0, 5))) as { code: string }).code,
    ).toBe("CFN_ERR_BAD_FRAME");
    const wrongVersion = Uint8Array.prototype.slice.call(
      new Packr({ useRecords: false }).pack([2, "raft", [good]]),
    );
    expect((refusal(() => decodeFrame(wrongVersion)) as { details: { reason: string } }).details.reason).toBe(
      "version",
    );
  });

  it("splits by frameBytesMax and isolates single messages that cannot fit", () => {
    const small = (i: number): Message => ({
      type: MessageType.App,
      from: "a",
      to: "b",
      term: 1,
      index: i,
      logTerm: 0,
      entries: [{ term: 1, index: i, type: 0, data: new Uint8Array(i === 3 ? 5000 : 500) }],
      commit: 0,
      reject: false,
      rejectHint: 0,
    });
    const messages = [0, 1, 2, 3, 4, 5].map(small);
    const { frames, tooLarge } = encodeRaftFrames(messages, 2048);
    expect(tooLarge.map((m) => m.index)).toEqual([3]);
    expect(frames.every((frame) => frame.bytes.byteLength <= 2048)).toBe(true);
    expect(frames.flatMap((frame) => frame.messages.map((m) => m.index))).toEqual([0, 1, 2, 4, 5]);
  });
});
