// `cfn cluster status` on a node that knows no leader says that its member states are the
// replicated ones as it last applied them: a node cut off from the leader listed its peers
// "active" 41 s after it last heard from them, with nothing to say that this may be stale.

import { afterEach, describe, expect, it } from "vitest";
import { cli, TestCluster, TOKEN, tryStatus, waitFor } from "./harness.js";

let cluster: TestCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

describe("cluster status without a leader", () => {
  it("says the member states may be stale; with a leader it does not", async () => {
    cluster = await TestCluster.create(2);
    const [n1, n2] = cluster.nodes;
    await cluster.startAll();
    const env = { ...process.env, CFN_CLUSTER_TOKEN: TOKEN };
    const NOTE = "no leader known here: STATE is the replicated state as this node last applied it";
    const led = await cli(["cluster", "status", "--api", n1.api], env);
    expect(led.code, led.stderr).toBe(0);
    expect(led.stdout).not.toContain(NOTE);
    await n2.kill9(); // two voters: the survivor has no quorum, so no leader
    await waitFor("n1 without a leader", async () => (await tryStatus(n1))?.raft.leader === "");
    const alone = await cli(["cluster", "status", "--api", n1.api], env);
    expect(alone.code, alone.stderr).toBe(0);
    expect(alone.stdout).toMatch(/leader \(none\)/);
    expect(alone.stdout).toContain(NOTE);
  });
});
