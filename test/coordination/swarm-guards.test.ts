// What `cfn swarm spawn|round|stop` refuse, and what they leave behind when interrupted: bad round
// input, rounds without tasks, two rounds at once, a stop during a round, two spawns of one name, a
// command for a runtime that runs none, and Ctrl-C / SIGTERM during a spawn.

import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { isProcessAlive } from "../../src/coordination/liveness.js";
import type { SwarmRecord } from "../../src/coordination/registry.js";
import { acquireSwarmLock, swarmLockPath } from "../../src/coordination/swarm-locks.js";
import { collect, exited, runCli, startCli, startCliUntilCleanup, testBus, waitFor } from "./helpers.js";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function setup() {
  return testBus(cleanups);
}

function record(busDir: string, swarm: string): SwarmRecord | undefined {
  const path = join(busDir, "swarms", `${swarm}.json`);
  return existsSync(path) ? (JSON.parse(readFileSync(path, "utf8")) as SwarmRecord) : undefined;
}

function killAll(pids: number[]): void {
  for (const pid of pids)
    try {
      process.kill(pid, "SIGKILL");
    } catch {}
}

/** Spawns a lean swarm (simulated work per task) and registers its cleanup. */
async function spawnSwarm(global: string[], busDir: string, swarm: string, extra: string[] = []) {
  const spawned = await runCli([...global, "swarm", "spawn", "--name", swarm, "--json", ...extra]);
  expect(spawned.stderr).toBe("");
  expect(spawned.code).toBe(0);
  const entry = record(busDir, swarm) as SwarmRecord;
  const pids = [...entry.processes.map((p) => p.pid), ...entry.agents.map((a) => a.pid)];
  cleanups.push(() => killAll(pids));
  return entry;
}

function roundsCheckpointed(busDir: string, swarm: string): string[] {
  const dir = join(busDir, "checkpoints", swarm);
  return existsSync(dir) ? readdirSync(dir) : [];
}

function errorOf(stderr: string): { code: string; message: string; pid?: number } {
  return JSON.parse(stderr).error;
}

describe("swarm round input", () => {
  it("refuses items that are not an array and an unknown priority before anything starts", async () => {
    const { global, busDir } = setup();
    await spawnSwarm(global, busDir, "v", ["--count", "2", "--teams", "1"]);
    for (const flags of [
      ["--items", '{"a":1}'],
      ["--items", '"x"'],
      ["--items", "null"],
      ["--priority", "urgent"],
    ]) {
      const result = await runCli([...global, "swarm", "round", "--name", "v", "--json", ...flags]);
      expect(result.stdout).toBe("");
      expect(result.code).toBe(2);
      const error = errorOf(result.stderr);
      expect(error.code).toBe("CFN_ERR_CONFIG_INVALID");
      expect(error.message).toMatch(
        flags[0] === "--items" ? /--items must be an array/ : /--priority must be/,
      );
    }
    expect(roundsCheckpointed(busDir, "v")).toEqual([]);
  });

  it("refuses a round without tasks and leaves no checkpoint behind", async () => {
    const { global, busDir } = setup();
    await spawnSwarm(global, busDir, "z", ["--count", "4", "--teams", "2"]);
    const empty = await runCli([...global, "swarm", "round", "--name", "z", "--items", "[]", "--json"]);
    expect(empty.code).toBe(2);
    expect(errorOf(empty.stderr)).toMatchObject({ code: "CFN_ERR_CONFIG_INVALID" });
    expect(errorOf(empty.stderr).message).toMatch(/at least one item/);
    expect(roundsCheckpointed(busDir, "z")).toEqual([]);
    const next = await runCli([...global, "swarm", "round", "--name", "z", "--items", "[1,2,3]", "--json"]);
    expect(next.code).toBe(0);
    expect(JSON.parse(next.stdout)).toMatchObject({ tasks: 3, succeeded: 3, resumed: false });
    expect(roundsCheckpointed(busDir, "z")).toEqual([]);
    const resume = await runCli([...global, "swarm", "round", "--name", "z", "--resume", "--json"]);
    expect(errorOf(resume.stderr).message).toMatch(/no unfinished round/);
  });
});

describe("one round at a time", () => {
  it("refuses a second round (and a stop) while one runs, naming its pid; --force stops it", async () => {
    const { global, busDir, bus } = setup();
    await spawnSwarm(global, busDir, "busy", ["--count", "2", "--teams", "1", "--work-ms", "5000"]);
    const first = startCliUntilCleanup(cleanups, [...global, "swarm", "round", "--name", "busy", "--json"]);
    const firstOutput = collect(first);
    await waitFor(() => existsSync(swarmLockPath(busDir, "busy", "round")), 20_000, "the round lock");
    const second = await runCli([...global, "swarm", "round", "--name", "busy", "--json"]);
    expect(second.code).toBe(1);
    const refused = errorOf(second.stderr);
    expect(refused.code).toBe("CFN_ERR_SWARM_BUSY");
    expect(refused.pid).toBe(first.pid);
    expect(refused.message).toContain(`pid ${first.pid} (round`);
    const stop = await runCli([...global, "swarm", "stop", "--name", "busy", "--json"]);
    expect(stop.code).toBe(1);
    expect(errorOf(stop.stderr)).toMatchObject({ code: "CFN_ERR_SWARM_BUSY", pid: first.pid });
    expect(errorOf(stop.stderr).message).toMatch(/--force/);
    expect(record(busDir, "busy")).toBeDefined();
    // The first round was not disturbed.
    expect((await exited(first)).code).toBe(0);
    expect(JSON.parse(firstOutput.stdout())).toMatchObject({ tasks: 2, succeeded: 2 });
    expect(existsSync(swarmLockPath(busDir, "busy", "round"))).toBe(false);

    // --force: the round's process is ended first, and nothing of the swarm comes back after.
    const third = startCliUntilCleanup(cleanups, [...global, "swarm", "round", "--name", "busy", "--json"]);
    await waitFor(() => existsSync(swarmLockPath(busDir, "busy", "round")), 20_000, "the round lock");
    const forced = await runCli([...global, "swarm", "stop", "--name", "busy", "--force", "--json"]);
    expect(forced.stderr).toBe("");
    expect(forced.code).toBe(0);
    expect((await exited(third)).signal).toBe("SIGTERM");
    // Only mailboxes with mail queued are kept (here the coordinator's: its workers' late
    // answers); none is re-created once the stop is done.
    const left = bus.listAgents().filter((id) => id.startsWith("busy."));
    expect(left.filter((id) => id.includes(".w"))).toEqual([]);
    expect(JSON.parse(forced.stdout).stopped[0].mailboxesKept).toBe(left.length);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(bus.listAgents().filter((id) => id.startsWith("busy."))).toEqual(left);
    expect(record(busDir, "busy")).toBeUndefined();
  });
});

describe("swarm spawn", () => {
  it("refuses a name another spawn has reserved, and two spawns at once start one swarm", async () => {
    const { global, busDir } = setup();
    const reservation = acquireSwarmLock(busDir, "dup", "spawn", "spawn"); // as a spawn under way
    const refused = await runCli([...global, "swarm", "spawn", "--name", "dup", "--count", "2", "--json"]);
    reservation.release();
    expect(refused.code).toBe(1);
    expect(errorOf(refused.stderr)).toMatchObject({ code: "CFN_ERR_SWARM_BUSY", pid: process.pid });
    expect(record(busDir, "dup")).toBeUndefined();

    const spawnArgs = [...global, "swarm", "spawn", "--name", "dup", "--count", "3", "--json"];
    const results = await Promise.all([runCli(spawnArgs), runCli(spawnArgs)]);
    const entry = record(busDir, "dup") as SwarmRecord;
    const pids = [...entry.processes.map((p) => p.pid), ...entry.agents.map((a) => a.pid)];
    cleanups.push(() => killAll(pids));
    // One wins; the other is refused — while the first spawns (busy) or after it (already runs).
    expect(results.filter((result) => result.code === 0)).toHaveLength(1);
    const loser = results.find((result) => result.code !== 0) as { stderr: string };
    expect(["CFN_ERR_SWARM_BUSY", "CFN_ERR_CONFIG_INVALID"]).toContain(errorOf(loser.stderr).code);
    expect(entry.agents).toHaveLength(3);
  });

  it("refuses a command for a runtime that runs none, and lists every runtime in its help", async () => {
    const { global, busDir } = setup();
    for (const runtime of ["lean", "node", "bash"]) {
      const result = await runCli([
        ...global,
        "swarm",
        "spawn",
        "--name",
        "c",
        "--count",
        "1",
        "--runtime",
        runtime,
        "--json",
        "--",
        "/bin/cat",
      ]);
      expect(result.code).toBe(2);
      expect(errorOf(result.stderr).code).toBe("CFN_ERR_CONFIG_INVALID");
      expect(errorOf(result.stderr).message).toMatch(new RegExp(`--runtime ${runtime} runs no command`));
    }
    expect(record(busDir, "c")).toBeUndefined();
    const help = await runCli(["swarm", "spawn", "--help"]);
    for (const runtime of ["lean", "node", "bash", "command", "pooled"])
      expect(help.stdout).toContain(runtime);
  });

  for (const [signal, status] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ] as const) {
    it(`${signal} during a spawn stops the agents started so far and exits ${status}`, async () => {
      const { global, busDir, bus } = setup();
      const child = startCli([
        ...global,
        "swarm",
        "spawn",
        "--name",
        "int",
        "--count",
        "40",
        "--runtime",
        "command",
        "--json",
        "--",
        "cat",
      ]);
      const output = collect(child);
      const heartbeatPids = () =>
        bus
          .listAgents()
          .filter((id) => id.startsWith("int."))
          .map((id) => {
            try {
              return Number(readFileSync(bus.layout.agent(id).heartbeat, "utf8").trim());
            } catch {
              return 0;
            }
          })
          .filter((pid) => pid > 0);
      cleanups.push(async () => {
        child.kill("SIGKILL");
        await exited(child);
        killAll(heartbeatPids());
      });
      await waitFor(() => heartbeatPids().length >= 2, 30_000, "the first agents");
      child.kill(signal);
      const { code } = await exited(child);
      expect(code).toBe(status);
      expect(output.stderr()).toMatch(/interrupted/);
      const started = heartbeatPids();
      expect(started.length).toBeGreaterThan(0);
      await waitFor(() => started.every((pid) => !isProcessAlive(pid)), 10_000, "the agents to stop");
      expect(record(busDir, "int")).toBeUndefined();
      expect(existsSync(swarmLockPath(busDir, "int", "spawn"))).toBe(false);
    });
  }
});
