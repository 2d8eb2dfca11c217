// The simulator's checks must have teeth: with a deliberately broken shell, some early seed must
// fail with the property that the bug breaks. (A simulator that passes everything proves nothing.)

import { describe, expect, it } from "vitest";
import { configForSeed } from "../../chaos/sim/config.js";
import type { ShellFault } from "../../chaos/sim/node.js";
import { runSimulation } from "../../chaos/sim/simulation.js";

const SEARCH_SEEDS = 300;

function firstDetection(fault: ShellFault): { seed: number; property: string } | undefined {
  for (let seed = 1; seed <= SEARCH_SEEDS; seed++) {
    const result = runSimulation({ ...configForSeed(seed), shellFault: fault });
    if (!result.ok) return { seed, property: result.failure?.property ?? "" };
  }
  return undefined;
}

describe("simulator self-test: broken shells are caught", () => {
  const cases: [ShellFault, string[]][] = [
    // Acknowledging before the synced write: a crash loses what a quorum was told is stored.
    [
      "send-before-persist",
      ["durability", "committed prefix", "liveness", "flow control", "state-machine safety"],
    ],
    // Forgetting the vote on crash lets a node vote twice in a term: two leaders.
    [
      "forget-vote",
      ["election safety", "vote safety", "leader completeness", "durability", "committed prefix"],
    ],
    // Serving a ReadIndex read before applying up to its index returns stale values.
    ["read-without-wait", ["linearizability"]],
    // A disk that drops its last write on restart loses acknowledged entries.
    [
      "lose-tail-on-restart",
      ["durability", "committed prefix", "liveness", "flow control", "leader completeness"],
    ],
  ];
  for (const [fault, properties] of cases) {
    it(`catches ${fault}`, () => {
      const found = firstDetection(fault);
      expect(found, `no seed in 1..${SEARCH_SEEDS} caught ${fault}`).toBeDefined();
      expect(properties).toContain(found?.property);
      // The same seed with a correct shell passes: the failure is the bug's, not the scenario's.
      const clean = runSimulation(configForSeed(found?.seed ?? 0));
      expect(clean.failure).toBeUndefined();
    }, 300_000);
  }
});
