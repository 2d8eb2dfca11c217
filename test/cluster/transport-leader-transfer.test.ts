// Regression test for a transport bug found while building the Raft host (owner: src/transport).
// parseMessage in src/transport/frame.ts copies a fixed list of Message fields and drops
// `leaderTransfer`, so the Vote a transferee sends after TimeoutNow arrives as a plain vote:
// voters inside the leader's lease ignore it and the transfer election is lost. RaftHost works
// around it (src/node/raft-wire.ts). Fixed in src/transport since; kept as a regression test.

import { describe, expect, it } from "vitest";
import { MessageType, makeMessage } from "../../src/raft/index.js";
import { parseRaftPayload } from "../../src/transport/frame.js";

describe("transport frame parser", () => {
  it("keeps Message.leaderTransfer on a Vote", () => {
    const vote = makeMessage({ type: MessageType.Vote, from: "a", to: "b", term: 3, index: 2, logTerm: 2 });
    vote.leaderTransfer = true;
    const [parsed] = parseRaftPayload([vote], "a", "b");
    expect(parsed.leaderTransfer).toBe(true);
  });
});
