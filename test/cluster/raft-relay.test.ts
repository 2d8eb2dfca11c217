// A contract mismatch between the Raft core (src/raft) and the Transport port (src/transport),
// found by test 4: a follower relays a ReadIndex (or proposal) it received from a peer to the
// leader it knows, keeping the peer's id in `from` (etcd does the same), but Transport.send
// asserts `from === nodeId` — so the raw Ready could not be handed to the transport as is (the
// Raft host crashed with "send: message from n2 on n3"). Settled in the core: a follower does not
// relay a proposal or read another node forwarded to it (the requester retries), and forwards its
// own with its own id. RaftHost's wire filter (src/node/raft-wire.ts) stays as a second guard.

import { describe, expect, it } from "vitest";
import { encodeForWire } from "../../src/node/raft-wire.js";
import { MemoryStorage, MessageType, makeMessage, RawNode } from "../../src/raft/index.js";

function followerOf(leader: string): RawNode {
  const storage = MemoryStorage.bootstrap({ voters: ["n1", "n2", "n3"] });
  const node = new RawNode({ config: { id: "n3" }, storage });
  // A heartbeat from the leader makes n3 a follower that knows it.
  node.step(makeMessage({ type: MessageType.Heartbeat, from: leader, to: "n3", term: 2, commit: 1 }));
  if (node.hasReady()) {
    node.ready();
    node.advance();
  }
  return node;
}

function relayedReadIndex(): ReturnType<RawNode["ready"]>["messages"] {
  const node = followerOf("n1");
  // n2 took n3 for the leader and forwarded a read to it.
  node.step(makeMessage({ type: MessageType.ReadIndex, from: "n2", to: "n3", context: new Uint8Array([1]) }));
  return node.ready().messages;
}

describe("relayed messages between the Raft core and the transport", () => {
  it("the core's Ready only holds messages the transport accepts (from === this node)", () => {
    expect(relayedReadIndex()).toEqual([]);
    const relayedProposal = followerOf("n1");
    relayedProposal.step(
      makeMessage({
        type: MessageType.Propose,
        from: "n2",
        to: "n3",
        entries: [{ term: 0, index: 0, type: 0, data: new Uint8Array([7]) }],
      }),
    );
    expect(relayedProposal.hasReady() ? relayedProposal.ready().messages : []).toEqual([]);

    const local = followerOf("n1");
    local.readIndex(new Uint8Array([2]));
    local.propose(new Uint8Array([3]));
    const forwarded = local.ready().messages;
    expect(forwarded.map((m) => [m.type, m.from, m.to])).toEqual([
      [MessageType.ReadIndex, "n3", "n1"],
      [MessageType.Propose, "n3", "n1"],
    ]);
  });

  it("RaftHost's wire filter drops a relayed copy and keeps the rest", () => {
    const messages = [
      makeMessage({ type: MessageType.ReadIndex, from: "n2", to: "n1", context: new Uint8Array([1]) }),
    ];
    const own = makeMessage({ type: MessageType.HeartbeatResp, from: "n3", to: "n1", term: 2 });
    const wire = encodeForWire([...messages, own], "n3");
    expect(wire.every((m) => m.from === "n3")).toBe(true);
    expect(wire).toHaveLength(1);
    expect(wire).toContain(own);
  });
});
