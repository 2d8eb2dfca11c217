// Seeded deterministic simulation of the Raft core (docs/TESTING_STRATEGY.md, "Simulation").
// This file runs shard 0 of the seeds, and the determinism checks; simulation-shard1.test.ts
// runs shard 1 (vitest runs the two files in parallel forks). Long run:
//   CFN_SIM_SEEDS=100000 npx vitest run test/raft/simulation
// Replay one seed with its full trace:
//   CFN_SIM_SEED=<n> npx vitest run test/raft/simulation.test.ts

import { describe, expect, it } from "vitest";
import { configForSeed } from "../../chaos/sim/config.js";
import { runSimulation } from "../../chaos/sim/simulation.js";
import {
  emptyCoverage,
  registerCoverageCheck,
  registerReplay,
  registerSeedChunks,
  replaySeed,
} from "./simulation-harness.js";

const replay = replaySeed();

describe("raft simulation, shard 0", () => {
  if (replay !== undefined) {
    registerReplay(replay);
    return;
  }

  it("replays exactly: the same seed gives the same trace, another seed another", () => {
    const hashes = new Map<number, string>();
    for (const seed of [1, 17, 4242]) {
      const first = runSimulation(configForSeed(seed));
      const second = runSimulation(configForSeed(seed));
      expect(second.traceHash).toBe(first.traceHash);
      expect(second.stats).toEqual(first.stats);
      expect(second.virtualMs).toBe(first.virtualMs);
      hashes.set(seed, first.traceHash);
    }
    expect(new Set(hashes.values()).size).toBe(hashes.size);
  });

  const coverage = emptyCoverage();
  registerSeedChunks(0, coverage);
  registerCoverageCheck(coverage);
});
