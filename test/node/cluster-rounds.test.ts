// Swarm coordination across 3 real node processes on loopback: team coordinators run on the nodes
// the Raft leader assigned, the master runs on the leader, workers live on every node. A node
// leading a team is killed with SIGKILL mid-round, and later the leader (the master) itself: each
// round still accounts for every task exactly (results + failures with reasons = tasks).

import { afterEach, describe, expect, it } from "vitest";
import type { Bus } from "../../src/bus/index.js";
import { requestClusterRound } from "../../src/coordination/cluster-client.js";
import { swarmPolicyName, swarmTeamId } from "../../src/coordination/cluster-coordination.js";
import type { RoundResult } from "../../src/coordination/master.js";
import { killProcesses, type SpawnResult, spawnAgents } from "../../src/coordination/spawner.js";
import { planTopology } from "../../src/coordination/topology.js";
import { api, type NodeProcess, TestCluster, waitFor } from "./harness.js";

let cluster: TestCluster | undefined;
const spawned: SpawnResult[] = [];
const buses: Bus[] = [];

afterEach(async (context) => {
  signalWorkers("SIGCONT"); // a failed wait may have left them stopped
  if (context.task.result?.state === "fail")
    for (const node of cluster?.nodes ?? [])
      console.error(`--- ${node.id} stderr:\n${node.stderr.slice(-4000)}`);
  for (const result of spawned.splice(0))
    await killProcesses(
      result.processes,
      2000,
      result.agents.map((agent) => agent.pid ?? 0),
    );
  for (const bus of buses.splice(0)) bus.close();
  await cluster?.stop();
  cluster = undefined;
});

const TEAMS = ["a", "b", "c"];
const topology = { kind: "hybrid" as const, teams: TEAMS.map((name) => ({ name, workers: 3 })) };
const plan = planTopology(topology, { swarm: "s" });
const ITEMS = 45;
/** Bound of each wait, ms: the machine may be shared with other suites. */
const LOADED_MS = 60_000;

// biome-ignore lint/suspicious/noExplicitAny: routing JSON read loosely
async function routing(node: NodeProcess): Promise<any> {
  return (await api(node.api, "GET", "/v1/routing")).json;
}

/** Every team has a coordinator node, and its coordinator agent is registered there. */
async function placed(node: NodeProcess): Promise<Map<string, string> | undefined> {
  const state = await routing(node);
  const result = new Map<string, string>();
  for (const team of TEAMS) {
    const record = state.teams?.find((t: { id: string }) => t.id === swarmTeamId("s", team));
    const lead = state.agents?.find((a: { id: string }) => a.id === `s.${team}.lead`);
    if (!record?.coordinator || lead?.node !== record.coordinator) return undefined;
    result.set(team, record.coordinator);
  }
  return result;
}

/**
 * The round's master checkpoint, as `node` has applied it: the round is issued and that is
 * committed, so a master elected after a kill must resume it (not run it afresh from the request).
 */
async function issued(node: NodeProcess, roundId: string): Promise<boolean> {
  const state = await routing(node);
  return (state.roundCheckpoints ?? []).some(
    (record: { scope: string; round: string; name: string }) =>
      record.scope === "s" && record.round === roundId && record.name === "master",
  );
}

/**
 * Stops (SIGSTOP) or continues (SIGCONT) every worker process. Stopped workers keep a round from
 * finishing, so a kill made while they are stopped is mid-round however slow the machine is.
 */
function signalWorkers(name: "SIGSTOP" | "SIGCONT"): void {
  for (const result of spawned)
    for (const agent of result.agents) {
      try {
        if (agent.pid) process.kill(agent.pid, name);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
      }
    }
}

function expectEveryTaskAccounted(result: RoundResult): void {
  expect(result.tasks).toBe(ITEMS);
  const ids = result.outcomes.map((outcome) => outcome.taskId).sort();
  expect(ids).toEqual(Array.from({ length: ITEMS }, (_, i) => `i${i}`).sort());
  expect(result.succeeded + result.failures.length).toBe(ITEMS);
  for (const failure of result.failures) expect(failure.reason.length).toBeGreaterThan(0);
  // Every worker answers (echo), and each task moves away from a dead node: no failure expected.
  expect(result.failures).toEqual([]);
  expect(result.deliveryRate).toBe(1);
}

describe("rounds across 3 node processes", () => {
  it("finishes rounds when a team's coordinator node and then the leader (master) are killed", async () => {
    cluster = await TestCluster.create(3, "cfn-rounds-");
    await cluster.startAll();
    const nodes = cluster.nodes;
    // Worker w<i> of every team lives on node i+1 (its own bus root: its own "host").
    for (const [index, node] of nodes.entries()) {
      const bus = node.bus();
      buses.push(bus);
      const agents = plan.workers.filter((worker) => worker.id.endsWith(`.w${index}`));
      const result = await spawnAgents({
        bus,
        agents: agents.map((worker) => ({ id: worker.id, team: worker.team })),
        runtime: "lean",
        readyTo: "test.spawner",
        lean: { workMs: 150, rescanMs: 50 },
      });
      spawned.push(result);
      for (const worker of agents) {
        const { status } = await api(node.api, "POST", "/v1/agents", {
          agent: worker.id,
          team: swarmTeamId("s", worker.team),
        });
        expect(status).toBe(200);
      }
      await api(node.api, "POST", "/v1/agents", { agent: `test.client${index}`, team: null });
    }
    const first = await cluster.leader();
    const defined = await api(first.api, "POST", "/v1/routing", {
      command: {
        op: "policy.set",
        name: swarmPolicyName("s"),
        value: { topology, limits: { taskTimeoutMs: 3000, attemptsMax: 4 } },
      },
    });
    expect(defined.status, JSON.stringify(defined.json)).toBe(200);
    const placement = await waitFor("every team coordinator placed", () => placed(first), LOADED_MS);
    // Load is spread: one team per node.
    expect(new Set(placement.values()).size).toBe(3);

    // Round 1: kill -9 a follower that leads a team, mid-round.
    const victim = nodes.find((node) => node !== first) as NodeProcess;
    const survivor = nodes.find((node) => node !== first && node !== victim) as NodeProcess;
    const victimTeam = [...placement].find(([, node]) => node === victim.id)?.[0] as string;
    // A round of ITEMS tasks asked from the client's host, whose result comes back there.
    const requestRound = (roundId: string, client: NodeProcess) =>
      requestClusterRound(
        buses[nodes.indexOf(client)],
        "s",
        {
          roundId,
          replyTo: `test.client${nodes.indexOf(client)}`,
          items: Array.from({ length: ITEMS }, (_, i) => i),
          timeoutMs: 60_000,
        },
        { waitMs: 90_000 },
      );
    signalWorkers("SIGSTOP");
    const round1 = requestRound("round1", survivor);
    await waitFor("round 1 issued", () => issued(survivor, "round1"), LOADED_MS);
    await victim.kill9();
    signalWorkers("SIGCONT");
    // The victim's team moves to a live node, whose coordinator resumes it from the checkpoint.
    const moved = await waitFor(
      "the victim's team reassigned",
      async () => {
        const now = await placed(first);
        const node = now?.get(victimTeam);
        return node && node !== victim.id ? node : undefined;
      },
      LOADED_MS,
    );
    expect(moved).not.toBe(victim.id);
    const result1 = await round1;
    expectEveryTaskAccounted(result1);

    // The victim comes back with its data dir (its workers kept running on its host).
    await victim.start(cluster.peerFlags(victim));
    // Generous bounds: this runs beside other suites on a 2-core machine (catch-up can be slow).
    await waitFor(
      "the victim ready again",
      async () => (await fetch(`${victim.api}/readyz`).catch(() => undefined))?.status === 200,
      LOADED_MS,
    );
    await waitFor(
      "the victim is active again",
      async () => {
        const state = await routing(first);
        return state.members?.find((m: { id: string }) => m.id === victim.id)?.state === "active";
      },
      LOADED_MS,
    );
    // Round 1 stays finished: the victim replayed an old state that still held it, and nothing
    // brings its checkpoints back (the log keeps its tombstone, on the victim too).
    await waitFor(
      "the victim holds round 1's tombstone",
      async () =>
        ((await routing(victim)).removedRounds ?? []).some(
          (record: { scope: string; round: string }) => record.scope === "s" && record.round === "round1",
        ),
      LOADED_MS,
    );
    for (let sample = 0; sample < 15; sample++) {
      for (const node of [first, victim]) {
        const records = ((await routing(node)).roundCheckpoints ?? []).filter(
          (record: { round: string }) => record.round === "round1",
        );
        expect(records).toEqual([]);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }

    // Round 2: kill -9 the leader, which runs the master, mid-round: once the round is issued, with
    // the workers stopped so that it cannot have finished. (A kill before the issue commits leaves
    // only the queued request, which the next master runs from the start: resumed false.)
    // Leadership may have moved since round 1 on a loaded machine: the round is asked from a host
    // that is not the leader's, whose node must live to deliver the result.
    const leaderAtRequest = await cluster.leader();
    const client = nodes.find((node) => node !== leaderAtRequest) as NodeProcess;
    signalWorkers("SIGSTOP");
    const round2 = requestRound("round2", client);
    await waitFor("round 2 issued", () => issued(client, "round2"), LOADED_MS);
    let master = await cluster.leader();
    if (master === client) {
      // Leadership moved onto the client's node meanwhile: hand it to the third node first.
      const third = nodes.find((node) => node !== client && node !== leaderAtRequest) as NodeProcess;
      await api(master.api, "POST", "/v1/leader", { to: third.id });
      master = await waitFor(
        "leadership handed to the third node",
        async () => ((await cluster?.leader()) === third ? third : undefined),
        LOADED_MS,
      );
    }
    await master.kill9();
    signalWorkers("SIGCONT");
    const second = await cluster.leader(nodes.filter((node) => node !== master));
    expect(second.id).not.toBe(master.id);
    const result2 = await round2;
    expectEveryTaskAccounted(result2);
    expect(result2.resumed).toBe(true); // the new leader's master finished it from the checkpoint
  }, 400_000);
});
