// One compliance suite for every Transport adapter (STYLE.md item 2). Each adapter's test file
// calls transportCompliance() with a harness that creates started transports.

import { afterEach, describe, expect, it } from "vitest";
import { isCfnError } from "../../src/errors.js";
import type { Metrics } from "../../src/obs/metrics.js";
import { EntryType, type Message, MessageType, type NodeId } from "../../src/raft/types.js";
import type { SnapshotStatus, Transport, TransportLimits } from "../../src/transport/transport.js";

export interface CreatedTransport {
  transport: Transport;
  url: string;
  metrics: Metrics;
}

export interface TransportHarness {
  /** Creates and starts a transport for `nodeId`. */
  create(nodeId: NodeId, limits?: Partial<TransportLimits>): Promise<CreatedTransport>;
  /** An address where nothing answers. */
  unreachableUrl(): Promise<string>;
  /** Closes everything created (called after each test). */
  cleanup(): Promise<void>;
  /** Builds (without starting) a transport, to check limit validation. */
  build(nodeId: NodeId, limits: Partial<TransportLimits>): Transport;
}

export function message(from: NodeId, to: NodeId, overrides: Partial<Message> = {}): Message {
  return {
    type: MessageType.App,
    from,
    to,
    term: 3,
    index: 10,
    logTerm: 2,
    entries: [],
    commit: 9,
    reject: false,
    rejectHint: 0,
    ...overrides,
  };
}

export async function waitFor(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Collects what a transport receives. */
export function inbox(transport: Transport) {
  const frames: { from: NodeId; messages: Message[] }[] = [];
  transport.onMessages((messages, from) => frames.push({ from, messages }));
  return {
    frames,
    messages: () => frames.flatMap((frame) => frame.messages),
  };
}

async function connect(harness: TransportHarness, ids: NodeId[], limits?: Partial<TransportLimits>) {
  const nodes = new Map<NodeId, CreatedTransport>();
  for (const id of ids) nodes.set(id, await harness.create(id, limits));
  for (const [id, node] of nodes) {
    for (const [otherId, other] of nodes) if (otherId !== id) node.transport.addPeer(otherId, other.url);
  }
  return (id: NodeId) => {
    const node = nodes.get(id);
    if (!node) throw new Error(`no node ${id}`);
    return node;
  };
}

function expectCode(call: () => unknown, code: string): void {
  let thrown: unknown;
  try {
    call();
  } catch (error) {
    thrown = error;
  }
  expect(isCfnError(thrown), `expected ${code}, got ${String(thrown)}`).toBe(true);
  expect((thrown as { code: string }).code).toBe(code);
}

export function transportCompliance(name: string, harness: TransportHarness): void {
  describe(`Transport compliance: ${name}`, () => {
    afterEach(() => harness.cleanup());

    it("delivers Raft messages intact, one frame per destination per send", async () => {
      const node = await connect(harness, ["a", "b", "c"]);
      const atB = inbox(node("b").transport);
      const atC = inbox(node("c").transport);
      const withEntries = message("a", "b", {
        entries: [
          { term: 3, index: 11, type: EntryType.Normal, data: Uint8Array.from([1, 2, 3]) },
          { term: 3, index: 12, type: EntryType.ConfChange, data: new Uint8Array(0) },
        ],
        context: Uint8Array.from([9, 9]),
      });
      const toC = message("a", "c", { type: MessageType.Heartbeat, index: 0, logTerm: 0 });
      const vote = message("a", "b", { type: MessageType.VoteResp, reject: true, rejectHint: 4 });
      node("a").transport.send([withEntries, toC, vote]);
      await waitFor(() => atB.messages().length === 2 && atC.messages().length === 1, "delivery to b and c");
      expect(atB.frames).toHaveLength(1);
      expect(atB.frames[0].from).toBe("a");
      expect(atB.frames[0].messages).toEqual([withEntries, vote]);
      expect(atB.frames[0].messages[0].entries[0].data).toBeInstanceOf(Uint8Array);
      expect(atC.frames[0].messages).toEqual([toC]);
      expect(await node("a").metrics.value("cfn_transport_frames_sent_total", { channel: "raft" })).toBe(2);
      expect(await node("a").metrics.value("cfn_transport_raft_messages_sent_total")).toBe(3);
      expect(await node("b").metrics.value("cfn_transport_raft_messages_received_total")).toBe(2);
    });

    it("keeps per-peer order across many sends", async () => {
      const node = await connect(harness, ["a", "b"]);
      const atB = inbox(node("b").transport);
      for (let i = 1; i <= 300; i++) node("a").transport.send([message("a", "b", { index: i })]);
      await waitFor(() => atB.messages().length === 300, "300 messages");
      expect(atB.messages().map((m) => m.index)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    });

    it("splits a batch larger than frameBytesMax into several frames, in order", async () => {
      const node = await connect(harness, ["a", "b"], { frameBytesMax: 64 * 1024 });
      const atB = inbox(node("b").transport);
      const big = Array.from({ length: 60 }, (_, i) =>
        message("a", "b", {
          index: i,
          entries: [{ term: 1, index: i + 1, type: 0, data: new Uint8Array(4096).fill(i) }],
        }),
      );
      node("a").transport.send(big);
      await waitFor(() => atB.messages().length === 60, "60 large messages");
      expect(atB.frames.length).toBeGreaterThan(1);
      expect(atB.messages().map((m) => m.entries[0].data[0])).toEqual(big.map((_, i) => i));
    });

    it("drops a single Raft message larger than frameBytesMax, counts it, sends the rest", async () => {
      const node = await connect(harness, ["a", "b"], { frameBytesMax: 16 * 1024 });
      const atB = inbox(node("b").transport);
      const statuses: SnapshotStatus[] = [];
      node("a").transport.onSnapshotStatus((_peer, status) => statuses.push(status));
      const huge = message("a", "b", {
        type: MessageType.Snap,
        snapshot: {
          metadata: {
            index: 40,
            term: 3,
            conf: {
              voters: ["a", "b"],
              learners: [],
              votersOutgoing: [],
              learnersNext: [],
              autoLeave: false,
            },
          },
          data: new Uint8Array(32 * 1024),
        },
      });
      node("a").transport.send([huge, message("a", "b", { index: 77 })]);
      await waitFor(() => atB.messages().length === 1, "the small message");
      expect(atB.messages()[0].index).toBe(77);
      expect(statuses).toEqual([{ index: 40, failed: true }]);
      expect(
        await node("a").metrics.value("cfn_transport_raft_messages_dropped_total", { reason: "too_large" }),
      ).toBe(1);
    });

    it("reports a sent snapshot as finished and delivers it intact", async () => {
      const node = await connect(harness, ["a", "b"]);
      const atB = inbox(node("b").transport);
      const statuses: [NodeId, SnapshotStatus][] = [];
      node("a").transport.onSnapshotStatus((peer, status) => statuses.push([peer, status]));
      const snap = message("a", "b", {
        type: MessageType.Snap,
        snapshot: {
          metadata: {
            index: 55,
            term: 4,
            conf: {
              voters: ["a", "b"],
              learners: ["c"],
              votersOutgoing: [],
              learnersNext: [],
              autoLeave: false,
            },
          },
          data: Uint8Array.from({ length: 3000 }, (_, i) => i % 251),
        },
        snapshotChunk: { offset: 0, total: 3000, last: true },
      });
      node("a").transport.send([snap]);
      await waitFor(
        () => atB.messages().length === 1 && statuses.length === 1,
        "snapshot delivery and status",
      );
      expect(atB.messages()[0]).toEqual(snap);
      expect(statuses).toEqual([["b", { index: 55, failed: false }]]);
    });

    it("carries other channels with sendFrame/onFrame, separated by channel", async () => {
      const node = await connect(harness, ["a", "b"]);
      const bus: [unknown, NodeId][] = [];
      const other: unknown[] = [];
      node("b").transport.onFrame("bus", (payload, from) => bus.push([payload, from]));
      node("b").transport.onFrame("other", (payload) => other.push(payload));
      const payload = { id: "m-1", to: "agent-7", body: "hello", attempts: 2, tags: ["x", "y"] };
      expect(node("a").transport.sendFrame("b", "bus", payload)).toBe(true);
      await waitFor(() => bus.length === 1, "bus frame");
      expect(bus[0]).toEqual([payload, "a"]);
      expect(other).toEqual([]);
      expect(await node("b").metrics.value("cfn_transport_frames_received_total", { channel: "bus" })).toBe(
        1,
      );
    });

    it("refuses the raft channel and bad channel names in sendFrame", async () => {
      const node = await connect(harness, ["a", "b"]);
      expectCode(() => node("a").transport.sendFrame("b", "raft", {}), "CFN_ERR_INVALID_MESSAGE");
      expectCode(() => node("a").transport.sendFrame("b", "Bad Channel", {}), "CFN_ERR_INVALID_MESSAGE");
    });

    it("refuses a frame larger than frameBytesMax in sendFrame", async () => {
      const node = await connect(harness, ["a", "b"], { frameBytesMax: 8 * 1024 });
      expectCode(
        () => node("a").transport.sendFrame("b", "bus", { blob: new Uint8Array(9 * 1024) }),
        "CFN_ERR_FRAME_TOO_LARGE",
      );
    });

    it("drops messages to unknown peers and counts them; sendFrame to one throws", async () => {
      const node = await connect(harness, ["a", "b"]);
      node("a").transport.send([message("a", "zz"), message("a", "zz")]);
      expect(
        await node("a").metrics.value("cfn_transport_raft_messages_dropped_total", {
          reason: "unknown_peer",
        }),
      ).toBe(2);
      expectCode(() => node("a").transport.sendFrame("zz", "bus", {}), "CFN_ERR_PEER_UNREACHABLE");
    });

    it("accepts nothing from a node that is not its peer", async () => {
      const a = await harness.create("a");
      const b = await harness.create("b");
      a.transport.addPeer("b", b.url); // b does not know a
      const atB = inbox(b.transport);
      a.transport.send([message("a", "b")]);
      await waitFor(
        async () =>
          (await b.metrics.value("cfn_transport_auth_rejected_total", { reason: "unknown_node" })) > 0,
        "a rejection",
      );
      expect(atB.messages()).toEqual([]);
    });

    it("reports a peer that cannot be reached", async () => {
      const a = await harness.create("a");
      const unreachable: NodeId[] = [];
      a.transport.onPeerUnreachable((peer) => unreachable.push(peer));
      a.transport.addPeer("ghost", await harness.unreachableUrl());
      a.transport.send([message("a", "ghost")]);
      await waitFor(() => unreachable.includes("ghost"), "an unreachable report");
    });

    it("after removePeer, messages to that peer are dropped as unknown", async () => {
      const node = await connect(harness, ["a", "b"]);
      const atB = inbox(node("b").transport);
      node("a").transport.send([message("a", "b", { index: 1 })]);
      await waitFor(() => atB.messages().length === 1, "first message");
      node("a").transport.removePeer("b");
      node("a").transport.send([message("a", "b", { index: 2 })]);
      expect(
        await node("a").metrics.value("cfn_transport_raft_messages_dropped_total", {
          reason: "unknown_peer",
        }),
      ).toBe(1);
      expectCode(() => node("a").transport.sendFrame("b", "bus", {}), "CFN_ERR_PEER_UNREACHABLE");
    });

    it("a closed transport takes no more work; close is idempotent", async () => {
      const node = await connect(harness, ["a", "b"]);
      const a = node("a").transport;
      await a.close();
      await a.close();
      expect(() => a.send([message("a", "b")])).not.toThrow();
      expect(
        await node("a").metrics.value("cfn_transport_raft_messages_dropped_total", { reason: "closed" }),
      ).toBe(1);
      expectCode(() => a.sendFrame("b", "bus", {}), "CFN_ERR_CLOSED");
      await expect(a.start()).rejects.toMatchObject({ code: "CFN_ERR_CLOSED" });
    });

    it("validates limits at construction", () => {
      expectCode(
        () => harness.build("x", { reconnectDelayMsMin: 500, reconnectDelayMsMax: 100 }),
        "CFN_ERR_CONFIG_INVALID",
      );
      expectCode(() => harness.build("x", { frameBytesMax: 0 }), "CFN_ERR_CONFIG_INVALID");
      expectCode(() => harness.build("x", { peerQueueFramesMax: 1.5 }), "CFN_ERR_CONFIG_INVALID");
    });
  });
}
