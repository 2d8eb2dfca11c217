// Checkpoint/resume: a round survives the crash of a coordinator process and a restart of the master.

import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Bus } from "../../src/bus/index.js";
import type { FileCheckpointStore } from "../../src/coordination/checkpoint.js";
import { LocalSwarm } from "../../src/coordination/swarm.js";
import { parseTopologyString, planTopology } from "../../src/coordination/topology.js";
import { collect, exited, removeRoot, runCli, startCli, tempRoot, waitFor } from "./helpers.js";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe("checkpoint and resume", () => {
  it("LocalSwarm.start with process coordinators resolves once every coordinator serves its mailbox", async () => {
    const root = tempRoot();
    cleanups.push(() => removeRoot(root));
    const bus = new Bus({ config: { root, name: "t" } });
    const plan = planTopology(parseTopologyString("hybrid:3x1"), { swarm: "p" });
    const swarm = await LocalSwarm.start({ bus, plan, runtime: "lean", coordinators: "process" });
    cleanups.push(async () => {
      await swarm.stop({ timeoutMs: 2000 });
    });
    // Ready at once, not after their Node start-up: each has opened its mailbox (heartbeat).
    for (const coordinator of plan.coordinators)
      expect(bus.agentStatus(coordinator.id)?.lastSeenMs ?? null).not.toBeNull();
    const result = await swarm.runRound({ input: "x" });
    expect(result.deliveryRate).toBe(1);
  });

  it("a round survives the crash of a coordinator process (restarted from its checkpoint)", async () => {
    const root = tempRoot();
    cleanups.push(() => removeRoot(root));
    const bus = new Bus({ config: { root, name: "t" } });
    const swarm = await LocalSwarm.start({
      bus,
      plan: planTopology(parseTopologyString("hybrid:2x3"), { swarm: "s" }),
      runtime: "lean",
      lean: { workMs: 2500 },
      coordinators: "process",
    });
    cleanups.push(async () => {
      await swarm.stop({ timeoutMs: 2000 });
    });
    let roundId = "";
    const running = swarm.runRound(
      { input: "survive", timeoutMs: 40_000 },
      { onIssued: (id) => (roundId = id) },
    );
    const checkpointDir = (swarm.checkpoints as FileCheckpointStore).dir;
    const victimFile = () => join(checkpointDir, roundId, "coordinator-s.team1.lead.json");
    await waitFor(
      () => roundId !== "" && existsSync(victimFile()),
      30_000,
      "team1's coordinator to checkpoint the round",
    );
    const victim = swarm.coordinatorProcess("s.team1.lead");
    victim?.kill("SIGKILL");
    const result = await running;
    expect(swarm.coordinatorRestarts).toBeGreaterThanOrEqual(1);
    expect(result.deliveryRate).toBe(1);
    expect(result.failures).toEqual([]);
    // Resumed, not redone: every task ran exactly once on its own worker.
    expect(result.outcomes.every((outcome) => outcome.attempts.length === 1)).toBe(true);
    expect(result.teams.map((team) => [team.team, team.succeeded])).toEqual([
      ["team0", 3],
      ["team1", 3],
    ]);
    // The master removes a finished round's checkpoints.
    expect(existsSync(join(checkpointDir, roundId))).toBe(false);
  });

  it("a round survives a restart of the master (cfn swarm round --resume)", async () => {
    const root = tempRoot();
    cleanups.push(() => removeRoot(root));
    const global = ["--bus-root", root, "--bus", "t", "--log-level", "warn"];
    const spawned = await runCli([
      ...global,
      "swarm",
      "spawn",
      "--name",
      "m",
      "--count",
      "4",
      "--teams",
      "2",
      "--work-ms",
      "2500",
      "--json",
    ]);
    expect(spawned.code).toBe(0);
    cleanups.push(async () => {
      await runCli([...global, "swarm", "stop", "--name", "m", "--timeout-ms", "2000"]);
    });
    const master = startCli([...global, "swarm", "round", "--name", "m", "--json"]);
    const checkpoints = join(root, "t", "checkpoints", "m");
    const roundDir = () =>
      existsSync(checkpoints)
        ? readdirSync(checkpoints).map((name) => join(checkpoints, name))[0]
        : undefined;
    await waitFor(
      () => {
        const dir = roundDir();
        return (
          dir !== undefined &&
          existsSync(join(dir, "master.json")) &&
          existsSync(join(dir, "coordinator-m.team0.lead.json")) &&
          existsSync(join(dir, "coordinator-m.team1.lead.json"))
        );
      },
      30_000,
      "the round to be issued and checkpointed",
    );
    master.kill("SIGKILL");
    await exited(master);
    const resumed = startCli([...global, "swarm", "round", "--name", "m", "--resume", "--json"]);
    const output = collect(resumed);
    const { code } = await exited(resumed);
    expect(output.stderr()).toBe("");
    expect(code).toBe(0);
    const result = JSON.parse(output.stdout());
    expect(result.resumed).toBe(true);
    expect(result.tasks).toBe(4);
    expect(result.deliveryRate).toBe(1);
    expect(result.failures).toEqual([]);
  });
});
