// The commands of the replicated routing state: the only way routing facts change. They travel
// as JSON bytes in Raft log entries (readable in a log dump, no codec dependency), so decoding
// must accept anything and reject what is not a well-formed command — a malformed entry is still
// committed and must give the same (error) result on every replica. Pure: no I/O, no clock.

import { isValidAgentId } from "../../bus/agent-id.js";

/** Liveness of a member as the master coordinator (the Raft leader) sees it. */
export type MemberState = "active" | "leaving" | "down";

/** Coordination topology of the swarm (see src/coordination); replicated so every node agrees. */
export interface Topology {
  kind: "flat" | "hybrid" | "depth-3" | "adaptive";
  /** Workers per team the planner aims for (hybrid and depth-3). */
  teamSize: number;
}

export type RoutingCommand =
  | { op: "member.upsert"; id: string; peerUrl: string; apiUrl: string }
  | { op: "member.state"; id: string; state: MemberState }
  | { op: "member.remove"; id: string }
  | { op: "agent.register"; agent: string; node: string; team: string | null }
  | { op: "agent.up"; agent: string; node: string; up: boolean }
  | { op: "agent.remove"; agent: string }
  | { op: "team.assign"; team: string; coordinator: string; expectedEpoch: number }
  | { op: "team.checkpoint"; team: string; epoch: number; seq: number; data: unknown }
  | { op: "team.remove"; team: string }
  | { op: "topology.set"; topology: Topology }
  | { op: "policy.set"; name: string; value: unknown }
  /** Refused with `round_removed` once the round was removed (its tombstone is kept). */
  | { op: "round.checkpoint"; scope: string; round: string; name: string; data: unknown }
  /** Removes the round's records and leaves a tombstone (RoutingLimits.removedRoundsMax). */
  | { op: "round.remove"; scope: string; round: string }
  | { op: "batch"; commands: RoutingCommand[] };

/** Outcome of one command on the state; identical on every replica. */
export interface RoutingResult {
  ok: boolean;
  /** A stable reason when ok is false: malformed, unknown_member, unknown_team, stale_epoch, … */
  error?: string;
  /** For team.assign: the new epoch. For batch: results per command. */
  epoch?: number;
  results?: RoutingResult[];
}

const URL_PATTERN = /^(wss?|https?):\/\/[^\s]{1,500}$/;
const TOPOLOGY_KINDS = new Set(["flat", "hybrid", "depth-3", "adaptive"]);
const MEMBER_STATES = new Set(["active", "leaving", "down"]);
/** Commands in one batch; a larger batch is malformed. */
export const BATCH_COMMANDS_MAX = 10_000;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Ids of members, agents, teams and principals follow the bus's agent-id rule ([A-Za-z0-9._-],
 * 1 to 128, not "." or ".."): an agent id names a bus directory, a node id a data dir under a
 * cluster file's dataRoot.
 */
export function isValidId(value: unknown): value is string {
  return isValidAgentId(value);
}

export function encodeRoutingCommand(command: RoutingCommand): Uint8Array {
  return encoder.encode(JSON.stringify(command));
}

/** Decodes entry bytes; undefined for anything that is not a well-formed command. */
export function decodeRoutingCommand(data: Uint8Array): RoutingCommand | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(decoder.decode(data));
  } catch {
    return undefined;
  }
  return validateRoutingCommand(parsed, 0);
}

/** Checks a parsed value (from the log or from an API caller); undefined when invalid. */
export function validateRoutingCommand(value: unknown, depth = 0): RoutingCommand | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const c = value as Record<string, unknown>;
  switch (c.op) {
    case "member.upsert":
      return isValidId(c.id) && isUrl(c.peerUrl) && isUrl(c.apiUrl)
        ? { op: "member.upsert", id: c.id, peerUrl: c.peerUrl, apiUrl: c.apiUrl }
        : undefined;
    case "member.state":
      return isValidId(c.id) && typeof c.state === "string" && MEMBER_STATES.has(c.state)
        ? { op: "member.state", id: c.id, state: c.state as MemberState }
        : undefined;
    case "member.remove":
      return isValidId(c.id) ? { op: "member.remove", id: c.id } : undefined;
    case "agent.register":
      return isValidId(c.agent) && isValidId(c.node) && (c.team === null || isValidId(c.team))
        ? { op: "agent.register", agent: c.agent, node: c.node, team: c.team as string | null }
        : undefined;
    case "agent.up":
      return isValidId(c.agent) && isValidId(c.node) && typeof c.up === "boolean"
        ? { op: "agent.up", agent: c.agent, node: c.node, up: c.up }
        : undefined;
    case "agent.remove":
      return isValidId(c.agent) ? { op: "agent.remove", agent: c.agent } : undefined;
    case "team.assign":
      return isValidId(c.team) && isValidId(c.coordinator) && isCount(c.expectedEpoch)
        ? { op: "team.assign", team: c.team, coordinator: c.coordinator, expectedEpoch: c.expectedEpoch }
        : undefined;
    case "team.checkpoint":
      return isValidId(c.team) && isCount(c.epoch) && isCount(c.seq) && "data" in c
        ? { op: "team.checkpoint", team: c.team, epoch: c.epoch, seq: c.seq, data: c.data }
        : undefined;
    case "team.remove":
      return isValidId(c.team) ? { op: "team.remove", team: c.team } : undefined;
    case "topology.set": {
      const t = c.topology as Record<string, unknown> | null;
      if (typeof t !== "object" || t === null) return undefined;
      if (typeof t.kind !== "string" || !TOPOLOGY_KINDS.has(t.kind)) return undefined;
      if (!isCount(t.teamSize) || t.teamSize < 1 || t.teamSize > 100_000) return undefined;
      return { op: "topology.set", topology: { kind: t.kind as Topology["kind"], teamSize: t.teamSize } };
    }
    case "policy.set":
      return isValidId(c.name) && "value" in c
        ? { op: "policy.set", name: c.name, value: c.value }
        : undefined;
    case "round.checkpoint":
      return isValidId(c.scope) && isValidId(c.round) && isValidId(c.name) && "data" in c
        ? { op: "round.checkpoint", scope: c.scope, round: c.round, name: c.name, data: c.data }
        : undefined;
    case "round.remove":
      return isValidId(c.scope) && isValidId(c.round)
        ? { op: "round.remove", scope: c.scope, round: c.round }
        : undefined;
    case "batch": {
      if (depth > 0 || !Array.isArray(c.commands) || c.commands.length > BATCH_COMMANDS_MAX) return undefined;
      const commands: RoutingCommand[] = [];
      for (const inner of c.commands) {
        const command = validateRoutingCommand(inner, depth + 1);
        if (!command) return undefined;
        commands.push(command);
      }
      return { op: "batch", commands };
    }
    default:
      return undefined;
  }
}

function isUrl(value: unknown): value is string {
  return typeof value === "string" && URL_PATTERN.test(value);
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}
