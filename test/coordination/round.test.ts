// Real rounds with real agent processes (lean C agents, and `cfn agent run` wrapping sh).

import { afterEach, describe, expect, it } from "vitest";
import { Bus } from "../../src/bus/index.js";
import { sendDirect } from "../../src/coordination/direct.js";
import { isProcessAlive } from "../../src/coordination/liveness.js";
import type { RoundProgress } from "../../src/coordination/master.js";
import { LocalSwarm } from "../../src/coordination/swarm.js";
import { parseTopologyString, planTopology } from "../../src/coordination/topology.js";
import { removeRoot, tempRoot } from "./helpers.js";

async function waitUntil(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function startSwarm(spec: string, options: Partial<Parameters<typeof LocalSwarm.start>[0]> = {}) {
  const root = tempRoot();
  cleanups.push(() => removeRoot(root));
  const bus = new Bus({ config: { root, name: "t" } });
  const swarm = await LocalSwarm.start({
    bus,
    plan: planTopology(parseTopologyString(spec), { swarm: "s" }),
    runtime: "lean",
    ...options,
  });
  cleanups.push(async () => {
    await swarm.stop({ timeoutMs: 2000 });
  });
  return { bus, swarm };
}

describe("coordination rounds with real agent processes", () => {
  it("flat: every worker's result reaches the master (100% delivery)", async () => {
    const { swarm } = await startSwarm("flat:6");
    expect(swarm.spawned.runtime).toBe("lean");
    expect(new Set(swarm.spawned.agents.map((agent) => agent.pid)).size).toBe(6); // six OS processes
    const result = await swarm.runRound({ input: { question: 42 }, timeoutMs: 15_000 });
    expect(result.deliveryRate).toBe(1);
    expect(result.failures).toEqual([]);
    expect(result.tasks).toBe(6);
    expect(result.outcomes.every((outcome) => JSON.stringify(outcome.output) === '{"question":42}')).toBe(
      true,
    );
    expect(new Set(result.outcomes.map((outcome) => outcome.worker)).size).toBe(6);
    expect(result.teams).toHaveLength(1);
  });

  it("hybrid: teams aggregate and stream partial results up while the round runs", async () => {
    const { swarm } = await startSwarm("hybrid:3x4");
    const progress: RoundProgress[] = [];
    const result = await swarm.runRound(
      { input: "ping", timeoutMs: 15_000 },
      { onProgress: (p) => progress.push(p) },
    );
    expect(result.deliveryRate).toBe(1);
    expect(result.teams.map((team) => [team.team, team.workers, team.succeeded, team.failed])).toEqual([
      ["team0", 4, 4, 0],
      ["team1", 4, 4, 0],
      ["team2", 4, 4, 0],
    ]);
    expect(progress.length).toBeGreaterThanOrEqual(1);
    expect(progress[progress.length - 1].settled).toBe(12);
    for (let i = 1; i < progress.length; i++)
      expect(progress[i].settled).toBeGreaterThanOrEqual(progress[i - 1].settled);
    expect(result.partials).toBeGreaterThanOrEqual(3);
  });

  it("depth-3: L1 coordinators split the round over their teams", async () => {
    const { swarm } = await startSwarm("depth3:2x2x2");
    const result = await swarm.runRound({
      items: Array.from({ length: 20 }, (_, i) => i),
      timeoutMs: 15_000,
    });
    expect(result.deliveryRate).toBe(1);
    expect(result.outcomes.map((outcome) => outcome.output)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(result.teams).toHaveLength(4);
  });

  it("items on fewer teams than the swarm has: no team's summary is left queued for the master", async () => {
    const { bus, swarm } = await startSwarm("hybrid:5x2");
    for (let round = 0; round < 3; round++) {
      const result = await swarm.runRound({ items: [1, 2], timeoutMs: 15_000 });
      expect(result.deliveryRate).toBe(1);
      expect(result.teams).toHaveLength(2);
    }
    await new Promise((resolve) => setTimeout(resolve, 300)); // a late partial would be in by now
    expect(bus.agentStatus("s.master")).toMatchObject({ inboxDepth: 0, claimed: 0 });
  });

  it("a worker that died before the round gets no task: the others do its share", async () => {
    const { swarm } = await startSwarm("hybrid:2x3");
    const victim = swarm.spawned.agents.find((agent) => agent.id === "s.team1.w0");
    expect(victim).toBeDefined();
    process.kill(victim?.pid as number, "SIGKILL");
    await waitUntil(() => !isProcessAlive(victim?.pid as number), "the worker gone");
    const result = await swarm.runRound({ items: [1, 2, 3, 4, 5, 6], timeoutMs: 15_000 });
    expect(result.deliveryRate).toBe(1);
    // Before, each new round sent the dead worker a task and lost that attempt at the first check.
    expect(result.retried).toBe(0);
    expect(
      result.outcomes.flatMap((outcome) => outcome.attempts.map((attempt) => attempt.worker)),
    ).not.toContain("s.team1.w0");
  });

  it("a worker killed while it runs a task: the task is retried on another worker of its team and reported", async () => {
    const { bus, swarm } = await startSwarm("hybrid:2x3", { lean: { workMs: 1_000 } });
    const victim = swarm.spawned.agents.find((agent) => agent.id === "s.team1.w0");
    expect(victim).toBeDefined();
    const running = swarm.runRound({ input: 1, timeoutMs: 15_000 });
    await waitUntil(() => (bus.agentStatus("s.team1.w0")?.claimed ?? 0) > 0, "the worker's task claimed");
    process.kill(victim?.pid as number, "SIGKILL");
    const result = await running;
    expect(result.deliveryRate).toBe(1);
    expect(result.retried).toBeGreaterThanOrEqual(1);
    const moved = result.outcomes.find((outcome) => outcome.attempts[0]?.worker === "s.team1.w0");
    expect(moved?.ok).toBe(true);
    expect(moved?.worker).not.toBe("s.team1.w0");
    expect(moved?.attempts[0].outcome).toBe("worker-died");
    expect(moved?.attempts[0].reason).toMatch(/died \(pid \d+ gone\)/);
    expect(result.teams.find((team) => team.team === "team1")?.retried).toBeGreaterThanOrEqual(1);
    // The other team was not disturbed.
    expect(result.teams.find((team) => team.team === "team0")?.retried).toBe(0);
  });

  it("a silent (stopped) worker's task times out and moves to another worker", async () => {
    const { swarm } = await startSwarm("flat:3");
    const victim = swarm.spawned.agents[1];
    process.kill(victim.pid, "SIGSTOP");
    cleanups.push(() => {
      try {
        process.kill(victim.pid, "SIGCONT");
      } catch {}
    });
    const result = await swarm.runRound({ input: 1, timeoutMs: 15_000, limits: { taskTimeoutMs: 500 } });
    expect(result.deliveryRate).toBe(1);
    const moved = result.outcomes.find((outcome) => outcome.attempts[0]?.worker === victim.id);
    expect(moved?.attempts[0].outcome).toBe("timeout");
    expect(moved?.worker).not.toBe(victim.id);
  });

  it("a task whose command fails is reported with its exit code and stderr — never a silent shortfall", async () => {
    const script = 'if [ "$CFN_AGENT_ID" = "s.main.w1" ]; then echo "disk full" >&2; exit 3; fi; cat';
    const { swarm } = await startSwarm("flat:3", { runtime: "command", command: ["sh", "-c", script] });
    const result = await swarm.runRound({ input: "x", timeoutMs: 20_000 });
    expect(result.tasks).toBe(3);
    expect(result.succeeded).toBe(2);
    expect(result.deliveryRate).toBeCloseTo(2 / 3);
    expect(result.failures).toHaveLength(1);
    expect(result.failures[0].worker).toBe("s.main.w1");
    expect(result.failures[0].reason).toMatch(/exit code 3/);
    expect(result.failures[0].reason).toMatch(/disk full/);
  });

  it("direct messages go agent to agent without touching a coordinator", async () => {
    const { bus, swarm } = await startSwarm("hybrid:2x2");
    const reply = await sendDirect(bus, "tester", "s.team1.w1", { input: "hello peer" }, { waitMs: 10_000 });
    expect(reply?.ok).toBe(true);
    expect(reply?.agent).toBe("s.team1.w1");
    expect(reply?.output).toBe("hello peer");
    for (const coordinator of swarm.plan.coordinators) {
      const status = bus.agentStatus(coordinator.id);
      expect((status?.inboxDepth ?? 0) + (status?.claimed ?? 0)).toBe(0);
    }
  });
});

describe("the bash agent of the bus takes part in rounds", () => {
  it("answers tasks in its own dialect and every result reaches the master", async () => {
    const { swarm } = await startSwarm("hybrid:2x2", { runtime: "bash" });
    expect(swarm.spawned.runtime).toBe("bash");
    const result = await swarm.runRound({ input: { from: "bash" }, timeoutMs: 20_000 });
    expect(result.deliveryRate).toBe(1);
    expect(result.outcomes.every((outcome) => JSON.stringify(outcome.output) === '{"from":"bash"}')).toBe(
      true,
    );
  });
});
