// RawNode API behaviour that the scenario scripts do not show well: refusals, the Ready
// contract's assertions, mustSync, restart recovery, single-node clusters, timeouts.

import { describe, expect, it } from "vitest";
import { isCfnError } from "../../src/errors.js";
import {
  ConfChangeType,
  EntryType,
  MemoryStorage,
  MessageType,
  makeMessage,
  RawNode,
} from "../../src/raft/index.js";
import { InteractionEnv } from "./interaction/env.js";

const bytes = (s: string) => new TextEncoder().encode(s);

function errorCode(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    if (isCfnError(error)) return error.code;
    throw error;
  }
  return undefined;
}

/** Persist, (drop messages), apply, advance — for a node whose messages do not matter. */
function drain(node: RawNode, storage: MemoryStorage) {
  const all = [];
  while (node.hasReady()) {
    const rd = node.ready();
    if (rd.snapshot) storage.applySnapshot(rd.snapshot);
    storage.append(rd.entries);
    if (rd.hardState) storage.setHardState(rd.hardState);
    for (const e of rd.committedEntries) {
      if (e.type === EntryType.ConfChange) {
        node.applyConfChange(JSON.parse(new TextDecoder().decode(e.data)));
      }
    }
    all.push(rd);
    node.advance();
  }
  return all;
}

function threeNodeCluster() {
  const env = new InteractionEnv();
  env.run("add-nodes", ["3"], { voters: "(1,2,3)" });
  env.run("campaign", ["1"], {});
  env.run("stabilize", [], {});
  return env;
}

describe("RawNode", () => {
  it("refuses local message types and misaddressed messages from the network", () => {
    const storage = MemoryStorage.bootstrap({ voters: ["a", "b"] });
    const node = new RawNode({ config: { id: "a" }, storage });
    for (const type of [
      MessageType.Hup,
      MessageType.Beat,
      MessageType.CheckQuorum,
      MessageType.SnapStatus,
      MessageType.Unreachable,
    ]) {
      expect(errorCode(() => node.step(makeMessage({ type, from: "b", to: "a" })))).toBe(
        "CFN_ERR_INVALID_MESSAGE",
      );
    }
    expect(
      errorCode(() => node.step(makeMessage({ type: MessageType.Heartbeat, from: "b", to: "c", term: 5 }))),
    ).toBe("CFN_ERR_INVALID_MESSAGE");
  });

  it("asserts ready() is followed by advance()", () => {
    const storage = MemoryStorage.bootstrap({ voters: ["a"] });
    const node = new RawNode({ config: { id: "a" }, storage });
    node.campaign();
    node.ready();
    expect(() => node.ready()).toThrow(/invariant/);
    node.advance();
    expect(() => node.advance()).toThrow(/invariant/);
  });

  it("a single voter elects itself, commits proposals and answers reads at once", () => {
    const storage = MemoryStorage.bootstrap({ voters: ["a"] });
    const node = new RawNode({ config: { id: "a" }, storage });
    node.campaign();
    drain(node, storage);
    expect(node.status().role).toBe("leader");
    node.propose(bytes("x"));
    node.readIndex(bytes("r"));
    const readies = drain(node, storage);
    const committed = readies
      .flatMap((rd) => rd.committedEntries)
      .map((e) => new TextDecoder().decode(e.data));
    expect(committed).toEqual(["x"]);
    const reads = readies.flatMap((rd) => rd.readStates);
    expect(reads.length).toBe(1);
    expect(new TextDecoder().decode(reads[0].requestContext)).toBe("r");
  });

  it("mustSync is false when only the commit index moved", () => {
    const env = threeNodeCluster();
    const follower = env.nodes.get("2")!;
    env.run("propose", ["1", "a"], {});
    env.run("process-ready", ["1"], {});
    env.run("deliver-msgs", ["2"], {});
    const withEntries = follower.node.ready();
    expect(withEntries.entries.length).toBe(1);
    expect(withEntries.mustSync).toBe(true);
    follower.storage.append(withEntries.entries);
    follower.node.advance();
    env.run("stabilize", ["1", "3"], {});
    env.run("tick-heartbeat", ["1"], {});
    env.run("process-ready", ["1"], {});
    env.run("deliver-msgs", ["2"], {});
    const commitOnly = follower.node.ready();
    expect(commitOnly.entries.length).toBe(0);
    expect(commitOnly.hardState?.commit).toBe(3);
    expect(commitOnly.mustSync).toBe(false);
    follower.node.advance();
  });

  it("restarts with term, vote and commit from storage, and re-applies conf changes up to applied", () => {
    const env = threeNodeCluster();
    env.run("add-nodes", ["1"], {});
    env.run("propose-conf-change", ["1", "l4"], {});
    env.run("stabilize", [], {});
    const n2 = env.nodes.get("2")!;
    expect(n2.node.status().config.learners).toEqual(["4"]);
    // The storage's ConfState is still the bootstrap snapshot's: the learner is only in the log.
    expect(n2.storage.initialState().confState.learners).toEqual([]);
    env.run("restart", ["2"], {});
    const status = env.nodes.get("2")!.node.status();
    expect(status.config.learners).toEqual(["4"]);
    expect(status.term).toBe(2);
    expect(status.vote).toBe("1");
    expect(status.commit).toBe(n2.storage.initialState().hardState.commit);
  });

  it("refuses proposals on a follower when forwarding is disabled", () => {
    const env = new InteractionEnv();
    env.run("add-nodes", ["3"], { voters: "(1,2,3)", disableProposalForwarding: "true" });
    env.run("campaign", ["1"], {});
    env.run("stabilize", [], {});
    expect(errorCode(() => env.nodes.get("2")!.node.propose(bytes("x")))).toBe("CFN_ERR_PROPOSAL_DROPPED");
    expect(errorCode(() => env.nodes.get("1")!.node.propose(bytes("x")))).toBeUndefined();
  });

  it("lets one oversized proposal through when nothing is uncommitted, then applies backpressure", () => {
    const env = new InteractionEnv();
    env.run("add-nodes", ["3"], { voters: "(1,2,3)", uncommittedEntriesBytesMax: "4" });
    env.run("campaign", ["1"], {});
    env.run("stabilize", [], {});
    const leader = env.nodes.get("1")!.node;
    expect(errorCode(() => leader.propose(bytes("0123456789")))).toBeUndefined();
    expect(errorCode(() => leader.propose(bytes("x")))).toBe("CFN_ERR_PROPOSAL_DROPPED");
    env.run("stabilize", [], {});
    expect(errorCode(() => leader.propose(bytes("x")))).toBeUndefined();
  });

  it("gives up on a snapshot whose outcome is never reported after snapshotTimeoutTicks", () => {
    const env = new InteractionEnv();
    env.run("add-nodes", ["3"], { voters: "(1,2,3)", snapshotTimeoutTicks: "20" });
    env.run("campaign", ["1"], {});
    env.run("stabilize", [], {});
    env.run("isolate", ["3"], {});
    env.run("propose", ["1", "a"], {});
    env.run("stabilize", ["1", "2"], {});
    env.run("compact", ["1", "3"], {});
    env.run("heal", [], {});
    env.run("tick-heartbeat", ["1"], {});
    // Deliver the heartbeat round and the probe, but lose the snapshot without a report.
    for (let i = 0; i < 2; i++) {
      env.run("process-ready", ["1"], {});
      env.run("deliver-msgs", ["3"], {});
      env.run("process-ready", ["3"], {});
      env.run("deliver-msgs", ["1"], {});
    }
    env.run("process-ready", ["1"], {});
    const leader = env.nodes.get("1")!.node;
    expect(leader.status().progress["3"].state).toBe("snapshot");
    env.run("drop-msgs", ["3"], {});
    // Keep the quorum (1, 2) active meanwhile so that CheckQuorum keeps 1 leader.
    env.run("tick", ["1"], { count: "10" });
    env.run("stabilize", ["1", "2"], {});
    env.run("tick", ["1"], { count: "9" });
    env.run("stabilize", ["1", "2"], {});
    expect(leader.status().role).toBe("leader");
    expect(leader.status().progress["3"].state).toBe("snapshot");
    env.run("tick", ["1"], { count: "1" });
    expect(leader.status().progress["3"].state).toBe("probe");
    // The next heartbeat round sends a fresh snapshot, which now arrives.
    env.run("drop-msgs", ["2", "3"], {});
    env.run("tick-heartbeat", ["1"], {});
    env.run("stabilize", [], {});
    expect(leader.status().progress["3"]).toMatchObject({ state: "replicate", match: 3 });
    expect(env.nodes.get("3")!.node.status().applied).toBe(3);
  });

  it("proposeConfChange validates on the leader (one pending at a time)", () => {
    const env = threeNodeCluster();
    const leader = env.nodes.get("1")!.node;
    leader.proposeConfChange({
      changes: [{ type: ConfChangeType.AddLearner, nodeId: "9" }],
      transition: "auto",
    });
    expect(
      errorCode(() =>
        leader.proposeConfChange({
          changes: [{ type: ConfChangeType.AddLearner, nodeId: "8" }],
          transition: "auto",
        }),
      ),
    ).toBe("CFN_ERR_CONF_CHANGE");
  });
});

describe("RawNode logging", () => {
  it("reports role changes and membership to the injected logger", () => {
    const lines: string[] = [];
    const logger = {
      debug: () => {},
      info: (m: string) => lines.push(`info ${m}`),
      warn: (m: string) => lines.push(`warn ${m}`),
    };
    const storage = MemoryStorage.bootstrap({ voters: ["a"] });
    const node = new RawNode({ config: { id: "a" }, storage, logger });
    node.campaign();
    drain(node, storage);
    node.proposeConfChange({
      changes: [{ type: ConfChangeType.AddLearner, nodeId: "b" }],
      transition: "auto",
    });
    drain(node, storage);
    expect(lines).toEqual([
      "info became pre-candidate",
      "info became candidate",
      "info became leader",
      "info applying conf change",
    ]);
  });
});
