// Coordination on a real cluster node (the demo's embedded single-node cluster: Raft over LevelDB,
// the node's bus): the replicated checkpoint store, and a round requested through the bus, run by
// the master on the leader with team coordinators placed by the routing state.

import { afterEach, describe, expect, it } from "vitest";
import { Bus } from "../../src/bus/index.js";
import { requestClusterRound } from "../../src/coordination/cluster-client.js";
import {
  ClusterCoordination,
  type CoordinationNode,
  swarmPolicyName,
  swarmTeamId,
} from "../../src/coordination/cluster-coordination.js";
import { startDemoCluster } from "../../src/coordination/demo-cluster.js";
import { attachCoordination, coordinationNodeOf } from "../../src/coordination/node-coordination.js";
import { RaftCheckpointStore } from "../../src/coordination/raft-checkpoint-store.js";
import { killProcesses, spawnAgents } from "../../src/coordination/spawner.js";
import { planTopology } from "../../src/coordination/topology.js";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { removeRoot, tempRoot, waitFor } from "./helpers.js";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function startNode() {
  const root = tempRoot();
  cleanups.push(() => removeRoot(root));
  const bus = { root, name: "default", inboxDepthMax: 10_000 };
  const cluster = await startDemoCluster({
    workDir: root,
    bus,
    logger: silentLogger,
    metrics: new Metrics(),
  });
  cleanups.push(async () => {
    await cluster.node.shutdown("test");
  });
  return { root, cluster, bus };
}

describe("replicated checkpoints (RaftCheckpointStore on a real node)", () => {
  it("writes through the Raft log, reads its own writes, removes a round, and stays bounded", async () => {
    const { cluster } = await startNode();
    const log = coordinationNodeOf(cluster.node);
    const store = new RaftCheckpointStore({ log, scope: "s" });
    const other = new RaftCheckpointStore({ log, scope: "other" });
    store.write("r1", "master", { tasks: 3 });
    store.write("r1", "master", { tasks: 4 }); // coalesced: the latest value wins
    store.write("r1", "coordinator-a", { settled: 1 });
    expect(store.read("r1", "master")).toEqual({ tasks: 4 }); // before commit
    await store.flush();
    expect(store.pendingRecords).toBe(0);
    expect(log.routingState.roundCheckpoints.get("s/r1/master")?.data).toEqual({ tasks: 4 });
    // A second store (another process or node after a failover) sees the same records.
    const resumed = new RaftCheckpointStore({ log, scope: "s" });
    expect(resumed.rounds()).toEqual(["r1"]);
    expect(resumed.names("r1")).toEqual(["coordinator-a", "master"]);
    expect(other.rounds()).toEqual([]);
    store.remove("r1");
    expect(store.has("r1")).toBe(false);
    await store.flush();
    expect(log.routingState.roundCheckpoints.size).toBe(0);
    // A record over roundCheckpointBytesMax is refused by every replica alike: not stored.
    store.write("r2", "master", { blob: "x".repeat(600 * 1024) });
    await store.flush();
    expect(log.routingState.roundCheckpoints.has("s/r2/master")).toBe(false);
  });
});

describe("a round on a cluster node", () => {
  it("runs a round requested through the bus: master on the leader, coordinators where assigned; stopped, its mailboxes go", async () => {
    const { cluster, bus: busConfig } = await startNode();
    const node = cluster.node;
    const coordination = attachCoordination(node, { logger: silentLogger });
    cleanups.push(() => coordination.stop());
    const topology = {
      kind: "hybrid" as const,
      teams: [
        { name: "a", workers: 3 },
        { name: "b", workers: 3 },
      ],
    };
    const plan = planTopology(topology, { swarm: "s" });
    const bus = new Bus({ config: busConfig });
    cleanups.push(() => bus.close());
    const spawned = await spawnAgents({
      bus,
      agents: plan.workers.map((worker) => ({ id: worker.id, team: worker.team })),
      runtime: "lean",
      readyTo: "test.spawner",
    });
    cleanups.push(() =>
      killProcesses(
        spawned.processes,
        2000,
        spawned.agents.map((agent) => agent.pid ?? 0),
      ).then(() => undefined),
    );
    await node.propose({
      op: "batch",
      commands: plan.workers.map((worker) => ({
        op: "agent.register" as const,
        agent: worker.id,
        node: node.id,
        team: swarmTeamId("s", worker.team),
      })),
    });
    await node.propose({ op: "policy.set", name: swarmPolicyName("s"), value: { topology } });
    await waitFor(
      () => coordination.describe()[0]?.coordinators.length === 2 && coordination.describe()[0]?.master,
      15_000,
      "coordinators and master placed",
    );
    const result = await requestClusterRound(bus, "s", {
      roundId: "round1",
      replyTo: "test.client",
      input: { n: 7 },
      timeoutMs: 20_000,
    });
    expect(result.tasks).toBe(6);
    expect(result.succeeded).toBe(6);
    expect(result.failures).toEqual([]);
    expect(result.outcomes.every((outcome) => JSON.stringify(outcome.output) === '{"n":7}')).toBe(true);
    // The round's checkpoints leave the replicated state when it ends.
    await waitFor(() => node.routing.state.roundCheckpoints.size === 0, 5_000, "checkpoints removed");
    // Dirs messages to a remote requester and a remote worker passed through (as the send to an
    // agent on another node leaves them): empty, never opened by an agent.
    for (const id of ["s.client-42", "s.elsewhere.w9"]) bus.layout.ensureAgent(bus.layout.agent(id), true);
    const swarmMailboxes = () => bus.listAgents().filter((id) => id.startsWith("s."));
    const workers = plan.workers.map((worker) => worker.id);
    const created = ["s.master", "s.rounds", "s.a.lead", "s.b.lead", "s.client-42", "s.elsewhere.w9"];
    expect(swarmMailboxes()).toEqual(expect.arrayContaining([...created, ...workers]));
    // Stopped as `cfn swarm stop` does it: the policy, then the workers (killed) and their agents.
    await node.propose({ op: "policy.set", name: swarmPolicyName("s"), value: null });
    await killProcesses(
      spawned.processes,
      2000,
      spawned.agents.map((agent) => agent.pid ?? 0),
    );
    await node.propose({
      op: "batch",
      commands: workers.map((agent) => ({ op: "agent.remove" as const, agent })),
    });
    // What the cluster made goes; the workers' own mailboxes are left to the stop command.
    await waitFor(
      () => swarmMailboxes().length === workers.length,
      15_000,
      "the stopped swarm's empty mailboxes removed",
    );
    expect(swarmMailboxes()).toEqual([...workers].sort());
  }, 60_000);
});

describe("placing coordinators from a current routing state only", () => {
  it("starts no coordinator while the node is not ready (no leader known, or replaying an old state), and starts it once ready", async () => {
    const { cluster } = await startNode();
    const node = cluster.node;
    const port = coordinationNodeOf(node);
    let ready = false;
    const gated: CoordinationNode = {
      id: port.id,
      bus: port.bus,
      get routingState() {
        return port.routingState;
      },
      propose: (command) => port.propose(command),
      isLeader: () => port.isLeader(),
      isReady: () => ready,
    };
    const coordination = new ClusterCoordination({
      node: gated,
      logger: silentLogger,
      reconcileIntervalMs: 20,
    });
    coordination.start();
    cleanups.push(() => coordination.stop());
    const topology = { kind: "hybrid" as const, teams: [{ name: "a", workers: 1 }] };
    const plan = planTopology(topology, { swarm: "g" });
    await node.propose({
      op: "agent.register",
      agent: plan.workers[0].id,
      node: node.id,
      team: swarmTeamId("g", plan.workers[0].team),
    });
    await node.propose({ op: "policy.set", name: swarmPolicyName("g"), value: { topology } });
    await waitFor(
      () => node.routing.state.teams.get(swarmTeamId("g", "a"))?.coordinator === node.id,
      10_000,
      "team a assigned to this node",
    );
    await new Promise((resolve) => setTimeout(resolve, 200)); // ten reconciles
    expect(coordination.describe()[0]?.coordinators ?? []).toEqual([]);
    ready = true;
    await waitFor(() => coordination.describe()[0]?.coordinators.length === 1, 5_000, "coordinator placed");
    expect(coordination.describe()[0]?.coordinators).toEqual(["g.a.lead"]);
  }, 30_000);
});
