// The cfn node daemon under chaos (chaos/node-messages.ts), short: 3 `cfn node start` processes
// on network-namespace hosts (loopback processes without root), cross-node messages between
// agents of every host, consuming as they go, while the leader is killed with SIGKILL and
// restarted, the nodes mirroring their inboxes (persistence) — and, on network namespaces, while
// the leader's host is cut off from the others and healed: afterwards every accepted message
// reached its receiver exactly once, in per-sender order. Also a node removed under traffic (it
// hands off its spool and last acks) and joined again. (Without persistence: `npm run chaos`.)

import { describe, expect, it } from "vitest";
import { localBackend } from "../../chaos/backends.js";
import { formatNodeMessagesSummary, runNodeMessagesChaos } from "../../chaos/node-messages.js";
import { SHORT_TIMING } from "../../chaos/scenarios.js";

const backend = localBackend() === "netns" ? "netns" : "processes";

describe(`the cfn node under chaos, on ${backend}`, () => {
  it("kill -9 the leader during cross-node traffic, agents consuming, nodes with persistence: 0 lost, 0 duplicated, order kept", {
    timeout: 120_000,
  }, async () => {
    const report = await runNodeMessagesChaos({
      backend,
      rounds: 1,
      timing: SHORT_TIMING,
      persistence: true,
    });
    expect(report.ok, formatNodeMessagesSummary(report)).toBe(true);
    expect(report.messages.sent).toBeGreaterThan(0);
    expect(report.messages.lost).toBe(0);
    expect(report.messages.duplicated).toBe(0);
    expect(report.elections).toHaveLength(1);
  });

  it("remove the leader, then a follower, under cross-node traffic; each hands off, exits, joins again on a fresh data dir: 0 lost, 0 duplicated, order kept", {
    timeout: 120_000,
  }, async () => {
    const report = await runNodeMessagesChaos({ backend, rounds: 2, timing: SHORT_TIMING, fault: "remove" });
    expect(report.ok, formatNodeMessagesSummary(report)).toBe(true);
    expect(report.scenario).toBe("node-remove-rejoin");
    expect(report.messages.sent).toBeGreaterThan(0);
    expect(report.messages.lost).toBe(0);
    expect(report.messages.duplicated).toBe(0);
    expect(report.elections).toHaveLength(2);
  });

  it("cut the leader's host off during cross-node traffic, hold, heal: 0 lost, 0 duplicated, order kept", {
    timeout: 120_000,
  }, async () => {
    const run = () => runNodeMessagesChaos({ backend, rounds: 1, timing: SHORT_TIMING, fault: "partition" });
    if (backend !== "netns") {
      // Plain processes cannot cut links: the run must refuse up front, naming the fault.
      console.warn(`chaos: node-partition-leader: the ${backend} backend cannot inject partition faults`);
      await expect(run()).rejects.toThrow("cannot inject partition faults");
      return;
    }
    const report = await run();
    expect(report.ok, formatNodeMessagesSummary(report)).toBe(true);
    expect(report.scenario).toBe("node-partition-leader");
    expect(report.messages.sent).toBeGreaterThan(0);
    expect(report.messages.lost).toBe(0);
    expect(report.messages.duplicated).toBe(0);
    expect(report.elections).toHaveLength(1);
  });
});
