// Cluster operations a new user tries on a 3-node local cluster, through the CLI and the API of
// any member (real node processes): leadership transfer through a follower, `cfn cluster status`
// with no token, a routing change with quorum lost, a leader restarted after SIGTERM coming
// back `active`, a stopped `leaving` member shown `down`, and a join refused for another
// cluster's id (nothing written to its data dir).

import { existsSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { LaunchedNode } from "../../cluster/node-launcher.js";
import { SINGLE_NODE_TOKEN } from "../../src/config/node-schema.js";
import {
  api,
  cli,
  envWithoutToken,
  type NodeProcess,
  TestCluster,
  TOKEN,
  tryStatus,
  waitFor,
} from "./harness.js";

let cluster: TestCluster | undefined;
let cleanupSolo: LaunchedNode | undefined;

afterEach(async () => {
  if (cleanupSolo?.running) {
    cleanupSolo.signal("SIGKILL");
    await cleanupSolo.waitExit();
  }
  cleanupSolo = undefined;
  await cluster?.stop();
  cluster = undefined;
});

/** `id`'s member record as `node` sees it. */
async function memberState(node: NodeProcess, id: string): Promise<string | undefined> {
  const status = await tryStatus(node);
  return status?.members.find((member: { id: string }) => member.id === id)?.state;
}

describe("cluster operations through any member (3 node processes)", () => {
  it("transfers leadership through a follower's API; status needs no token; writes without one are refused", async () => {
    cluster = await TestCluster.create(3);
    await cluster.startAll();
    const leader = await cluster.leader();
    const [through, to] = cluster.nodes.filter((node) => node !== leader);

    const moved = await cli(["cluster", "transfer", to.id, "--api", through.api, "--token", TOKEN]);
    expect(moved.code, moved.stderr).toBe(0);
    expect(moved.stdout).toContain(`leader is ${to.id}`);
    for (const node of cluster.nodes)
      await waitFor(
        `${node.id} knows ${to.id} leads`,
        async () => (await tryStatus(node))?.raft.leader === to.id,
      );

    // Reads need no token (security.anonymousReadAllowed): none is sent when none is given,
    // also to the leader asked for the lag.
    const status = await cli(["cluster", "status", "--api", through.api, "--json"], envWithoutToken());
    expect(status.code, status.stderr).toBe(0);
    const json = JSON.parse(status.stdout);
    expect(json.raft.leader).toBe(to.id);
    expect(json.members.map((member: { lag: number | null }) => member.lag)).not.toContain(null);
    // A write still needs the cluster's token, and the refusal says none was given.
    const write = await cli(["cluster", "register", "w1", "--api", through.api], envWithoutToken());
    expect(write.code).toBe(1);
    expect(write.stderr).toContain("CFN_ERR_AUTH");
    expect(write.stderr).toContain("no token given");
  });

  it("with quorum lost a routing change fails with CFN_ERR_TIMEOUT 'no leader' (exit 3), not an unreachable API", async () => {
    cluster = await TestCluster.create(3);
    await cluster.startAll();
    const [survivor, ...killed] = cluster.nodes;
    for (const node of killed) await node.kill9();
    await waitFor(
      "the survivor knows no leader",
      async () => (await tryStatus(survivor))?.raft.leader === "",
    );
    const started = Date.now();
    const result = await cli(["cluster", "register", "q1", "--api", survivor.api, "--token", TOKEN]);
    expect(result.code, result.stderr).toBe(3);
    expect(result.stderr).toContain("CFN_ERR_TIMEOUT");
    expect(result.stderr).toContain("no leader");
    expect(Date.now() - started).toBeLessThan(9_000);
  });

  it("a leader stopped with SIGTERM and restarted on its data dir returns to active; a stopped leaving member is shown down", async () => {
    cluster = await TestCluster.create(3);
    await cluster.startAll();
    const first = cluster.nodes;
    const leader = await cluster.leader();
    const others = first.filter((node) => node !== leader);
    leader.signal("SIGTERM");
    expect(await leader.waitExit(), leader.stderr).toBe(0);
    // It said it was leaving; stopped, it stops heartbeating and is shown down.
    const next = await cluster.leader(others);
    await waitFor(`${leader.id} down`, async () => (await memberState(next, leader.id)) === "down", 10_000);

    await leader.start(cluster.peerFlags(leader));
    await waitFor(
      `${leader.id} active again everywhere`,
      async () => {
        for (const node of first) if ((await memberState(node, leader.id)) !== "active") return false;
        return true;
      },
      10_000,
    );
    // A `leaving` applied while it runs (as a restarted leader's own last shutdown can commit
    // after its restart read a stale `active`) is answered by announcing again.
    const marked = await api(next.api, "POST", "/v1/routing", {
      command: { op: "member.state", id: leader.id, state: "leaving" },
    });
    expect(marked.status, JSON.stringify(marked.json)).toBe(200);
    await waitFor(`${leader.id} announced active after the leaving entry`, async () => {
      const states = await Promise.all(first.map((node) => memberState(node, leader.id)));
      return states.every((state) => state === "active");
    });
  });

  it("refuses a join through a member of another cluster id, before writing the data dir", async () => {
    cluster = await TestCluster.create(1);
    const [n1] = cluster.nodes;
    await n1.start(["--cluster-id", "demo"]);
    await cluster.waitReady([n1]);
    const n2 = await cluster.makeNode("n2");
    const refused = await n2.runToExit(["--token", TOKEN, "--join", n1.api]);
    expect(refused.code, refused.stderr).toBe(2);
    expect(refused.stderr).toContain("CFN_ERR_CONFIG_INVALID");
    expect(refused.stderr).toContain('that member is of cluster "demo"');
    expect(existsSync(n2.spec.dataDir)).toBe(false);
    // The member refuses such a join too (a joining node says its cluster id).
    const direct = await api(n1.api, "POST", "/v1/members", {
      id: "n9",
      peerUrl: "ws://127.0.0.1:1",
      apiUrl: "http://127.0.0.1:2",
      clusterId: "cfn",
    });
    expect(direct.status).toBe(400);
    expect(direct.json.error.code).toBe("CFN_ERR_CONFIG_INVALID");
    expect((await tryStatus(n1))?.members.map((member: { id: string }) => member.id)).toEqual(["n1"]);
    // With the right id it joins.
    cluster.nodes.push(n2);
    await n2.start(["--join", n1.api, "--cluster-id", "demo"]);
    await cluster.waitReady([n2]);
    expect((await tryStatus(n2))?.node.clusterId).toBe("demo");
  });

  it("on a node with the single-node default token the CLI needs no token, for reads and writes", async () => {
    cluster = await TestCluster.create(1);
    const spec = cluster.nodes[0].spec;
    // `--token <the default>` is what a node started without any token runs on.
    const solo = new LaunchedNode(spec, SINGLE_NODE_TOKEN);
    cleanupSolo = solo;
    await solo.start([]);
    await cluster.waitReady([cluster.nodes[0]]);
    const env = envWithoutToken();
    const registered = await cli(["cluster", "register", "solo-agent", "--api", solo.api], env);
    expect(registered.code, registered.stderr).toBe(0);
    const status = await cli(["cluster", "status", "--api", solo.api, "--json"], env);
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout).agents.map((agent: { id: string }) => agent.id)).toEqual(["solo-agent"]);
  });
});
