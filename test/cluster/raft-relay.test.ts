// A contract mismatch between the Raft core (src/raft) and the Transport port (src/transport),
// found by test 4: a follower relays a ReadIndex (or proposal) it received from a peer to the
// leader it knows, keeping the peer's id in `from` (etcd does the same), but Transport.send
// asserts `from === nodeId` — so the raw Ready cannot be handed to the transport as is (the Raft
// host crashed with "send: message from n2 on n3"). RaftHost drops such relayed messages
// (src/node/raft-wire.ts). The first test states the transport's contract against the core's
// output and fails until one of the two owners settles it; the second checks the work-around.

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
    const messages = relayedReadIndex();
    expect(messages.length).toBeGreaterThan(0);
    expect(messages.filter((m) => m.from !== "n3")).toEqual([]);
  });

  it("RaftHost's wire filter drops the relayed copy and keeps the rest", () => {
    const messages = relayedReadIndex();
    const own = makeMessage({ type: MessageType.HeartbeatResp, from: "n3", to: "n1", term: 2 });
    const wire = encodeForWire([...messages, own], "n3");
    expect(wire.every((m) => m.from === "n3")).toBe(true);
    expect(wire).toContain(own);
  });
});
