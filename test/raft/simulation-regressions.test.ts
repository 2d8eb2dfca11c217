// Raft core bugs the simulator found, kept as regression tests. Each names the seed that found
// it (seeds drift as the core changes, so the direct reproduction is the durable test).

import { describe, expect, it } from "vitest";
import { configForSeed } from "../../chaos/sim/config.js";
import { runSimulation } from "../../chaos/sim/simulation.js";
import {
  ConfChangeType,
  type ConfState,
  EntryType,
  encodeConfChange,
  MemoryStorage,
  RawNode,
} from "../../src/raft/index.js";

describe("raft regressions found by the simulator", () => {
  // Seed 197 (2026-11-24): a node restarted from a snapshot taken in a joint configuration,
  // with the log kept a few entries behind the snapshot (createSnapshot, then compact a little
  // behind, as storage.ts recommends). The core replayed the conf changes from the log's first
  // index instead of after the snapshot index, re-applied the joint change the snapshot already
  // holds, and threw "already in a joint config" from the RawNode constructor. Fixed in
  // 537e23d (replay starts after the snapshot index).
  it("restarts from a snapshot in a joint config when the log still holds the conf change", () => {
    const storage = MemoryStorage.bootstrap({ voters: ["a", "b", "c"] });
    const joint = encodeConfChange({
      changes: [
        { type: ConfChangeType.AddVoter, nodeId: "d" },
        { type: ConfChangeType.RemoveNode, nodeId: "c" },
      ],
      transition: "auto",
    });
    storage.append([
      { term: 1, index: 2, type: EntryType.Normal, data: new Uint8Array(0) },
      { term: 1, index: 3, type: EntryType.ConfChange, data: joint },
      { term: 1, index: 4, type: EntryType.Normal, data: new Uint8Array(0) },
    ]);
    storage.setHardState({ term: 1, vote: "", commit: 4 });
    const jointConf: ConfState = {
      voters: ["a", "b", "d"],
      learners: [],
      votersOutgoing: ["a", "b", "c"],
      learnersNext: [],
      autoLeave: true,
    };
    storage.createSnapshot(4, jointConf, new Uint8Array(0));
    storage.compact(2); // keep entries 3..4 behind the snapshot for slow followers
    const node = new RawNode({ config: { id: "a", applied: 4 }, storage });
    const conf = node.status().config;
    expect([...conf.voters].sort()).toEqual(["a", "b", "d"]);
    expect([...conf.votersOutgoing].sort()).toEqual(["a", "b", "c"]);
  });

  // Seed 1604 (4742, 2756, 3203, 3678 before pauses joined the mix): the same replay, leaving a
  // joint config: "cannot leave a non-joint config".
  for (const seed of [197, 1604]) {
    it(`seed ${seed} passes the simulation`, () => {
      const result = runSimulation(configForSeed(seed));
      if (!result.ok) console.error(result.report);
      expect(result.failure).toBeUndefined();
    });
  }
});
