// The proposal envelope of the Raft host and the KV client protocol's request parser.

import { describe, expect, it } from "vitest";
import { decodeKvFrame, encodeKvFrame, parseKvRequest } from "../../cluster/kv-protocol.js";
import {
  decodeEnvelope,
  ENVELOPE_HEADER_BYTES,
  encodeEnvelope,
  sameIncarnation,
} from "../../src/node/raft-envelope.js";

describe("proposal envelope", () => {
  const incarnation = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);

  it("round-trips incarnation, sequence and command", () => {
    const command = new TextEncoder().encode('{"op":"put"}');
    const bytes = encodeEnvelope(incarnation, 2 ** 40 + 7, command);
    expect(bytes.byteLength).toBe(ENVELOPE_HEADER_BYTES + command.byteLength);
    const decoded = decodeEnvelope(bytes);
    expect(decoded?.sequence).toBe(2 ** 40 + 7);
    expect(sameIncarnation(decoded!.incarnation, incarnation)).toBe(true);
    expect(Buffer.from(decoded!.command).toString()).toBe('{"op":"put"}');
  });

  it("passes other entry data through (the no-op, foreign bytes)", () => {
    expect(decodeEnvelope(new Uint8Array(0))).toBeUndefined();
    expect(decodeEnvelope(new TextEncoder().encode('{"op":"put","key":"k","value":"v"}'))).toBeUndefined();
  });

  it("tells incarnations apart", () => {
    expect(sameIncarnation(incarnation, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 9]))).toBe(false);
  });
});

describe("kv client protocol", () => {
  it("parses well-formed requests and refuses malformed ones", () => {
    expect(parseKvRequest({ id: 1, op: "put", key: "k", value: "v", clientId: "c", seq: 3 })).toEqual({
      id: 1,
      op: "put",
      key: "k",
      value: "v",
      clientId: "c",
      seq: 3,
    });
    expect(
      parseKvRequest({ id: 2, op: "cas", key: "k", expected: null, value: "v", clientId: "c", seq: 4 })?.op,
    ).toBe("cas");
    expect(parseKvRequest({ id: 3, op: "get", key: "k" })).toEqual({ id: 3, op: "get", key: "k" });
    expect(parseKvRequest({ id: 4, op: "status", digest: true })).toEqual({
      id: 4,
      op: "status",
      digest: true,
    });
    expect(parseKvRequest({ id: 5, op: "put", key: "k", clientId: "c", seq: 1 })).toBeUndefined(); // no value
    expect(
      parseKvRequest({ id: 6, op: "put", key: "k", value: "v", clientId: "c", seq: 1.5 }),
    ).toBeUndefined();
    expect(parseKvRequest({ op: "get", key: "k" })).toBeUndefined(); // no id
    expect(parseKvRequest("get k")).toBeUndefined();
  });

  it("frames are msgpack arrays", () => {
    const frame = encodeKvFrame([{ id: 1, ok: true, value: null }]);
    expect(decodeKvFrame(frame)).toEqual([{ id: 1, ok: true, value: null }]);
    expect(() => decodeKvFrame(encodeKvFrame({} as never))).toThrow();
  });
});
