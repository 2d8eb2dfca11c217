// The chaos scenarios on the container backend: KV nodes in Docker containers (testcontainers,
// an image imported from this machine's node, a user-defined network), faults by `docker kill`,
// `docker pause` and `docker network disconnect`. Without a Docker engine the reason is printed
// and the run must refuse with it; the same scenarios still run on netns or processes
// (scenarios.test.ts).

import { describe, expect, it } from "vitest";
import { backendUnavailableReason } from "../../chaos/backends.js";
import { formatSummary } from "../../chaos/report.js";
import { runChaos } from "../../chaos/runner.js";
import { SHORT_TIMING, scenarioNamed } from "../../chaos/scenarios.js";
import { WORKLOAD_DEFAULTS } from "../../chaos/workload.js";

const dockerProblem = backendUnavailableReason("containers");

describe("chaos scenarios on Docker containers", () => {
  for (const name of ["kill-leader", "partition-leader"]) {
    it(`${name} on containers`, { timeout: 120_000 }, async () => {
      const run = () =>
        runChaos({
          scenario: scenarioNamed(name),
          backend: "containers",
          rounds: 1,
          timing: SHORT_TIMING,
          workload: { ...WORKLOAD_DEFAULTS, historyOpsMax: 1_000 },
        });
      if (dockerProblem) {
        // No engine here: the run must refuse with the reason (scenarios.test.ts runs the same
        // scenario on netns or processes).
        console.warn(`chaos: container backend unavailable: ${dockerProblem}`);
        await expect(run()).rejects.toThrow(`backend containers is unavailable: ${dockerProblem}`);
        return;
      }
      const report = await run();
      expect(report.ok, `${formatSummary(report)}\n${JSON.stringify(report.logTails ?? {}, null, 1)}`).toBe(
        true,
      );
      expect(report.elections.some((election) => election.replaced)).toBe(true);
      expect(report.writes.lost).toBe(0);
    });
  }
});
