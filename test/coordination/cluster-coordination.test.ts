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
import { Coordinator } from "../../src/coordination/coordinator.js";
import { startDemoCluster } from "../../src/coordination/demo-cluster.js";
import { DEFAULT_LIMITS } from "../../src/coordination/master.js";
import { attachCoordination, coordinationNodeOf } from "../../src/coordination/node-coordination.js";
import {
  type AssignPayload,
  assignMessageId,
  MESSAGE,
  taskMessageId,
} from "../../src/coordination/protocol.js";
import {
  RaftCheckpointStore,
  type ReplicatedRoutingLog,
} from "../../src/coordination/raft-checkpoint-store.js";
import { killProcesses, spawnAgents } from "../../src/coordination/spawner.js";
import { planTopology } from "../../src/coordination/topology.js";
import { routingStateFromJson, routingStateToJson } from "../../src/node/routing/state.js";
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

describe("a removed round stays removed (no stale coordinator brings it back)", () => {
  const limits = { ...DEFAULT_LIMITS, taskTimeoutMs: 60_000 };
  const assignOf = (roundId: string, tasks: number): AssignPayload => ({
    roundId,
    parent: "z.master",
    subtree: { coordinator: "z.a.lead", name: "a", leaf: true, workers: [{ id: "z.a.w0" }] },
    tasks: Array.from({ length: tasks }, (_, i) => ({
      taskId: `i${i}`,
      team: "a",
      input: i,
      priority: "normal" as const,
    })),
    limits,
    deadlineMs: Date.now() + 60_000,
  });
  /** A team coordinator as ClusterCoordination places one. */
  const coordinatorOn = (bus: Bus, checkpoints: RaftCheckpointStore) =>
    new Coordinator({
      bus,
      id: "z.a.lead",
      checkpoints,
      logger: silentLogger,
      inFlightOnResume: "requeue",
      reviveWorkers: true,
      resumeOnlyWithMaster: true,
      isAlive: () => true,
    });
  const sendAssign = (bus: Bus, assign: AssignPayload, resync?: string) =>
    bus.sendSync("z.master", "z.a.lead", {
      type: MESSAGE.assign,
      id: assignMessageId(assign.roundId, "z.a.lead", resync),
      priority: "high",
      payload: assign,
    });
  const roundRecords = (
    node: { routing: { state: { roundCheckpoints: Map<string, unknown> } } },
    round: string,
  ) => [...node.routing.state.roundCheckpoints.keys()].filter((key) => key.startsWith(`z/${round}/`));

  it("a coordinator resumed from an old state (a restarted node) drops the finished round: no task, no partial, no record", async () => {
    const { cluster } = await startNode();
    const node = cluster.node;
    const port = coordinationNodeOf(node);
    const store = new RaftCheckpointStore({ log: port, scope: "z" });
    const master = node.bus.openMailbox("z.master");
    const worker = node.bus.openMailbox("z.a.w0");
    cleanups.push(() => {
      master.close();
      worker.close();
    });
    // The round runs: the master's record, the coordinator dispatches i0 to the only worker.
    store.write("r1", "master", { roundId: "r1" });
    const first = coordinatorOn(node.bus, store);
    first.start();
    sendAssign(node.bus, assignOf("r1", 3));
    const task = await worker.receive({ timeoutMs: 10_000, max: 10 });
    expect(task.map((delivery) => (delivery.message.payload as { taskId: string }).taskId)).toEqual(["i0"]);
    worker.ack(task);
    await store.flush();
    await first.stop(); // its node dies
    // What that node will replay from its data dir when it restarts: the round still running.
    const old = routingStateFromJson(JSON.parse(JSON.stringify(routingStateToJson(node.routing.state))));
    expect(old.roundCheckpoints.has("z/r1/coordinator-z.a.lead")).toBe(true);
    // Meanwhile the round ends elsewhere: the master removes it.
    store.remove("r1");
    await store.flush();
    expect(roundRecords(node, "r1")).toEqual([]);
    // The restarted node's coordinator, on the old state, proposing to the current log.
    let proposed = 0;
    const staleLog: ReplicatedRoutingLog = {
      routingState: old,
      propose: (command) => {
        if (command.op === "round.checkpoint") proposed++;
        return port.propose(command);
      },
    };
    const staleStore = new RaftCheckpointStore({ log: staleLog, scope: "z" });
    const zombie = coordinatorOn(node.bus, staleStore);
    zombie.start();
    cleanups.push(() => zombie.stop());
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    // Nothing of the finished round runs again, nothing is sent up, nothing is re-created.
    expect(await worker.receive({ timeoutMs: 300, max: 10 })).toEqual([]);
    expect(await master.receive({ timeoutMs: 300, max: 10 })).toEqual([]);
    expect(roundRecords(node, "r1")).toEqual([]);
    expect(zombie.activeRounds).toBe(0);
    // The refusal is final: no retry loop.
    expect(staleStore.pendingRecords).toBe(0);
    expect(staleStore.isRemoved("r1")).toBe(true);
    const proposals = proposed;
    expect(proposals).toBeLessThanOrEqual(1);
    // A late repeated assign of the round (a resync that was in flight) does not restart it.
    sendAssign(node.bus, assignOf("r1", 3), "late");
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await worker.receive({ timeoutMs: 300, max: 10 })).toEqual([]);
    expect(roundRecords(node, "r1")).toEqual([]);
    expect(proposed).toBe(proposals);
  }, 30_000);

  it("a coordinator whose round is removed while it runs stops dispatching and writes nothing more; a coordinator-only record is not resumed", async () => {
    const { cluster } = await startNode();
    const node = cluster.node;
    const store = new RaftCheckpointStore({ log: coordinationNodeOf(node), scope: "z" });
    const master = node.bus.openMailbox("z.master");
    const worker = node.bus.openMailbox("z.a.w0");
    cleanups.push(() => {
      master.close();
      worker.close();
    });
    const coordinator = coordinatorOn(node.bus, store);
    coordinator.start();
    cleanups.push(() => coordinator.stop());
    // The start of a round: the coordinator's record may commit before the master's; it runs.
    sendAssign(node.bus, assignOf("r2", 3));
    const first = await worker.receive({ timeoutMs: 10_000, max: 10 });
    expect(first.map((delivery) => (delivery.message.payload as { taskId: string }).taskId)).toEqual(["i0"]);
    worker.ack(first);
    await waitFor(
      () => roundRecords(node, "r2").length === 1,
      5_000,
      "the coordinator's checkpoint committed",
    );
    // The master (on another node, here another store) finishes the round and removes it.
    const masterStore = new RaftCheckpointStore({ log: coordinationNodeOf(node), scope: "z" });
    masterStore.remove("r2");
    await masterStore.flush();
    // The worker answers i0 now: the old coordinator sent i1 next, a partial up, and re-created the round.
    node.bus.sendSync("z.a.w0", "z.a.lead", {
      type: MESSAGE.result,
      payload: { re: taskMessageId("r2", "i0", 1), ok: true, output: 0 },
    });
    await waitFor(() => coordinator.activeRounds === 0, 5_000, "the removed round abandoned");
    expect(await worker.receive({ timeoutMs: 500, max: 10 })).toEqual([]);
    expect(await master.receive({ timeoutMs: 300, max: 10 })).toEqual([]);
    expect(roundRecords(node, "r2")).toEqual([]);
    expect(store.pendingRecords).toBe(0);
    await coordinator.stop();

    // A coordinator record left without its master's (an orphan): not resumed by a new coordinator.
    store.write("r3", "coordinator-z.a.lead", {
      kind: "leaf",
      assign: { ...assignOf("r3", 0) },
      summarySent: false,
      team: {
        init: {
          roundId: "r3",
          team: "a",
          coordinator: "z.a.lead",
          tasks: assignOf("r3", 1).tasks,
          workers: [{ id: "z.a.w0" }],
          limits,
          startedAtMs: Date.now(),
        },
        tasks: [{ taskId: "i0", status: "pending", attempt: 0, attempts: [], reported: false }],
        workers: [{ id: "z.a.w0", dead: false, suspect: false }],
      },
    });
    await store.flush();
    const next = coordinatorOn(node.bus, store);
    next.start();
    cleanups.push(() => next.stop());
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(next.activeRounds).toBe(0);
    expect(await worker.receive({ timeoutMs: 300, max: 10 })).toEqual([]);
  }, 30_000);
});
