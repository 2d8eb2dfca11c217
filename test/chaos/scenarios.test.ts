// Every chaos scenario, short (one round), on the most realistic backend that runs here without
// Docker: hosts in network namespaces as root, else plain processes on loopback (where partitions
// and degraded links cannot be made; there those scenarios must be refused, naming the fault). Each run kills, cuts off,
// pauses or slows the leader of a real 3-node KV cluster (compiled kv-node, LevelDB, WebSocket)
// under load, and passes only when a leader came back within the bound, no acknowledged write was
// lost, the history is linearizable and the replicas converged. `npm run chaos` runs them long.

import { existsSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { BACKEND_FAULTS, backendUnavailableReason, localBackend } from "../../chaos/backends.js";
import { formatSummary } from "../../chaos/report.js";
import { runChaos } from "../../chaos/runner.js";
import { SCENARIOS, SHORT_TIMING } from "../../chaos/scenarios.js";
import { WORKLOAD_DEFAULTS } from "../../chaos/workload.js";
import { repoRoot } from "../../cluster/local.js";

const backend = localBackend();

beforeAll(() => {
  const entry = join(repoRoot(), "dist/cluster/kv-node.js");
  if (!existsSync(entry)) throw new Error(`${entry} is missing: run \`npm run build\` first`);
  if (backend === "processes")
    console.warn(
      `chaos: network namespaces unavailable (${backendUnavailableReason("netns")}); using processes`,
    );
});

describe(`chaos scenarios, short, on the ${backend} backend`, () => {
  for (const scenario of SCENARIOS) {
    it(`${scenario.name}: ${scenario.description}`, { timeout: 90_000 }, async () => {
      const run = () =>
        runChaos({
          scenario,
          backend,
          rounds: 1,
          timing: SHORT_TIMING,
          workload: { ...WORKLOAD_DEFAULTS, historyOpsMax: 1_500 },
        });
      const missing = scenario.needs.filter((fault) => !BACKEND_FAULTS[backend].has(fault));
      if (missing.length > 0) {
        // Plain processes cannot cut or slow links: the run must refuse up front, naming the fault.
        console.warn(`chaos: ${scenario.name}: the ${backend} backend cannot inject ${missing.join(", ")}`);
        await expect(run()).rejects.toThrow(`cannot inject ${missing.join(", ")} faults`);
        return;
      }
      const report = await run();
      const summary = formatSummary(report);
      expect(report.ok, `${summary}\n${JSON.stringify(report.logTails ?? {}, null, 1)}`).toBe(true);
      expect(
        report.elections.some((election) => election.replaced) || scenario.name === "degraded-link",
      ).toBe(true);
      expect(report.writes.acknowledged).toBeGreaterThan(0);
      expect(report.writes.lost).toBe(0);
      expect(report.history.verdict).toBe("ok");
    });
  }
});
