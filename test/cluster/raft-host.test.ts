// RaftHost with its twins: three hosts in one process over a MemoryNetwork, each with a
// MemoryLogStore and a KV state machine. Proposals, ReadIndex reads, NOT_LEADER hints, leadership
// transfer, snapshots + compaction + snapshot install, restart from the store, membership change.

import { afterEach, describe, expect, it } from "vitest";
import { type CfnError, isCfnError } from "../../src/errors.js";
import { RaftHost, type RaftHostConfig } from "../../src/node/raft-host.js";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { encodeKvCommand, type KvCommand, type KvResult, KvStateMachine } from "../../src/statemachine/kv.js";
import { MemoryDataDir, MemoryLogStore } from "../../src/storage/memory-log-store.js";
import { MemoryNetwork } from "../../src/transport/memory-transport.js";

interface TestNode {
  id: string;
  host: RaftHost<KvResult>;
  kv: KvStateMachine;
  dir: MemoryDataDir;
  metrics: Metrics;
}

const CLUSTER = "test-cluster";
let running: TestNode[] = [];

afterEach(async () => {
  await Promise.all(running.map((node) => node.host.stop().catch(() => undefined)));
  running = [];
});

async function startNode(
  network: MemoryNetwork,
  id: string,
  dir: MemoryDataDir,
  voters: string[],
  config: Partial<RaftHostConfig> = {},
  bootstrap = true,
): Promise<TestNode> {
  const metrics = new Metrics();
  const store = await MemoryLogStore.open({
    dir,
    identity: { clusterId: CLUSTER, nodeId: id },
    logger: silentLogger,
    metrics,
  });
  const transport = network.createTransport({ nodeId: id, logger: silentLogger, metrics });
  const kv = new KvStateMachine();
  const peers = Object.fromEntries(voters.map((peer) => [peer, `memory://${peer}`]));
  const host = new RaftHost<KvResult>({
    config: { id, tickIntervalMs: 5, ...config },
    logger: silentLogger,
    metrics,
    store,
    transport,
    stateMachine: kv,
    peers,
    bootstrap: bootstrap ? { voters } : undefined,
  });
  await host.start();
  const node = { id, host, kv, dir, metrics };
  running.push(node);
  return node;
}

async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function leaderOf(nodes: TestNode[]): TestNode | undefined {
  return nodes.find((node) => node.host.isLeader());
}

let requestId = 0;
const put = (key: string, value: string, clientId = "c1"): Uint8Array =>
  encodeKvCommand({ op: "put", key, value, clientId, requestId: ++requestId } satisfies KvCommand);

async function startCluster(ids = ["n1", "n2", "n3"], config: Partial<RaftHostConfig> = {}) {
  const network = new MemoryNetwork();
  const dirs = new Map(ids.map((id) => [id, new MemoryDataDir(id)]));
  const nodes = await Promise.all(ids.map((id) => startNode(network, id, dirs.get(id)!, ids, config)));
  const leader = await waitFor("a leader", () => leaderOf(nodes));
  return { network, dirs, nodes, leader };
}

describe("RaftHost over the memory twins", () => {
  it("commits proposals on the leader, serves linearizable reads, and refuses proposals on followers", async () => {
    const { nodes, leader } = await startCluster();
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => leader.host.propose(put(`k${i % 10}`, `v${i}`))),
    );
    expect(results.every((result) => result?.ok === true)).toBe(true);
    const value = await leader.host.read(() => leader.kv.read("k9"));
    expect(value).toBe("v199");

    const follower = nodes.find((node) => node !== leader)!;
    const error = await follower.host.propose(put("x", "y")).catch((e: unknown) => e);
    expect(isCfnError(error, "CFN_ERR_NOT_LEADER")).toBe(true);
    expect((error as CfnError).details.leader).toBe(leader.id);
    expect((error as CfnError).details.leaderAddress).toBe(`memory://${leader.id}`);
    // A follower read goes through the leader's ReadIndex and sees every acknowledged write.
    expect(await follower.host.read(() => follower.kv.read("k9"))).toBe("v199");
    await waitFor("followers applied", () =>
      nodes.every((node) => node.kv.appliedIndex === leader.kv.appliedIndex),
    );
    const snapshots = nodes.map((node) => Buffer.from(node.kv.snapshot()).toString("hex"));
    expect(new Set(snapshots).size).toBe(1);
    const status = leader.host.status();
    expect(status.role).toBe("leader");
    expect(status.members.map((member) => member.id)).toEqual(["n1", "n2", "n3"]);
    expect(
      status.members
        .filter((member) => member.id !== leader.id)
        .every((member) => member.match !== undefined),
    ).toBe(true);
    expect(await leader.metrics.value("cfn_raft_proposals_total", { outcome: "applied" })).toBe(200);
  });

  it("ends a leadership transfer still waiting when the host stops (CFN_ERR_CLOSED, not a late timeout)", async () => {
    const { network, nodes, leader } = await startCluster(["n1", "n2", "n3"], { proposalTimeoutMs: 60_000 });
    const target = nodes.find((node) => node !== leader)!;
    network.setLinkUp(leader.id, target.id, false);
    network.setLinkUp(target.id, leader.id, false);
    const transfer = leader.host.transferLeadership(target.id).then(
      () => "moved",
      (error: CfnError) => error.code,
    );
    await leader.host.stop();
    running = running.filter((node) => node !== leader);
    // Before, its 60 s timer kept running past stop(): a stopped node's process stayed alive.
    expect(await transfer).toBe("CFN_ERR_CLOSED");
  });

  it("hands leadership over on request and on stop", async () => {
    const { nodes, leader } = await startCluster();
    const target = nodes.find((node) => node !== leader)!;
    await leader.host.transferLeadership(target.id);
    await waitFor("new leader", () => target.host.isLeader());
    expect((await target.host.propose(put("after-transfer", "1")))?.ok).toBe(true);

    const changes: string[] = [];
    const third = nodes.find((node) => node !== leader && node !== target)!;
    third.host.onLeaderChange((change) => changes.push(change.leader));
    await target.host.stop();
    running = running.filter((node) => node !== target);
    const next = await waitFor("leader after stop", () => leaderOf(running));
    expect(next.id).not.toBe(target.id);
    // The third node hears of the new leader with its first append (maybe after `next` knows).
    await waitFor("third node learns the new leader", () => changes.includes(next.id) || undefined);
    expect(changes).toContain(next.id);
    expect((await next.host.propose(put("after-stop", "1")))?.ok).toBe(true);
  });

  it("snapshots and compacts, installs snapshots on a lagging follower, and restarts from its store", async () => {
    const config = { snapshotEntriesInterval: 50, compactionLagEntries: 10 };
    const { network, dirs, nodes, leader } = await startCluster(["n1", "n2", "n3"], config);
    const lagging = nodes.find((node) => node !== leader)!;
    network.isolate(lagging.id);
    for (let round = 0; round < 6; round++) {
      await Promise.all(Array.from({ length: 40 }, (_, i) => leader.host.propose(put(`k${i}`, `r${round}`))));
    }
    expect(leader.host.status().snapshotIndex).toBeGreaterThan(100);
    for (const node of nodes) if (node !== lagging) network.setLinkUp(node.id, lagging.id, true);
    for (const node of nodes) if (node !== lagging) network.setLinkUp(lagging.id, node.id, true);
    await waitFor("lagging follower caught up", () => lagging.kv.appliedIndex >= leader.kv.appliedIndex);
    expect(await lagging.metrics.value("cfn_raft_snapshots_total", { kind: "installed" })).toBeGreaterThan(0);
    expect(lagging.kv.read("k39")).toBe("r5");

    // Whole-cluster restart from the stores: every acknowledged write is there.
    await Promise.all(nodes.map((node) => node.host.stop()));
    running = [];
    const restarted = await Promise.all(
      ["n1", "n2", "n3"].map((id) => startNode(network, id, dirs.get(id)!, ["n1", "n2", "n3"], config)),
    );
    const newLeader = await waitFor("leader after restart", () => leaderOf(restarted));
    expect(await newLeader.host.read(() => newLeader.kv.read("k0"))).toBe("r5");
    expect(await newLeader.host.read(() => newLeader.kv.read("k39"))).toBe("r5");
  });

  it("adds and removes a member through conf changes", async () => {
    const { network, nodes, leader } = await startCluster();
    await leader.host.propose(put("before-join", "1"));
    const joiner = await startNode(
      network,
      "n4",
      new MemoryDataDir("n4"),
      ["n1", "n2", "n3", "n4"],
      {},
      false,
    );
    const conf = await leader.host.addMember("n4", "memory://n4");
    expect(conf.voters).toContain("n4");
    await waitFor("joiner caught up", () => joiner.kv.read("before-join") === "1" || undefined);
    const afterRemove = await leader.host.removeMember(nodes.find((node) => node !== leader)!.id);
    expect(afterRemove.voters).toHaveLength(3);
    expect((await leader.host.propose(put("after-remove", "1")))?.ok).toBe(true);
  });

  it("promotes a learner only once it has caught up (CFN_ERR_LEARNER_NOT_CAUGHT_UP before)", async () => {
    const { network, nodes, leader } = await startCluster();
    for (let i = 0; i < 20; i++) await leader.host.propose(put(`pre-${i}`, "v"));
    const learner = await startNode(
      network,
      "n4",
      new MemoryDataDir("n4"),
      ["n1", "n2", "n3", "n4"],
      {},
      false,
    );
    network.isolate("n4");
    const added = await leader.host.addLearner("n4", "memory://n4");
    expect(added.learners).toEqual(["n4"]);
    // Unreachable: the leader only probes it, so promoting it would add a voter that is far behind.
    const refused = await leader.host.promoteLearner("n4").catch((error: unknown) => error);
    expect(isCfnError(refused, "CFN_ERR_LEARNER_NOT_CAUGHT_UP")).toBe(true);
    expect((refused as CfnError).details).toMatchObject({ id: "n4", state: "probe" });
    expect(leader.host.status().members.find((m) => m.id === "n4")?.voter).toBe(false);
    // A voter is not a learner.
    const notLearner = await leader.host.promoteLearner(nodes.find((n) => n !== leader)!.id).catch((e) => e);
    expect(isCfnError(notLearner, "CFN_ERR_CONF_CHANGE")).toBe(true);

    network.heal();
    await waitFor("learner caught up", () => learner.kv.read("pre-19") === "v" || undefined);
    const promoted = await waitFor("promotion accepted", () => {
      const member = leader.host.status().members.find((m) => m.id === "n4");
      return member?.state === "replicate" && member.lag === 0 ? true : undefined;
    }).then(() => leader.host.promoteLearner("n4"));
    expect(promoted.voters).toContain("n4");
    expect(promoted.learners).toEqual([]);
    expect((await leader.host.propose(put("after-promotion", "1")))?.ok).toBe(true);
  });

  it("carries member addresses in snapshots: a node joining after compaction reaches a member added before", async () => {
    const config = { snapshotEntriesInterval: 30, compactionLagEntries: 5 };
    const { network, leader } = await startCluster(["n1", "n2", "n3"], config);
    // n4 joins through a conf change (its address only in that entry's context)…
    await startNode(network, "n4", new MemoryDataDir("n4"), ["n1", "n2", "n3", "n4"], config, false);
    await leader.host.addMember("n4", "memory://n4");
    // …which is compacted away before n5 joins, knowing only the founders' addresses.
    for (let i = 0; i < 80; i++) await leader.host.propose(put(`k${i % 8}`, `v${i}`));
    expect(leader.host.status().firstIndex).toBeGreaterThan(40);
    const n5 = await startNode(
      network,
      "n5",
      new MemoryDataDir("n5"),
      ["n1", "n2", "n3", "n5"],
      config,
      false,
    );
    await leader.host.addMember("n5", "memory://n5");
    await waitFor("n5 installed a snapshot", () => n5.kv.read("k7") === "v79" || undefined);
    expect(await n5.metrics.value("cfn_raft_snapshots_total", { kind: "installed" })).toBeGreaterThan(0);
    expect(n5.host.status().members.find((m) => m.id === "n4")?.address).toBe("memory://n4");
    // And it uses it: with n4 leading, n5's acks reach n4 (its progress there advances).
    await leader.host.transferLeadership("n4");
    const n4 = running.find((node) => node.id === "n4")!;
    await waitFor("n4 leads", () => n4.host.isLeader() || undefined);
    await n4.host.propose(put("from-n4", "1"));
    await waitFor("n5 acked to n4", () => {
      const member = n4.host.status().members.find((m) => m.id === "n5");
      return member && member.lag === 0 && member.state === "replicate" ? true : undefined;
    });
    await waitFor("n5 applied n4's write", () => n5.kv.read("from-n4") === "1" || undefined);
  });

  it("stops cleanly while peers keep sending (no fatal error from a round started during stop)", async () => {
    const { nodes, leader } = await startCluster();
    const fatal: unknown[] = [];
    for (const node of nodes) node.host.onFatal((error) => fatal.push(error));
    const follower = nodes.find((node) => node !== leader)!;
    const writes = Array.from({ length: 300 }, (_, i) =>
      leader.host.propose(put(`s${i}`, "v")).catch(() => undefined),
    );
    await new Promise((resolve) => setTimeout(resolve, 5));
    await Promise.all([follower.host.stop(), follower.host.stop()]); // idempotent, same promise
    await Promise.all(writes);
    running = running.filter((node) => node !== follower);
    expect(fatal).toEqual([]);
    await expect(follower.host.propose(put("late", "v"))).rejects.toMatchObject({ code: "CFN_ERR_CLOSED" });
  });

  it("validates its limits", () => {
    expect(
      () =>
        new RaftHost<KvResult>({
          config: { id: "x", heartbeatTicks: 5, electionTimeoutTicks: 5 },
          logger: silentLogger,
          metrics: new Metrics(),
          store: undefined as never,
          transport: { nodeId: "x" } as never,
          stateMachine: new KvStateMachine(),
          peers: {},
        }),
    ).toThrow(/heartbeatTicks/);
    expect(
      () =>
        new RaftHost<KvResult>({
          config: { id: "x", tickIntervalMs: 0 },
          logger: silentLogger,
          metrics: new Metrics(),
          store: undefined as never,
          transport: { nodeId: "x" } as never,
          stateMachine: new KvStateMachine(),
          peers: {},
        }),
    ).toThrow(/tickIntervalMs/);
  });
});
