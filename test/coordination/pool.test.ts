// The agent pool (pre-spawned, idle assignment, auto-scaling) and pooled agents (many logical
// agents per process, each its own mailbox).

import { afterEach, describe, expect, it } from "vitest";
import { Bus } from "../../src/bus/index.js";
import { AgentPool } from "../../src/coordination/pool.js";
import { LocalSwarm } from "../../src/coordination/swarm.js";
import { parseTopologyString, planTopology } from "../../src/coordination/topology.js";
import { removeRoot, tempRoot, waitFor } from "./helpers.js";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function bus(): Bus {
  const root = tempRoot();
  cleanups.push(() => removeRoot(root));
  return new Bus({ config: { root, name: "t" } });
}

describe("agent pool", () => {
  it("pre-spawns, assigns idle agents, scales up under load and back down to min when idle", async () => {
    const pool = await AgentPool.start({
      bus: bus(),
      name: "p",
      runtime: "lean",
      lean: { workMs: 300 },
      initial: 2,
      min: 1,
      max: 5,
      idleTimeoutMs: 400,
      tickMs: 50,
      stepMax: 2,
    });
    cleanups.push(() => pool.stop());
    expect(pool.stats).toMatchObject({ size: 2, idle: 2, busy: 0 });
    let largest = 0;
    const sampler = setInterval(() => (largest = Math.max(largest, pool.stats.size)), 10);
    cleanups.push(() => clearInterval(sampler));
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => pool.submit({ job: i })));
    expect(results.every((result) => result.ok)).toBe(true);
    expect(results.map((result) => (result.output as { job: number }).job)).toEqual(
      Array.from({ length: 12 }, (_, i) => i),
    );
    expect(pool.stats.spawned).toBeGreaterThan(2); // scaled up
    expect(largest).toBeLessThanOrEqual(5); // never past max
    expect(new Set(results.map((result) => result.agent)).size).toBeGreaterThan(2);
    await waitFor(() => pool.stats.size === 1, 10_000, "the pool to scale down to min");
    expect(pool.stats.retired).toBeGreaterThanOrEqual(1);
    // Still serves after scaling down.
    expect((await pool.submit("again")).ok).toBe(true);
  });

  it("moves a task off an agent that dies", async () => {
    const pool = await AgentPool.start({
      bus: bus(),
      name: "q",
      runtime: "lean",
      lean: { workMs: 400 },
      initial: 2,
      min: 2,
      max: 2,
      tickMs: 50,
    });
    cleanups.push(() => pool.stop());
    const pending = pool.submit("x");
    const [first] = pool.agentIds();
    await new Promise((resolve) => setTimeout(resolve, 50));
    const record = (pool as unknown as { agents: Map<string, { record: { pid: number }; busy?: unknown }> })
      .agents;
    const busy = [...record.entries()].find(([, agent]) => agent.busy);
    expect(busy).toBeDefined();
    process.kill((busy as [string, { record: { pid: number } }])[1].record.pid, "SIGKILL");
    const result = await pending;
    expect(result.ok).toBe(true);
    expect(result.attempts).toBe(2);
    expect(first).toBeDefined();
  });
});

describe("pooled agents", () => {
  it("run many logical agents per process, each with its own mailbox, in a real round", async () => {
    const b = bus();
    const swarm = await LocalSwarm.start({
      bus: b,
      plan: planTopology(parseTopologyString("hybrid:2x40"), { swarm: "pl" }),
      runtime: "pooled",
      groupSize: 50,
    });
    cleanups.push(async () => {
      await swarm.stop({ timeoutMs: 3000 });
    });
    expect(swarm.spawned.processes).toHaveLength(2); // 80 agents in 2 processes
    expect(b.listAgents().filter((id) => id.startsWith("pl.team"))).toHaveLength(80 + 2); // 80 worker mailboxes + 2 coordinators
    const result = await swarm.runRound({ input: "pooled", timeoutMs: 20_000 });
    expect(result.deliveryRate).toBe(1);
    expect(new Set(result.outcomes.map((outcome) => outcome.worker)).size).toBe(80);
  });
});
