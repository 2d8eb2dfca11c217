// One round is one trace: the master's `cfn.round` span, each team coordinator's `cfn.team` span
// under it, and each agent's `cfn.task` span under that, linked through W3C context in the bus
// messages' headers. A real tracer provider with an in-memory exporter; real bus, master,
// coordinator and agent runners.

import { describe, expect, it } from "vitest";
import { Bus } from "../../src/bus/index.js";
import { AgentRunner, echoExecutor } from "../../src/coordination/agent-runner.js";
import { FileCheckpointStore } from "../../src/coordination/checkpoint.js";
import { Coordinator } from "../../src/coordination/coordinator.js";
import { Master } from "../../src/coordination/master.js";
import { planTopology } from "../../src/coordination/topology.js";
import { useInMemoryTracer } from "../obs/in-memory-tracer.js";
import { removeRoot, tempRoot } from "./helpers.js";

const { exporter } = useInMemoryTracer({ asyncContext: true });

describe("tracing a round", () => {
  it("links cfn.round → cfn.team → cfn.task in one trace", async () => {
    const root = tempRoot();
    const bus = new Bus({ config: { root, name: "t" } });
    const plan = planTopology(
      {
        kind: "hybrid",
        teams: [
          { name: "a", workers: 2 },
          { name: "b", workers: 1 },
        ],
      },
      { swarm: "s" },
    );
    const checkpoints = new FileCheckpointStore(`${root}/checkpoints`);
    const coordinators = plan.coordinators.map((c) => new Coordinator({ bus, id: c.id, checkpoints }));
    for (const coordinator of coordinators) coordinator.start();
    const agents = plan.workers.map(
      (worker) =>
        new AgentRunner({
          bus,
          id: worker.id,
          team: worker.team,
          executor: echoExecutor,
        }),
    );
    const running = agents.map((agent) => agent.run());
    try {
      const master = new Master({ bus, id: plan.master, checkpoints });
      const result = await master.runRound({ plan, input: "x", timeoutMs: 15_000 });
      expect(result.succeeded).toBe(3);
      master.close();
    } finally {
      for (const agent of agents) agent.requestStop();
      await Promise.all(running);
      for (const coordinator of coordinators) await coordinator.stop();
      bus.close();
      removeRoot(root);
    }
    const spans = exporter.getFinishedSpans();
    const rounds = spans.filter((span) => span.name === "cfn.round");
    const teams = spans.filter((span) => span.name === "cfn.team");
    const tasks = spans.filter((span) => span.name === "cfn.task");
    expect(rounds).toHaveLength(1);
    expect(teams).toHaveLength(2);
    expect(tasks).toHaveLength(3);
    const traceId = rounds[0].spanContext().traceId;
    for (const span of [...teams, ...tasks]) expect(span.spanContext().traceId).toBe(traceId);
    const parentOf = (span: (typeof spans)[number]) => span.parentSpanContext?.spanId;
    for (const team of teams) expect(parentOf(team)).toBe(rounds[0].spanContext().spanId);
    const teamIds = new Set(teams.map((team) => team.spanContext().spanId));
    for (const task of tasks) expect(teamIds.has(parentOf(task) as string)).toBe(true);
  });
});
