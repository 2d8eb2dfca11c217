// Topology planning, a pure core (STYLE.md item 1): a declared topology (YAML text, a short spec
// string such as "hybrid:7x100", or flags) becomes a validated TopologySpec, and a spec becomes a
// Plan — the master, every coordinator with its parent and children, every worker with its team.
// No I/O here: reading a file or CFN_TOPOLOGY happens in topology-source.ts.
//
//   flat      master → workers (the master's own team coordinator runs next to it)
//   hybrid    master → a mesh of team coordinators, each leading one team (the predecessor's 7 × 100)
//   depth3    master → L1 coordinators → L2 team coordinators → workers (e.g. 1 + 7 + 49 + 980)
//   adaptive  one of the above, chosen by swarm size and cluster size (chooseTopology)

import { parse as parseYaml } from "yaml";
import { CfnError } from "../errors.js";

/** Most workers a topology may hold. */
export const TOPOLOGY_AGENTS_MAX = 100_000;
/** Most teams (leaf coordinators) a topology may hold. */
export const TOPOLOGY_TEAMS_MAX = 10_000;
/** Adaptive: up to this many agents one coordinator (flat) leads them all. */
export const ADAPTIVE_FLAT_AGENTS_MAX = 100;
/** Adaptive: target team size of hybrid and depth-3 teams. */
export const ADAPTIVE_TEAM_SIZE_TARGET = 100;
/** Adaptive: most coordinators in the hybrid mesh before a middle level (depth3) is added. */
export const ADAPTIVE_MESH_COORDINATORS_MAX = 16;

const NAME_PATTERN = /^[A-Za-z0-9_-]{1,40}$/;

export interface TeamSpec {
  /** Team name, [A-Za-z0-9_-]{1,40}; part of agent ids. */
  name: string;
  workers: number;
}

export type TopologySpec =
  | { kind: "flat"; workers: number }
  | { kind: "hybrid"; teams: TeamSpec[] }
  | { kind: "depth3"; groups: number; teamsPerGroup: number; workersPerTeam: number }
  | { kind: "adaptive"; agents: number; nodes: number };

export type PlanKind = "flat" | "hybrid" | "depth3";

export interface CoordinatorPlan {
  id: string;
  /** Agent id of the parent: the master or an L1 coordinator. */
  parent: string;
  /** 1 below the master; 2 for depth3 team coordinators. */
  level: number;
  /** Team name (leaf) or group name (depth3 L1). */
  name: string;
  /** True when its children are workers. */
  leaf: boolean;
  /** Coordinator ids (L1) or worker ids (leaf). */
  children: string[];
}

export interface WorkerPlan {
  id: string;
  /** Leaf coordinator id. */
  coordinator: string;
  team: string;
}

export interface Plan {
  kind: PlanKind;
  /** The spec the plan came from (adaptive keeps its own kind here). */
  spec: TopologySpec;
  swarm: string;
  master: string;
  coordinators: CoordinatorPlan[];
  workers: WorkerPlan[];
}

function invalid(message: string, details: Record<string, unknown> = {}): CfnError {
  return new CfnError("CFN_ERR_TOPOLOGY_INVALID", `invalid topology: ${message}`, details);
}

function positiveInt(value: unknown, what: string, max: number): number {
  const number = typeof value === "string" && /^[0-9]+$/.test(value.trim()) ? Number(value) : value;
  if (typeof number !== "number" || !Number.isInteger(number) || number < 1 || number > max) {
    throw invalid(`${what} must be an integer from 1 to ${max} (got ${JSON.stringify(value)})`, {
      field: what,
    });
  }
  return number;
}

/** Total workers of a spec. */
export function workerCount(spec: TopologySpec): number {
  switch (spec.kind) {
    case "flat":
      return spec.workers;
    case "hybrid":
      return spec.teams.reduce((sum, team) => sum + team.workers, 0);
    case "depth3":
      return spec.groups * spec.teamsPerGroup * spec.workersPerTeam;
    case "adaptive":
      return spec.agents;
  }
}

/** Checks a spec's limits and names; returns it unchanged or throws CFN_ERR_TOPOLOGY_INVALID. */
export function validateSpec(spec: TopologySpec): TopologySpec {
  switch (spec.kind) {
    case "flat":
      positiveInt(spec.workers, "workers", TOPOLOGY_AGENTS_MAX);
      break;
    case "hybrid": {
      if (!Array.isArray(spec.teams) || spec.teams.length === 0)
        throw invalid("a hybrid topology needs at least one team");
      if (spec.teams.length > TOPOLOGY_TEAMS_MAX) throw invalid(`more than ${TOPOLOGY_TEAMS_MAX} teams`);
      const seen = new Set<string>();
      for (const team of spec.teams) {
        if (typeof team.name !== "string" || !NAME_PATTERN.test(team.name)) {
          throw invalid(`team name ${JSON.stringify(team.name)} must match [A-Za-z0-9_-]{1,40}`, {
            team: team.name,
          });
        }
        if (seen.has(team.name)) throw invalid(`team name ${team.name} appears twice`, { team: team.name });
        seen.add(team.name);
        positiveInt(team.workers, `workers of team ${team.name}`, TOPOLOGY_AGENTS_MAX);
      }
      break;
    }
    case "depth3":
      positiveInt(spec.groups, "groups", TOPOLOGY_TEAMS_MAX);
      positiveInt(spec.teamsPerGroup, "teamsPerGroup", TOPOLOGY_TEAMS_MAX);
      positiveInt(spec.workersPerTeam, "workersPerTeam", TOPOLOGY_AGENTS_MAX);
      if (spec.groups * spec.teamsPerGroup > TOPOLOGY_TEAMS_MAX)
        throw invalid(`more than ${TOPOLOGY_TEAMS_MAX} teams`);
      break;
    case "adaptive":
      positiveInt(spec.agents, "agents", TOPOLOGY_AGENTS_MAX);
      positiveInt(spec.nodes, "nodes", 1000);
      break;
    default:
      throw invalid(
        `unknown kind ${JSON.stringify((spec as { kind: unknown }).kind)}; use flat, hybrid, depth3 or adaptive`,
      );
  }
  const total = workerCount(spec);
  if (total > TOPOLOGY_AGENTS_MAX)
    throw invalid(`${total} workers exceed the limit of ${TOPOLOGY_AGENTS_MAX}`, { workers: total });
  return spec;
}

/** Splits `total` into `parts` sizes that differ by at most one (larger first). */
export function evenSizes(total: number, parts: number): number[] {
  const base = Math.floor(total / parts);
  const extra = total % parts;
  return Array.from({ length: parts }, (_, index) => base + (index < extra ? 1 : 0));
}

/**
 * The adaptive choice: flat up to ADAPTIVE_FLAT_AGENTS_MAX agents on one node; else teams of about
 * ADAPTIVE_TEAM_SIZE_TARGET (at least one team per cluster node, so each node can lead a team);
 * a hybrid mesh while it has at most ADAPTIVE_MESH_COORDINATORS_MAX coordinators, depth3 beyond.
 */
export function chooseTopology(agents: number, nodes = 1): Exclude<TopologySpec, { kind: "adaptive" }> {
  positiveInt(agents, "agents", TOPOLOGY_AGENTS_MAX);
  positiveInt(nodes, "nodes", 1000);
  if (agents <= ADAPTIVE_FLAT_AGENTS_MAX && nodes === 1) return { kind: "flat", workers: agents };
  const teams = Math.min(agents, Math.max(nodes, Math.ceil(agents / ADAPTIVE_TEAM_SIZE_TARGET)));
  if (teams <= ADAPTIVE_MESH_COORDINATORS_MAX) {
    return {
      kind: "hybrid",
      teams: evenSizes(agents, teams).map((workers, index) => ({ name: `team${index}`, workers })),
    };
  }
  // depth3 needs equal teams: choose groups ≈ √teams and round the team size up; the planner
  // then trims the surplus workers from the last teams (see planTopology).
  const groups = Math.max(2, Math.round(Math.sqrt(teams)));
  const teamsPerGroup = Math.ceil(teams / groups);
  const workersPerTeam = Math.ceil(agents / (groups * teamsPerGroup));
  return { kind: "depth3", groups, teamsPerGroup, workersPerTeam };
}

export interface PlanOptions {
  /** Prefix of every agent id of the swarm ([A-Za-z0-9_-]{1,40}); default "swarm". */
  swarm?: string;
  /** Adaptive depth3 only: cap on total workers (the rounded-up team sizes are trimmed to it). */
  workersMax?: number;
}

/** Turns a spec into a plan with every agent id. Pure and deterministic. */
export function planTopology(specIn: TopologySpec, options: PlanOptions = {}): Plan {
  const spec = validateSpec(specIn);
  const swarm = options.swarm ?? "swarm";
  if (!NAME_PATTERN.test(swarm))
    throw invalid(`swarm name ${JSON.stringify(swarm)} must match [A-Za-z0-9_-]{1,40}`);
  const master = `${swarm}.master`;
  if (spec.kind === "adaptive") {
    const chosen = chooseTopology(spec.agents, spec.nodes);
    const plan = planTopology(chosen, { swarm, workersMax: spec.agents });
    return { ...plan, spec };
  }
  const coordinators: CoordinatorPlan[] = [];
  const workers: WorkerPlan[] = [];
  const addTeam = (parent: string, level: number, name: string, size: number) => {
    const id = `${swarm}.${name}.lead`;
    const team: CoordinatorPlan = { id, parent, level, name, leaf: true, children: [] };
    for (let index = 0; index < size; index++) {
      const worker = `${swarm}.${name}.w${index}`;
      team.children.push(worker);
      workers.push({ id: worker, coordinator: id, team: name });
    }
    coordinators.push(team);
    return id;
  };
  switch (spec.kind) {
    case "flat":
      addTeam(master, 1, "main", spec.workers);
      return { kind: "flat", spec, swarm, master, coordinators, workers };
    case "hybrid":
      for (const team of spec.teams) addTeam(master, 1, team.name, team.workers);
      return { kind: "hybrid", spec, swarm, master, coordinators, workers };
    case "depth3": {
      const teams = spec.groups * spec.teamsPerGroup;
      const total = Math.min(options.workersMax ?? Number.POSITIVE_INFINITY, teams * spec.workersPerTeam);
      const sizes = evenSizes(total, teams);
      let teamIndex = 0;
      for (let group = 0; group < spec.groups; group++) {
        const groupId = `${swarm}.g${group}.lead`;
        const groupPlan: CoordinatorPlan = {
          id: groupId,
          parent: master,
          level: 1,
          name: `g${group}`,
          leaf: false,
          children: [],
        };
        coordinators.push(groupPlan);
        for (let team = 0; team < spec.teamsPerGroup; team++, teamIndex++) {
          if (sizes[teamIndex] === 0) continue;
          groupPlan.children.push(addTeam(groupId, 2, `g${group}t${team}`, sizes[teamIndex]));
        }
      }
      return { kind: "depth3", spec, swarm, master, coordinators, workers };
    }
  }
}

/** Leaf coordinators (teams) of a plan. */
export function teamsOf(plan: Plan): CoordinatorPlan[] {
  return plan.coordinators.filter((coordinator) => coordinator.leaf);
}

/** Coordinators whose parent is the master. */
export function topCoordinatorsOf(plan: Plan): CoordinatorPlan[] {
  return plan.coordinators.filter((coordinator) => coordinator.parent === plan.master);
}

/** One line a person reads: "hybrid 7 × 100 (700 workers, 7 coordinators)". */
export function describePlan(plan: Plan): string {
  const teams = teamsOf(plan);
  const sizes = new Set(teams.map((team) => team.children.length));
  const shape =
    plan.kind === "flat"
      ? `flat 1 × ${plan.workers.length}`
      : plan.kind === "hybrid"
        ? sizes.size === 1
          ? `hybrid ${teams.length} × ${teams[0].children.length}`
          : `hybrid ${teams.length} teams`
        : `depth-3 1 + ${plan.coordinators.length - teams.length} + ${teams.length} + ${plan.workers.length}`;
  const adaptive = plan.spec.kind === "adaptive" ? "adaptive → " : "";
  return `${adaptive}${shape} (${plan.workers.length} workers, ${plan.coordinators.length} coordinators)`;
}

// ---- parsing --------------------------------------------------------------------------------

const KEYS = new Set([
  "kind",
  "agents",
  "workers",
  "teams",
  "workersPerTeam",
  "groups",
  "teamsPerGroup",
  "nodes",
  "topology",
]);

/**
 * Parses a short spec: "flat:100", "hybrid:7x100", "depth3:7x7x20", "adaptive:708" (or
 * "adaptive:708@3" for 3 cluster nodes). A bare kind takes sizes from `defaults`.
 */
export function parseTopologyString(
  text: string,
  defaults: { agents?: number; teams?: number } = {},
): TopologySpec {
  const trimmed = text.trim();
  const match = /^([a-z0-9-]+)(?::(.*))?$/i.exec(trimmed);
  if (!match)
    throw invalid(
      `cannot read ${JSON.stringify(text)}; use e.g. flat:100, hybrid:7x100, depth3:7x7x20, adaptive:708`,
    );
  const kind = normalizeKind(match[1]);
  const sizes = match[2]?.trim();
  const numbers = (count: number): number[] => {
    const parts = (sizes ?? "").split(/[x×*]/).map((part) => part.trim());
    if (sizes === undefined || parts.length !== count) {
      throw invalid(
        `${kind} takes ${count} size${count > 1 ? "s" : ""} (e.g. ${example(kind)}), got ${JSON.stringify(text)}`,
      );
    }
    return parts.map((part, index) =>
      positiveInt(part, `size ${index + 1} of ${JSON.stringify(text)}`, TOPOLOGY_AGENTS_MAX),
    );
  };
  const defaultAgents = defaults.agents;
  switch (kind) {
    case "flat":
      return validateSpec({
        kind,
        workers: sizes === undefined && defaultAgents ? defaultAgents : numbers(1)[0],
      });
    case "hybrid": {
      if (sizes === undefined && defaultAgents && defaults.teams) {
        return hybridOf(defaultAgents, defaults.teams);
      }
      const [teams, workersPerTeam] = numbers(2);
      return validateSpec({
        kind,
        teams: Array.from({ length: teams }, (_, index) => ({
          name: `team${index}`,
          workers: workersPerTeam,
        })),
      });
    }
    case "depth3": {
      const [groups, teamsPerGroup, workersPerTeam] = numbers(3);
      return validateSpec({ kind, groups, teamsPerGroup, workersPerTeam });
    }
    case "adaptive": {
      if (sizes === undefined && defaultAgents)
        return validateSpec({ kind, agents: defaultAgents, nodes: 1 });
      const at = /^([0-9]+)(?:@([0-9]+))?$/.exec(sizes ?? "");
      if (!at)
        throw invalid(
          `adaptive takes a size (e.g. adaptive:708 or adaptive:708@3), got ${JSON.stringify(text)}`,
        );
      return validateSpec({
        kind,
        agents: positiveInt(at[1], "agents", TOPOLOGY_AGENTS_MAX),
        nodes: at[2] ? positiveInt(at[2], "nodes", 1000) : 1,
      });
    }
  }
}

/** A hybrid of `agents` workers in `teams` teams of even size. */
export function hybridOf(agents: number, teams: number): TopologySpec {
  positiveInt(agents, "agents", TOPOLOGY_AGENTS_MAX);
  positiveInt(teams, "teams", TOPOLOGY_TEAMS_MAX);
  if (teams > agents) throw invalid(`${teams} teams need at least ${teams} agents (got ${agents})`);
  return validateSpec({
    kind: "hybrid",
    teams: evenSizes(agents, teams).map((workers, index) => ({ name: `team${index}`, workers })),
  });
}

function example(kind: string): string {
  return kind === "flat"
    ? "flat:100"
    : kind === "hybrid"
      ? "hybrid:7x100"
      : kind === "depth3"
        ? "depth3:7x7x20"
        : "adaptive:708";
}

function normalizeKind(kind: unknown): "flat" | "hybrid" | "depth3" | "adaptive" {
  const lower = typeof kind === "string" ? kind.toLowerCase() : kind;
  if (lower === "flat" || lower === "hybrid" || lower === "adaptive") return lower;
  if (lower === "depth3" || lower === "depth-3" || lower === "hierarchical") return "depth3";
  throw invalid(`unknown kind ${JSON.stringify(kind)}; use flat, hybrid, depth3 or adaptive`);
}

/**
 * Parses a topology file (YAML or JSON). The 7 × 100 hybrid is three lines:
 *
 *   kind: hybrid
 *   teams: 7
 *   workersPerTeam: 100
 *
 * Named teams of different sizes: `teams: [{name: api, workers: 40}, {name: web, workers: 60}]`.
 * depth3: `groups`, `teamsPerGroup`, `workersPerTeam`. flat: `workers`. adaptive: `agents`, `nodes`.
 * A file may also be one short spec (`topology: hybrid:7x100`).
 */
export function parseTopologyText(text: string, source = "topology"): TopologySpec {
  let value: unknown;
  try {
    value = parseYaml(text);
  } catch (error) {
    throw invalid(`${source} is not valid YAML: ${(error as Error).message.split("\n")[0]}`, { source });
  }
  if (typeof value === "string") return parseTopologyString(value);
  if (value === null || typeof value !== "object" || Array.isArray(value))
    throw invalid(`${source} must be a mapping with a kind`, { source });
  const object = value as Record<string, unknown>;
  for (const key of Object.keys(object)) {
    if (!KEYS.has(key))
      throw invalid(`${source}: unknown key ${JSON.stringify(key)} (known: ${[...KEYS].join(", ")})`, {
        source,
        key,
      });
  }
  if (typeof object.topology === "string") return parseTopologyString(object.topology);
  const kind = normalizeKind(object.kind);
  switch (kind) {
    case "flat":
      return validateSpec({
        kind,
        workers: positiveInt(object.workers ?? object.agents, "workers", TOPOLOGY_AGENTS_MAX),
      });
    case "hybrid": {
      if (Array.isArray(object.teams)) {
        const teams = object.teams.map((team, index) => {
          if (team === null || typeof team !== "object")
            throw invalid(`team ${index} must be a mapping {name, workers}`);
          const entry = team as Record<string, unknown>;
          for (const key of Object.keys(entry))
            if (key !== "name" && key !== "workers")
              throw invalid(`team ${index}: unknown key ${JSON.stringify(key)}`);
          return {
            name: String(entry.name ?? `team${index}`),
            workers: positiveInt(entry.workers, `workers of team ${index}`, TOPOLOGY_AGENTS_MAX),
          };
        });
        return validateSpec({ kind, teams });
      }
      const teams = positiveInt(object.teams, "teams", TOPOLOGY_TEAMS_MAX);
      if (object.workersPerTeam !== undefined) {
        const size = positiveInt(object.workersPerTeam, "workersPerTeam", TOPOLOGY_AGENTS_MAX);
        return validateSpec({
          kind,
          teams: Array.from({ length: teams }, (_, index) => ({ name: `team${index}`, workers: size })),
        });
      }
      return hybridOf(positiveInt(object.agents ?? object.workers, "agents", TOPOLOGY_AGENTS_MAX), teams);
    }
    case "depth3":
      return validateSpec({
        kind,
        groups: positiveInt(object.groups, "groups", TOPOLOGY_TEAMS_MAX),
        teamsPerGroup: positiveInt(object.teamsPerGroup, "teamsPerGroup", TOPOLOGY_TEAMS_MAX),
        workersPerTeam: positiveInt(object.workersPerTeam, "workersPerTeam", TOPOLOGY_AGENTS_MAX),
      });
    case "adaptive":
      return validateSpec({
        kind,
        agents: positiveInt(object.agents ?? object.workers, "agents", TOPOLOGY_AGENTS_MAX),
        nodes: object.nodes === undefined ? 1 : positiveInt(object.nodes, "nodes", 1000),
      });
  }
}
