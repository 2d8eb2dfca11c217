// `cfn swarm spawn|round|stop --cluster` against 2 real node processes: the swarm is spawned on
// n2's host and registered with n2; the master on the Raft leader places the team coordinators and
// runs the round the CLI asks for; stop withdraws the swarm from the routing state. A CLI whose
// bus is not the node's is refused before anything is spawned there.

import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import type { CfnError } from "../../src/errors.js";
import { apiRequest } from "../../src/node/node.js";
import { api, CLI, type NodeProcess, TestCluster, TOKEN, waitFor } from "./harness.js";

const run = promisify(execFile);

let cluster: TestCluster | undefined;

afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

function cli(node: NodeProcess, args: string[], busRoot = node.spec.busRoot) {
  return run(process.execPath, [CLI, "--bus-root", busRoot, "--log-level", "warn", "swarm", ...args], {
    env: { ...process.env, CFN_API_TOKEN: TOKEN },
    timeout: 120_000,
  });
}

async function routing(node: NodeProcess) {
  // biome-ignore lint/suspicious/noExplicitAny: the routing JSON as served
  return (await api(node.api, "GET", "/v1/routing")).json as any;
}

describe("cfn swarm on the cluster (real node processes)", () => {
  it("spawns on one host, registers with its node, runs a round through the cluster's master and withdraws on stop", async () => {
    cluster = await TestCluster.create(2, "cfn-swarm-cli-");
    await cluster.startAll();
    const [n1, n2] = cluster.nodes;

    const spawned = await cli(n2, [
      "spawn",
      "--name",
      "cs",
      "--topology",
      "hybrid:2x3",
      "--cluster",
      "--api",
      n2.api,
      "--json",
    ]);
    const summary = JSON.parse(spawned.stdout);
    expect(summary).toMatchObject({ swarm: "cs", agents: 6, clusterNode: "n2" });

    // The registrations and the policy are replicated: n1 sees them too, and both teams get a coordinator.
    const state = await waitFor("teams placed", async () => {
      const s = await routing(n1);
      const teams = s.teams.filter((team: { id: string }) => team.id.startsWith("cs."));
      return teams.length === 2 && teams.every((team: { coordinator: string | null }) => team.coordinator)
        ? s
        : undefined;
    });
    // The 6 workers, on n2; the master and team leads are the cluster's own agents, not registered here.
    const workers = state.agents.filter((agent: { id: string }) =>
      /^cs\.team[0-9]+\.w[0-9]+$/.test(agent.id),
    );
    expect(workers).toHaveLength(6);
    for (const worker of workers) {
      expect(worker.node).toBe("n2");
      expect(worker.team).toMatch(/^cs\.team[01]$/);
    }
    expect(state.policies["swarm.cs"]).toMatchObject({ topology: { kind: "hybrid" } });

    const listed = JSON.parse((await cli(n2, ["status", "--name", "cs", "--json"])).stdout);
    expect(listed.swarms[0]).toMatchObject({
      swarm: "cs",
      agents: 6,
      alive: 6,
      cluster: { nodeId: "n2", api: n2.api },
    });

    const round = await cli(n2, [
      "round",
      "--name",
      "cs",
      "--items",
      JSON.stringify([1, 2, 3, 4, 5, 6, 7, 8]),
      "--json",
      "--outcomes",
    ]);
    const result = JSON.parse(round.stdout);
    expect(result.tasks).toBe(8);
    expect(result.succeeded).toBe(8);
    expect(result.failures).toEqual([]);
    expect(result.deliveryRate).toBe(1);
    expect(result.outcomes.map((outcome: { taskId: string }) => outcome.taskId).sort()).toHaveLength(8);
    // The round's reply mailbox was registered, and kept on n2's bus, for the round only.
    const after = await routing(n1);
    expect(after.agents.some((agent: { id: string }) => agent.id.startsWith("cs.client-"))).toBe(false);
    expect(
      n2
        .bus()
        .listAgents()
        .filter((id) => id.startsWith("cs.client-")),
    ).toEqual([]);

    const stopped = JSON.parse((await cli(n2, ["stop", "--name", "cs", "--json"])).stdout);
    expect(stopped.stopped[0]).toMatchObject({ swarm: "cs", clusterLeft: true });
    // Everything of the swarm leaves the routing state: its workers (the CLI), its master, rounds
    // mailbox, team leads and teams (the leader, once the policy is gone).
    await waitFor("swarm withdrawn", async () => {
      const s = await routing(n1);
      return (
        s.policies["swarm.cs"] === undefined &&
        !s.agents.some((agent: { id: string }) => agent.id.startsWith("cs.")) &&
        !s.teams.some((team: { id: string }) => team.id.startsWith("cs."))
      );
    });
    // On the other node, the local dirs of n2's workers (a coordinator there wrote their tasks into
    // them, the node forwarded them) go in the node's sweep: the proxy that drained them left no
    // heartbeat behind that would pass for an agent's own.
    const bus1 = n1.bus();
    try {
      await waitFor("no dirs of the swarm's workers left on n1", () =>
        bus1.listAgents().every((id) => !/^cs\.team[0-9]+\.w[0-9]+$/.test(id)),
      );
    } finally {
      bus1.close();
    }
  }, 180_000);

  it("refuses to register a swarm whose bus is not the node's (nothing left running), and types a refused routing command", async () => {
    cluster = await TestCluster.create(1, "cfn-swarm-cli-");
    await cluster.startAll();
    const [n1] = cluster.nodes;
    const otherBus = `${cluster.root}/other-bus`;
    const refused = await cli(
      n1,
      ["spawn", "--name", "cx", "--count", "3", "--cluster", "--api", n1.api],
      otherBus,
    ).then(
      () => undefined,
      (error: { code: number; stderr: string }) => error,
    );
    expect(refused?.code).not.toBe(0);
    expect(refused?.stderr).toContain("CFN_ERR_CONFIG_INVALID");
    expect(refused?.stderr).toContain("serves bus");
    const status = await cli(n1, ["status", "--json"], otherBus);
    expect(JSON.parse(status.stdout).swarms).toEqual([]);
    const state = await routing(n1);
    expect(state.agents.some((agent: { id: string }) => agent.id.startsWith("cx."))).toBe(false);

    // A command the routing state refuses reaches an API client as a typed error with the reason.
    const refusal = await apiRequest(n1.api, "POST", "/v1/routing", TOKEN, {
      command: { op: "team.assign", team: "cx.team0", coordinator: "no-such-node", expectedEpoch: 0 },
    }).then(
      () => undefined,
      (error: CfnError) => error,
    );
    expect(refusal?.code).toBe("CFN_ERR_ROUTING_REFUSED");
    expect(refusal?.details.reason).toBe("member_not_active");
  }, 60_000);
});
