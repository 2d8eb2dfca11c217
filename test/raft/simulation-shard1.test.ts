// Shard 1 of the simulation seeds; see simulation.test.ts.

import { describe, it } from "vitest";
import {
  emptyCoverage,
  registerCoverageCheck,
  registerSeedChunks,
  replaySeed,
} from "./simulation-harness.js";

describe("raft simulation, shard 1", () => {
  if (replaySeed() !== undefined) {
    it("leaves a replay to shard 0", () => {});
    return;
  }
  const coverage = emptyCoverage();
  registerSeedChunks(1, coverage);
  registerCoverageCheck(coverage);
});
