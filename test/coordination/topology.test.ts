import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { planTasks } from "../../src/coordination/master.js";
import {
  chooseTopology,
  describePlan,
  parseTopologyString,
  parseTopologyText,
  planTopology,
  teamsOf,
  topCoordinatorsOf,
  workerCount,
} from "../../src/coordination/topology.js";
import { resolveTopology } from "../../src/coordination/topology-source.js";
import { isCfnError } from "../../src/errors.js";
import { REPO } from "./helpers.js";

function refusal(action: () => unknown): string {
  try {
    action();
  } catch (error) {
    expect(isCfnError(error, "CFN_ERR_TOPOLOGY_INVALID")).toBe(true);
    return (error as Error).message;
  }
  throw new Error("expected CFN_ERR_TOPOLOGY_INVALID");
}

describe("topology parsing", () => {
  it("reads the 7 × 100 hybrid from a YAML file of at most 10 lines", () => {
    const text = readFileSync(join(REPO, "examples", "topologies", "hybrid-7x100.yaml"), "utf8");
    expect(text.trimEnd().split("\n").length).toBeLessThanOrEqual(10);
    const plan = planTopology(parseTopologyText(text), { swarm: "s" });
    expect(plan.kind).toBe("hybrid");
    expect(teamsOf(plan)).toHaveLength(7);
    expect(teamsOf(plan).every((team) => team.children.length === 100)).toBe(true);
    expect(plan.workers).toHaveLength(700);
    // 700 workers + 7 coordinators + 1 master = the predecessor's 708 agents
    expect(plan.workers.length + plan.coordinators.length + 1).toBe(708);
  });

  it("reads short specs for every kind", () => {
    expect(parseTopologyString("flat:100")).toEqual({ kind: "flat", workers: 100 });
    expect(workerCount(parseTopologyString("hybrid:7x100"))).toBe(700);
    expect(parseTopologyString("depth3:7x7x20")).toEqual({
      kind: "depth3",
      groups: 7,
      teamsPerGroup: 7,
      workersPerTeam: 20,
    });
    expect(parseTopologyString("adaptive:708@3")).toEqual({ kind: "adaptive", agents: 708, nodes: 3 });
    expect(parseTopologyString("hybrid", { agents: 10, teams: 3 })).toMatchObject({ kind: "hybrid" });
  });

  it("reads named teams of different sizes", () => {
    const spec = parseTopologyText(
      "kind: hybrid\nteams:\n  - {name: api, workers: 2}\n  - {name: web, workers: 3}\n",
    );
    const plan = planTopology(spec, { swarm: "x" });
    expect(teamsOf(plan).map((team) => [team.name, team.children.length])).toEqual([
      ["api", 2],
      ["web", 3],
    ]);
    expect(plan.workers.map((worker) => worker.id)).toContain("x.web.w2");
  });

  it("refuses invalid topologies with a typed, clear message", () => {
    expect(refusal(() => parseTopologyString("tree:5"))).toMatch(/unknown kind "tree"/);
    expect(refusal(() => parseTopologyString("hybrid:0x5"))).toMatch(/from 1 to/);
    expect(refusal(() => parseTopologyString("hybrid:7"))).toMatch(/takes 2 sizes/);
    expect(
      refusal(() => parseTopologyText("kind: hybrid\nteams: 2\nworkersPerTeam: 3\ncolour: red\n")),
    ).toMatch(/unknown key "colour"/);
    expect(
      refusal(() =>
        parseTopologyText("kind: hybrid\nteams:\n  - {name: a, workers: 1}\n  - {name: a, workers: 2}\n"),
      ),
    ).toMatch(/appears twice/);
    expect(refusal(() => parseTopologyText("kind: hybrid\nteams:\n  - {name: 'a b', workers: 1}\n"))).toMatch(
      /team name/,
    );
    expect(refusal(() => parseTopologyText("kind: flat\nworkers: -3\n"))).toMatch(/workers/);
    expect(
      refusal(() =>
        parseTopologyText("kind: depth3\ngroups: 1000\nteamsPerGroup: 1000\nworkersPerTeam: 1\n"),
      ),
    ).toMatch(/teams/);
    expect(refusal(() => parseTopologyText("[1, 2"))).toMatch(/not valid YAML/);
    expect(refusal(() => parseTopologyText("kind: flat\nworkers: 200000\n"))).toMatch(/100000/);
    expect(refusal(() => planTopology({ kind: "flat", workers: 3 }, { swarm: "bad name" }))).toMatch(
      /swarm name/,
    );
  });

  it("takes CFN_TOPOLOGY when no flag is given, flags first", () => {
    expect(resolveTopology({ env: { CFN_TOPOLOGY: "depth3:2x2x2" } })).toMatchObject({ kind: "depth3" });
    expect(resolveTopology({ spec: "flat:3", env: { CFN_TOPOLOGY: "depth3:2x2x2" } })).toEqual({
      kind: "flat",
      workers: 3,
    });
    const file = join(REPO, "examples", "topologies", "flat-100.yaml");
    expect(resolveTopology({ env: { CFN_TOPOLOGY: file } })).toEqual({ kind: "flat", workers: 100 });
    expect(resolveTopology({ agents: 10, teams: 1, env: {} })).toEqual({ kind: "flat", workers: 10 });
    expect(() => resolveTopology({ env: { CFN_TOPOLOGY: "/nonexistent/topology.yaml" } })).toThrow(
      /cannot read topology file/,
    );
  });
});

describe("topology planning", () => {
  it("plans depth-3 as 1 + 7 + 49 + 980", () => {
    const plan = planTopology(parseTopologyString("depth3:7x7x20"), { swarm: "d" });
    expect(topCoordinatorsOf(plan)).toHaveLength(7);
    expect(teamsOf(plan)).toHaveLength(49);
    expect(plan.workers).toHaveLength(980);
    expect(1 + plan.coordinators.length + plan.workers.length).toBe(1037);
    for (const team of teamsOf(plan))
      expect(plan.coordinators.find((coordinator) => coordinator.id === team.parent)?.leaf).toBe(false);
    expect(describePlan(plan)).toBe("depth-3 1 + 7 + 49 + 980 (980 workers, 56 coordinators)");
  });

  it("gives every agent a unique, valid id", () => {
    const plan = planTopology(parseTopologyString("depth3:3x4x5"), { swarm: "u" });
    const ids = [plan.master, ...plan.coordinators.map((c) => c.id), ...plan.workers.map((w) => w.id)];
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) expect(id).toMatch(/^[A-Za-z0-9._-]{1,128}$/);
  });

  it("chooses adaptively by swarm size and cluster size", () => {
    expect(chooseTopology(50).kind).toBe("flat");
    expect(chooseTopology(100).kind).toBe("flat");
    const hybrid = chooseTopology(708);
    expect(hybrid.kind).toBe("hybrid");
    expect(workerCount(hybrid)).toBe(708);
    const deep = chooseTopology(10_000);
    expect(deep.kind).toBe("depth3");
    const plan = planTopology({ kind: "adaptive", agents: 10_000, nodes: 1 }, { swarm: "a" });
    expect(plan.workers).toHaveLength(10_000);
    expect(plan.spec.kind).toBe("adaptive");
    // With 3 cluster nodes even a small swarm gets a team per node.
    const clustered = chooseTopology(30, 3);
    expect(clustered.kind).toBe("hybrid");
    expect(clustered.kind === "hybrid" && clustered.teams.length).toBe(3);
    // Exact sizes survive the rounding of depth3 team sizes.
    for (const agents of [1601, 2500, 9999, 12_345])
      expect(planTopology({ kind: "adaptive", agents, nodes: 1 }).workers).toHaveLength(agents);
  });
});

describe("items spread over teams by size", () => {
  const teamCounts = (tasks: { team: string }[]) => {
    const counts: Record<string, number> = {};
    for (const task of tasks) counts[task.team] = (counts[task.team] ?? 0) + 1;
    return counts;
  };

  it("interleaves the teams of a 2 × 10 swarm from the first item", () => {
    const plan = planTopology(parseTopologyString("hybrid:2x10"), { swarm: "s" });
    const five = planTasks(plan, { items: [1, 2, 3, 4, 5] });
    expect(five.map((task) => task.team)).toEqual(["team0", "team1", "team0", "team1", "team0"]);
    expect(teamCounts(planTasks(plan, { items: Array.from({ length: 12 }, (_, i) => i) }))).toEqual({
      team0: 6,
      team1: 6,
    });
  });

  it("gives a team four times as large four times the items", () => {
    const spec = parseTopologyText(
      "kind: hybrid\nteams:\n  - {name: big, workers: 40}\n  - {name: small, workers: 10}\n",
    );
    const plan = planTopology(spec, { swarm: "s" });
    expect(teamCounts(planTasks(plan, { items: Array.from({ length: 10 }, (_, i) => i) }))).toEqual({
      big: 8,
      small: 2,
    });
  });
});
