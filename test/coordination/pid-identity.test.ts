// Registry pids are pinned to their process by its start time (/proc/<pid>/stat field 22): a pid
// the kernel has given to another process since is gone for `swarm status` and never signalled by
// `swarm stop` or killProcesses. Records without a start time (older versions) go by pid alone.

import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { isProcessAlive, processStartOf, ringDoorbell } from "../../src/coordination/liveness.js";
import type { SwarmRecord } from "../../src/coordination/registry.js";
import { killProcesses } from "../../src/coordination/spawner.js";
import { exited, runCli, testBus, waitFor } from "./helpers.js";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** An unrelated process (`sleep 300`), killed at cleanup if still running. */
function bystander(): ChildProcess & { pid: number } {
  const child = spawn("sleep", ["300"], { stdio: "ignore" });
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await exited(child);
    }
  });
  return child as ChildProcess & { pid: number };
}

/** SIGKILLs every process of a spawned swarm's record at cleanup (those a test left running). */
function killAtCleanup(record: SwarmRecord): void {
  cleanups.push(() => {
    for (const { pid } of [...record.processes, ...record.agents])
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
  });
}

function recordPath(busDir: string, swarm: string): string {
  return join(busDir, "swarms", `${swarm}.json`);
}

function readRecord(busDir: string, swarm: string): SwarmRecord {
  return JSON.parse(readFileSync(recordPath(busDir, swarm), "utf8")) as SwarmRecord;
}

describe("isProcessAlive / killProcesses with a start time", () => {
  it("take a pid whose start time differs for gone and never signal it; a matching one is stopped", async () => {
    const other = bystander();
    await waitFor(() => processStartOf(other.pid) !== undefined, 5000, "the bystander to start");
    const start = processStartOf(other.pid) as number;
    expect(isProcessAlive(other.pid, start)).toBe(true);
    expect(isProcessAlive(other.pid, start - 1)).toBe(false);
    expect(isProcessAlive(other.pid)).toBe(true); // no start time recorded: the pid alone

    const reused = await killProcesses([{ pid: other.pid, processStart: start - 1 }], 500, [
      { pid: other.pid, processStart: start - 1 },
    ]);
    expect(reused).toEqual({ stopped: 1, killed: 0 });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(other.exitCode === null && other.signalCode === null).toBe(true);

    // A doorbell (SIGUSR2, which ends a process that does not handle it) is not rung either.
    ringDoorbell(other.pid, start - 1);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(other.exitCode === null && other.signalCode === null).toBe(true);

    const ours = await killProcesses([{ pid: other.pid, processStart: start }], 2000);
    expect(ours).toEqual({ stopped: 1, killed: 0 });
    expect((await exited(other)).signal).toBe("SIGTERM");
  });
});

describe("swarm status / stop with a pid that is no longer the agent's", () => {
  it("counts it gone and leaves that process alone; a record without start times goes by pid", async () => {
    const { global, busDir } = testBus(cleanups);
    const spawned = await runCli([
      ...global,
      "swarm",
      "spawn",
      "--name",
      "p",
      "--count",
      "2",
      "--teams",
      "1",
      "--json",
    ]);
    expect(spawned.stderr).toBe("");
    const record = readRecord(busDir, "p");
    killAtCleanup(record);
    // Every pid of the record is pinned to its process.
    for (const entry of [...record.processes, ...record.agents])
      expect(entry.processStart).toBe(processStartOf(entry.pid));

    // Agent w0 dies; its pid now belongs to an unrelated process (a recycled pid, made certain).
    const [first] = record.agents;
    process.kill(first.pid, "SIGKILL");
    await waitFor(() => !isProcessAlive(first.pid), 5000, "the agent to die");
    const other = bystander();
    writeFileSync(
      recordPath(busDir, "p"),
      JSON.stringify({
        ...record,
        agents: record.agents.map((agent) => (agent.id === first.id ? { ...agent, pid: other.pid } : agent)),
      }),
    );
    const status = JSON.parse((await runCli([...global, "swarm", "status", "--name", "p", "--json"])).stdout);
    expect(status.swarms[0]).toMatchObject({ agents: 2, alive: 1 });
    const stop = await runCli([...global, "swarm", "stop", "--name", "p", "--timeout-ms", "2000", "--json"]);
    expect(stop.code).toBe(0);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(other.exitCode === null && other.signalCode === null).toBe(true);
    for (const agent of record.agents.slice(1)) expect(isProcessAlive(agent.pid)).toBe(false);

    // A record of an older version (no start times): the pid alone decides, as before.
    const respawned = await runCli([...global, "swarm", "spawn", "--name", "q", "--count", "1", "--json"]);
    expect(respawned.code).toBe(0);
    const old = readRecord(busDir, "q");
    killAtCleanup(old);
    const legacy = bystander();
    writeFileSync(
      recordPath(busDir, "q"),
      JSON.stringify({
        ...old,
        processes: old.processes.map(({ processStart: _start, ...entry }) => entry),
        agents: [
          ...old.agents.map(({ processStart: _start, ...agent }) => agent),
          { id: "q.main.w9", team: "main", pid: legacy.pid, runtime: "lean" },
        ],
      }),
    );
    const legacyStatus = JSON.parse(
      (await runCli([...global, "swarm", "status", "--name", "q", "--json"])).stdout,
    );
    expect(legacyStatus.swarms[0]).toMatchObject({ agents: 2, alive: 2 });
    expect((await runCli([...global, "swarm", "stop", "--name", "q", "--json"])).code).toBe(0);
    expect((await exited(legacy)).signal).toBe("SIGTERM");
  });
});
