// End to end: a coordination round across two node daemons (`cfn node start`, coordination
// attached) and `cfn agent run` worker processes on both nodes' buses, every process exporting to
// one real OTLP receiver, is ONE trace: cfn.round (the master on the Raft leader) → cfn.team (each
// team's coordinator) → cfn.task (each worker process). Spans arrive through the flush at SIGTERM.

import { type ChildProcess, spawn } from "node:child_process";
import { afterEach, describe, expect, it } from "vitest";
import { requestClusterRound } from "../../src/coordination/cluster-client.js";
import { swarmPolicyName, swarmTeamId } from "../../src/coordination/cluster-coordination.js";
import { planTopology } from "../../src/coordination/topology.js";
import { api, CLI, type NodeProcess, TestCluster, tryStatus, waitFor } from "../node/harness.js";
import { OtlpReceiver, type ReceivedSpan } from "./otlp-receiver.js";

let cluster: TestCluster | undefined;
let otlp: OtlpReceiver | undefined;
const agents: ChildProcess[] = [];
/** What each worker process wrote to stderr (warnings and errors), for failure messages. */
const agentErrors = new Map<string, string>();

afterEach(async () => {
  for (const agent of agents.splice(0)) if (agent.exitCode === null) agent.kill("SIGKILL");
  await cluster?.stop();
  await otlp?.close();
  cluster = undefined;
  otlp = undefined;
});

function startAgent(node: NodeProcess, id: string, team: string, env: Record<string, string>): ChildProcess {
  const child = spawn(
    process.execPath,
    [
      CLI,
      "--bus-root",
      node.spec.busRoot,
      "--log-level",
      "warn",
      "agent",
      "run",
      "--id",
      id,
      "--team",
      team,
      "--echo",
    ],
    { env: { ...process.env, ...env }, stdio: ["ignore", "ignore", "pipe"] },
  );
  child.stderr?.on("data", (chunk) => {
    agentErrors.set(id, `${agentErrors.get(id) ?? ""}${chunk}`);
  });
  agents.push(child);
  return child;
}

function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once("exit", (code) => resolve(code)));
}

describe("a coordination round across node processes", () => {
  it("is one trace: round → team → task, from the master, the coordinators and the worker processes", async () => {
    otlp = await new OtlpReceiver().start();
    const tracingEnv = {
      CFN_TRACING_ENABLED: "true",
      CFN_TRACING_ENDPOINT: otlp.url,
      CFN_TRACING_FLUSH_INTERVAL_MS: "200",
    };
    cluster = await TestCluster.create(2, "cfn-obs-round-");
    await Promise.all(cluster.nodes.map((node) => node.start(cluster?.peerFlags(node) ?? [], tracingEnv)));
    await cluster.waitReady(cluster.nodes);
    const leader = await cluster.leader();
    const [n1, n2] = cluster.nodes;

    // Team a's workers live on n1's bus, team b's on n2's: the round must cross nodes.
    const topology = {
      kind: "hybrid" as const,
      teams: [
        { name: "a", workers: 2 },
        { name: "b", workers: 2 },
      ],
    };
    const plan = planTopology(topology, { swarm: "s" });
    const hostOf = (team: string) => (team === "a" ? n1 : n2);
    for (const worker of plan.workers) startAgent(hostOf(worker.team), worker.id, worker.team, tracingEnv);
    const commands = plan.workers.map((worker) => ({
      op: "agent.register",
      agent: worker.id,
      node: hostOf(worker.team).id,
      team: swarmTeamId("s", worker.team),
    }));
    const registered = await api(leader.api, "POST", "/v1/routing", { command: { op: "batch", commands } });
    expect(registered.status, JSON.stringify(registered.json)).toBe(200);
    const policy = await api(leader.api, "POST", "/v1/routing", {
      command: { op: "policy.set", name: swarmPolicyName("s"), value: { topology } },
    });
    expect(policy.status, JSON.stringify(policy.json)).toBe(200);
    // A worker counts as alive once its node saw its heartbeat: the agent process has started (a
    // CLI start with the SDK loaded takes seconds on a loaded machine, hence the long wait).
    await waitFor(
      "every worker up",
      async () => {
        const status = await tryStatus(leader);
        const up = new Set(
          ((status?.agents ?? []) as Array<{ id: string; up: boolean }>).filter((a) => a.up).map((a) => a.id),
        );
        return plan.workers.every((worker) => up.has(worker.id));
      },
      60_000,
    );
    await waitFor("team coordinators assigned", async () => {
      const status = await tryStatus(leader);
      const teams = (status?.teams ?? []) as Array<{ id: string; coordinator: string | null }>;
      return (
        teams.filter((team) => team.id.startsWith(swarmTeamId("s", "")) && team.coordinator).length === 2
      );
    });

    const bus = leader.bus();
    const result = await requestClusterRound(bus, "s", {
      roundId: "traced-round",
      replyTo: "test.client",
      input: { n: 1 },
      timeoutMs: 30_000,
    });
    bus.close();
    expect(result.succeeded, JSON.stringify(result).slice(0, 1500)).toBe(plan.workers.length);

    // Graceful stops flush every process's queued spans.
    for (const agent of agents) agent.kill("SIGTERM");
    for (const agent of agents) expect(await exited(agent), [...agentErrors.values()].join("\n")).toBe(0);
    for (const node of cluster.nodes) node.signal("SIGTERM");
    for (const node of cluster.nodes) expect(await node.waitExit(30_000), node.stderr).toBe(0);

    const spans = await otlp.waitFor(
      (received) =>
        received.filter((span) => span.name === "cfn.task").length >= plan.workers.length &&
        received.some((span) => span.name === "cfn.round"),
    );
    const rounds = spans.filter((span) => span.name === "cfn.round");
    expect(rounds).toHaveLength(1);
    const [round] = rounds;
    const trace = spans.filter((span) => span.traceId === round.traceId);
    const byId = new Map(trace.map((span) => [span.spanId, span]));
    const teams = trace.filter((span) => span.name === "cfn.team");
    const tasks = trace.filter((span) => span.name === "cfn.task");
    expect(teams).toHaveLength(2);
    for (const team of teams) expect(team.parentSpanId).toBe(round.spanId);
    expect(tasks).toHaveLength(plan.workers.length);
    for (const task of tasks) expect(byId.get(task.parentSpanId)?.name).toBe("cfn.team");
    // Every task span, in every worker process, is in the round's trace: nothing split off.
    expect(spans.filter((span) => span.name === "cfn.task" && span.traceId !== round.traceId)).toEqual([]);
    // Spans came from the master's node, and from four separate worker processes.
    expect(round.resource["cfn.node.id"]).toBe(leader.id);
    const workerProcesses = new Set(tasks.map((task: ReceivedSpan) => task.resource["process.pid"]));
    expect(workerProcesses.size).toBe(plan.workers.length);
    expect(new Set(tasks.map((task) => task.resource["service.name"]))).toEqual(new Set(["cfn-agent"]));
  }, 180_000); // 2 nodes and 4 CLI processes starting and stopping on a shared machine
});
