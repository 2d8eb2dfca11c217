// End to end through the compiled CLI: `cfn demo` and `cfn swarm spawn/status/round/stop`.

import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { alive, CLI, removeRoot, runCli, tempRoot, waitFor } from "./helpers.js";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** `cfn demo` on a fresh bus root (removed at cleanup) with `args` after it. */
async function demoOnFreshRoot(args: string[]) {
  const root = tempRoot();
  cleanups.push(() => removeRoot(root));
  return runCli(["--bus-root", root, "--log-level", "warn", "demo", ...args]);
}

describe("cfn demo", () => {
  it("spawns a hybrid swarm, runs a round, prints a JSON summary, cleans up, exits 0", async () => {
    const root = tempRoot();
    cleanups.push(() => removeRoot(root));
    const jsonlPath = join(root, "metrics-of-the-demo.jsonl");
    const result = await runCli(
      ["--bus-root", root, "--log-level", "warn", "demo", "--agents", "12", "--teams", "3", "--json"],
      { env: { CFN_METRICS_JSONL_PATH: jsonlPath } },
    );
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    const summary = JSON.parse(result.stdout);
    expect(summary).toMatchObject({
      agents: 12,
      kind: "hybrid",
      tasks: 12,
      succeeded: 12,
      failed: 0,
      deliveryRate: 1,
      cleanedUp: true,
    });
    expect(summary.topology).toBe("hybrid 3 × 4 (12 workers, 3 coordinators)");
    expect(summary.coordinationMs).toBeGreaterThan(0);
    expect(summary.teams).toHaveLength(3);
    expect(summary.stopped.stopped).toBeGreaterThan(0);
    // The configured JSONL stream stays; the demo's own temp dir (metrics.prom, the node's log)
    // goes with the bus dir.
    expect(summary.metrics.jsonl).toBe(jsonlPath);
    expect(readFileSync(jsonlPath, "utf8")).toMatch(/cfn_coordination_round_seconds/);
    expect(summary.metrics.kept).toBe(false);
    expect(summary.metrics.prometheus.startsWith(`${summary.metrics.dir}/`)).toBe(true);
    expect(existsSync(summary.metrics.dir)).toBe(false);
    // The embedded default: a single-node Raft group whose leader assigned every team.
    expect(summary.cluster).toMatchObject({
      nodeId: "demo-node",
      role: "leader",
      agentsRegistered: 12,
      teams: 3,
    });
    expect(summary.cluster.teamsAssigned).toBe(3);
    expect(existsSync(summary.cluster.dataDir)).toBe(false);
    expect(existsSync(summary.busDir)).toBe(false);
    expect(readdirSync(root).filter((name) => name.startsWith("demo-"))).toEqual([]);
  });

  it("--keep keeps the bus dir and the temp dir with metrics.jsonl and metrics.prom, and says where", async () => {
    const result = await demoOnFreshRoot(["--agents", "4", "--keep"]);
    expect(result.code).toBe(0);
    const dir = result.stdout.match(/(\S+)\/metrics\.prom \(Prometheus text\)/)?.[1];
    expect(dir).toBeDefined();
    cleanups.push(() => removeRoot(dir as string));
    expect(result.stdout).toContain(`${dir}/metrics.jsonl (JSONL stream)`);
    expect(readFileSync(join(dir as string, "metrics.jsonl"), "utf8")).toMatch(
      /cfn_coordination_round_seconds/,
    );
    const exposition = readFileSync(join(dir as string, "metrics.prom"), "utf8");
    expect(exposition).toMatch(/cfn_coordination_tasks_total/);
    expect(exposition).toMatch(/cfn_raft_term/);
    expect(result.stdout).toMatch(/bus dir kept at /);
  });

  it("prints a summary a person reads (topology, coordination time, delivery rate, teams, metrics)", async () => {
    const result = await demoOnFreshRoot(["--agents", "6", "--teams", "1"]);
    expect(result.code).toBe(0);
    for (const expected of [
      "agents",
      "flat 1 × 6",
      "coordination time",
      "delivery rate      100%",
      "main",
      "metrics",
      "bus dir removed",
    ]) {
      expect(result.stdout).toContain(expected);
    }
    // Where the metrics and the dashboard were: the embedded node's HTTP API, stopped by now.
    for (const expected of [
      /dashboard +http:\/\/127\.0\.0\.1:\d+\/dashboard \(the node's live dashboard, served during the run only\)/,
      /metrics +http:\/\/127\.0\.0\.1:\d+\/metrics \(Prometheus, served during the run only\)/,
      /JSONL stream and Prometheus text removed with \S+cfn-demo-\S+ \(--keep keeps them\)/,
    ]) {
      expect(result.stdout).toMatch(expected);
    }
  });

  it("runs with fewer agents than the default teams, and says what --runtime command needs instead", async () => {
    const small = await demoOnFreshRoot(["--agents", "2", "--json"]);
    expect(small.code, small.stderr).toBe(0);
    expect(JSON.parse(small.stdout)).toMatchObject({ tasks: 2, succeeded: 2 });
    const command = await demoOnFreshRoot(["--runtime", "command", "--json"]);
    expect(command.code).toBe(2);
    expect(JSON.parse(command.stderr).error.message).toContain("cfn swarm spawn -- <cmd>");
  });

  it("refuses an invalid topology with a typed error", async () => {
    const result = await runCli(["--log-level", "warn", "demo", "--topology", "hybrid:3", "--json"]);
    expect(result.code).not.toBe(0);
    expect(JSON.parse(result.stderr).error.code).toBe("CFN_ERR_TOPOLOGY_INVALID");
    expect(result.code).toBe(2);
  });
});

describe("cfn demo stopped by a signal", () => {
  /** Processes whose command line names `root` (the demo's agents and coordinators do). */
  function processesUnder(root: string): number[] {
    const pids: number[] = [];
    for (const entry of readdirSync("/proc")) {
      if (!/^[0-9]+$/.test(entry)) continue;
      try {
        const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8");
        const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
        if (cmdline.includes(root) && !stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z"))
          pids.push(Number(entry));
      } catch {
        // gone meanwhile
      }
    }
    return pids;
  }

  for (const name of ["SIGINT", "SIGTERM"] as const) {
    it(`${name} to its pid during the spawn stops every agent and coordinator and removes the bus dir`, async () => {
      const root = tempRoot();
      cleanups.push(() => removeRoot(root));
      const demo = spawn(
        process.execPath,
        [CLI, "--bus-root", root, "--log-level", "warn", "demo", "--agents", "8", "--teams", "2"].concat([
          "--runtime",
          "node",
          "--coordinators",
          "process",
          "--json",
        ]),
        { stdio: "ignore", detached: true }, // its own group: the signal reaches the demo alone
      );
      const exited = new Promise<number | null>((resolve) => demo.once("exit", (code) => resolve(code)));
      // The spawn is under way once agent processes run (8 node agents take seconds to be ready).
      await waitFor(() => processesUnder(root).length >= 2, 20_000, "the spawn under way");
      process.kill(demo.pid as number, name);
      expect(await exited).toBe(name === "SIGTERM" ? 143 : 130);
      await waitFor(() => processesUnder(root).length === 0, 10_000, "no process of the demo left");
      await new Promise((resolve) => setTimeout(resolve, 500)); // nothing comes back to recreate it
      expect(readdirSync(root).filter((dir) => dir.startsWith("demo-"))).toEqual([]);
    }, 60_000);
  }
});

describe("cfn swarm spawn / status / round / stop", () => {
  it("keeps a registry in the bus dir so another shell can inspect, drive and stop the swarm", async () => {
    const root = tempRoot();
    cleanups.push(() => removeRoot(root));
    const global = ["--bus-root", root, "--bus", "t", "--log-level", "warn"];
    const spawned = await runCli([
      ...global,
      "swarm",
      "spawn",
      "--name",
      "crew",
      "--count",
      "6",
      "--teams",
      "2",
      "--json",
    ]);
    expect(spawned.stderr).toBe("");
    expect(spawned.code).toBe(0);
    const summary = JSON.parse(spawned.stdout);
    expect(summary).toMatchObject({ swarm: "crew", agents: 6, runtime: "lean" });
    const registry = JSON.parse(readFileSync(join(root, "t", "swarms", "crew.json"), "utf8"));
    const pids: number[] = registry.agents.map((agent: { pid: number }) => agent.pid);
    expect(new Set(pids).size).toBe(6);
    cleanups.push(() => {
      for (const pid of pids) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {}
      }
    });
    expect(pids.every(alive)).toBe(true);

    const status = await runCli([...global, "swarm", "status", "--json"]);
    expect(status.code).toBe(0);
    const swarms = JSON.parse(status.stdout).swarms;
    expect(swarms).toHaveLength(1);
    expect(swarms[0]).toMatchObject({ swarm: "crew", agents: 6, alive: 6 });
    expect(swarms[0].teams.map((team: { team: string; alive: number }) => [team.team, team.alive])).toEqual([
      ["team0", 3],
      ["team1", 3],
    ]);

    const again = await runCli([...global, "swarm", "spawn", "--name", "crew", "--count", "2", "--json"]);
    expect(again.code).not.toBe(0);

    const round = await runCli([
      ...global,
      "swarm",
      "round",
      "--name",
      "crew",
      "--input",
      '{"job":"lint"}',
      "--json",
    ]);
    expect(round.code).toBe(0);
    expect(JSON.parse(round.stdout)).toMatchObject({
      tasks: 6,
      succeeded: 6,
      deliveryRate: 1,
      kind: "hybrid",
    });

    const stopped = await runCli([...global, "swarm", "stop", "--name", "crew", "--json"]);
    expect(stopped.code).toBe(0);
    expect(JSON.parse(stopped.stdout).stopped[0]).toMatchObject({ swarm: "crew", killed: 0 });
    expect(pids.some(alive)).toBe(false);
    const after = await runCli([...global, "swarm", "status", "--json"]);
    expect(JSON.parse(after.stdout).swarms).toEqual([]);
  });
});
