// The replicated routing state of a cluster: members and their addresses, which agent lives on
// which node, which node coordinates which team (with the team's last checkpoint), the topology,
// policies, and a short log of coordinator changes that workers read to follow a failover.
//
// `applyRoutingCommand` is a pure function of (state, command, index): no clock, no randomness,
// no I/O, so every replica that applies the same log holds the same state. Limits are named and
// enforced here, deterministically (a command over a limit fails on every replica alike).

import type { MemberState, RoutingCommand, RoutingResult, Topology } from "./commands.js";

export interface MemberRecord {
  id: string;
  /** Transport (WebSocket) URL peers dial. */
  peerUrl: string;
  /** HTTP API base URL; "" until the member announced it. */
  apiUrl: string;
  state: MemberState;
  /** Log index of the last change of this record. */
  changedIndex: number;
}

export interface AgentRecord {
  id: string;
  /** The node whose local bus holds the agent's inbox. */
  node: string;
  team: string | null;
  /** False once the owner node saw its heartbeats stop. */
  up: boolean;
  changedIndex: number;
}

export interface Checkpoint {
  /** The coordinator epoch the checkpoint was written under. */
  epoch: number;
  /** Monotonic progress counter chosen by the coordinator (e.g. round number). */
  seq: number;
  data: unknown;
  index: number;
}

export interface TeamRecord {
  id: string;
  /** Node coordinating the team; null until the master coordinator assigned one. */
  coordinator: string | null;
  /** Bumped at every (re)assignment; fences checkpoints of a deposed coordinator. */
  epoch: number;
  checkpoint: Checkpoint | null;
  changedIndex: number;
}

/** A coordinator change, kept so that workers (and `cfn cluster status`) can follow failovers. */
export interface CoordinatorEvent {
  index: number;
  team: string;
  coordinator: string;
  previous: string | null;
  epoch: number;
}

/**
 * A checkpoint record of an in-flight coordination round (src/coordination: the master's or a
 * coordinator's state), replicated so that a master or coordinator moved to another node resumes
 * from it. Removed when the round ends.
 */
export interface RoundCheckpointRecord {
  /** The checkpoint store's scope (a swarm name). */
  scope: string;
  round: string;
  /** Record name within the round ("master", "coordinator-<id>", "request"). */
  name: string;
  data: unknown;
  index: number;
}

export interface RoutingLimits {
  /** Members a cluster may have. Default 64. */
  membersMax: number;
  /** Agents registered cluster-wide. Default 100,000. */
  agentsMax: number;
  /** Teams. Default 10,000. */
  teamsMax: number;
  /** Bytes of one checkpoint's JSON data. Default 64 KiB. */
  checkpointBytesMax: number;
  /** Policies. Default 256; each value at most policyBytesMax bytes of JSON. */
  policiesMax: number;
  policyBytesMax: number;
  /** Coordinator events kept (oldest dropped first). Default 1,000. */
  eventsKept: number;
  /** Bytes of one round checkpoint record's JSON data. Default 512 KiB (under Raft's msgBytesMax). */
  roundCheckpointBytesMax: number;
  /** Round checkpoint records cluster-wide. Default 10,000. */
  roundCheckpointsMax: number;
  /**
   * Removed rounds remembered (tombstones: a `round.checkpoint` for one is refused, so a stale
   * writer cannot bring a finished round back). Oldest dropped first. Default 10,000.
   */
  removedRoundsMax: number;
}

export const DEFAULT_ROUTING_LIMITS: RoutingLimits = {
  membersMax: 64,
  agentsMax: 100_000,
  teamsMax: 10_000,
  checkpointBytesMax: 64 * 1024,
  policiesMax: 256,
  policyBytesMax: 16 * 1024,
  eventsKept: 1_000,
  roundCheckpointBytesMax: 512 * 1024,
  roundCheckpointsMax: 10_000,
  removedRoundsMax: 10_000,
};

export interface RoutingState {
  members: Map<string, MemberRecord>;
  agents: Map<string, AgentRecord>;
  teams: Map<string, TeamRecord>;
  topology: Topology;
  policies: Map<string, unknown>;
  events: CoordinatorEvent[];
  /** Round checkpoints by roundCheckpointKey(scope, round, name). */
  roundCheckpoints: Map<string, RoundCheckpointRecord>;
  /** Tombstones of removed rounds by removedRoundKey(scope, round), oldest first (insertion order). */
  removedRounds: Map<string, RemovedRoundRecord>;
}

/** A removed round (`round.remove`): its checkpoints cannot be written again. */
export interface RemovedRoundRecord {
  scope: string;
  round: string;
  /** Log index of the removal. */
  index: number;
}

/** Key of a round checkpoint record; "/" cannot occur in ids, so keys never collide. */
export function roundCheckpointKey(scope: string, round: string, name: string): string {
  return `${scope}/${round}/${name}`;
}

/** Key of a removed round's tombstone. */
export function removedRoundKey(scope: string, round: string): string {
  return `${scope}/${round}`;
}

/** Result error of a `round.checkpoint` for a removed round: final, a retry cannot succeed. */
export const ROUND_REMOVED = "round_removed";

export const DEFAULT_TOPOLOGY: Topology = { kind: "adaptive", teamSize: 16 };

export function emptyRoutingState(): RoutingState {
  return {
    members: new Map(),
    agents: new Map(),
    teams: new Map(),
    topology: { ...DEFAULT_TOPOLOGY },
    policies: new Map(),
    events: [],
    roundCheckpoints: new Map(),
    removedRounds: new Map(),
  };
}

const OK: RoutingResult = { ok: true };
const fail = (error: string): RoutingResult => ({ ok: false, error });

/** Applies one command at log index `index`; mutates `state` and returns the result. */
export function applyRoutingCommand(
  state: RoutingState,
  command: RoutingCommand,
  index: number,
  limits: RoutingLimits = DEFAULT_ROUTING_LIMITS,
): RoutingResult {
  switch (command.op) {
    case "member.upsert": {
      const existing = state.members.get(command.id);
      if (!existing && state.members.size >= limits.membersMax) return fail("members_max");
      state.members.set(command.id, {
        id: command.id,
        peerUrl: command.peerUrl,
        apiUrl: command.apiUrl,
        state: existing?.state ?? "active",
        changedIndex: index,
      });
      return OK;
    }
    case "member.state": {
      const member = state.members.get(command.id);
      if (!member) return fail("unknown_member");
      if (member.state !== command.state) {
        member.state = command.state;
        member.changedIndex = index;
      }
      return OK;
    }
    case "member.remove": {
      if (!state.members.delete(command.id)) return fail("unknown_member");
      removeMemberEffects(state, command.id, index);
      return OK;
    }
    case "agent.register": {
      const existing = state.agents.get(command.agent);
      if (!existing && state.agents.size >= limits.agentsMax) return fail("agents_max");
      if (!state.members.has(command.node)) return fail("unknown_member");
      if (command.team !== null && !state.teams.has(command.team)) {
        if (state.teams.size >= limits.teamsMax) return fail("teams_max");
        state.teams.set(command.team, {
          id: command.team,
          coordinator: null,
          epoch: 0,
          checkpoint: null,
          changedIndex: index,
        });
      }
      if (existing && existing.node === command.node && existing.team === command.team && existing.up) {
        return OK; // idempotent re-registration: no change
      }
      state.agents.set(command.agent, {
        id: command.agent,
        node: command.node,
        team: command.team,
        up: true,
        changedIndex: index,
      });
      return OK;
    }
    case "agent.up": {
      const agent = state.agents.get(command.agent);
      if (!agent) return fail("unknown_agent");
      // Only the owner node reports its agents; a late report from a former owner is ignored.
      if (agent.node !== command.node) return fail("not_owner");
      if (agent.up !== command.up) {
        agent.up = command.up;
        agent.changedIndex = index;
      }
      return OK;
    }
    case "agent.remove":
      return state.agents.delete(command.agent) ? OK : fail("unknown_agent");
    case "team.assign": {
      let team = state.teams.get(command.team);
      if (!team) {
        if (state.teams.size >= limits.teamsMax) return fail("teams_max");
        team = { id: command.team, coordinator: null, epoch: 0, checkpoint: null, changedIndex: index };
        state.teams.set(command.team, team);
      }
      if (team.epoch !== command.expectedEpoch) return { ok: false, error: "stale_epoch", epoch: team.epoch };
      const member = state.members.get(command.coordinator);
      if (member?.state !== "active") return fail("member_not_active");
      const previous = team.coordinator;
      team.coordinator = command.coordinator;
      team.epoch += 1;
      team.changedIndex = index;
      state.events.push({
        index,
        team: team.id,
        coordinator: command.coordinator,
        previous,
        epoch: team.epoch,
      });
      if (state.events.length > limits.eventsKept)
        state.events.splice(0, state.events.length - limits.eventsKept);
      return { ok: true, epoch: team.epoch };
    }
    case "team.checkpoint": {
      const team = state.teams.get(command.team);
      if (!team) return fail("unknown_team");
      // A deposed coordinator (older epoch) must not overwrite its successor's progress.
      if (command.epoch !== team.epoch) return { ok: false, error: "stale_epoch", epoch: team.epoch };
      if (team.checkpoint && command.seq <= team.checkpoint.seq) return fail("stale_seq");
      if (jsonBytes(command.data) > limits.checkpointBytesMax) return fail("checkpoint_too_large");
      team.checkpoint = { epoch: command.epoch, seq: command.seq, data: command.data, index };
      team.changedIndex = index;
      return OK;
    }
    case "team.remove":
      if (!state.teams.delete(command.team)) return fail("unknown_team");
      for (const agent of state.agents.values()) {
        if (agent.team === command.team) {
          agent.team = null;
          agent.changedIndex = index;
        }
      }
      return OK;
    case "topology.set":
      state.topology = { ...command.topology };
      return OK;
    case "policy.set": {
      if (command.value === null) {
        state.policies.delete(command.name);
        return OK;
      }
      if (!state.policies.has(command.name) && state.policies.size >= limits.policiesMax)
        return fail("policies_max");
      if (jsonBytes(command.value) > limits.policyBytesMax) return fail("policy_too_large");
      state.policies.set(command.name, command.value);
      return OK;
    }
    case "round.checkpoint": {
      // A removed round stays removed: a late or stale writer (a coordinator resumed from an old
      // state, a write in flight when the round ended) cannot re-create it.
      if (state.removedRounds.has(removedRoundKey(command.scope, command.round))) return fail(ROUND_REMOVED);
      const key = roundCheckpointKey(command.scope, command.round, command.name);
      if (!state.roundCheckpoints.has(key) && state.roundCheckpoints.size >= limits.roundCheckpointsMax)
        return fail("round_checkpoints_max");
      if (jsonBytes(command.data) > limits.roundCheckpointBytesMax) return fail("checkpoint_too_large");
      state.roundCheckpoints.set(key, {
        scope: command.scope,
        round: command.round,
        name: command.name,
        data: command.data,
        index,
      });
      return OK;
    }
    case "round.remove": {
      const prefix = `${command.scope}/${command.round}/`;
      for (const key of [...state.roundCheckpoints.keys()])
        if (key.startsWith(prefix)) state.roundCheckpoints.delete(key);
      const tombstone = removedRoundKey(command.scope, command.round);
      if (!state.removedRounds.has(tombstone)) {
        state.removedRounds.set(tombstone, { scope: command.scope, round: command.round, index });
        for (const oldest of state.removedRounds.keys()) {
          if (state.removedRounds.size <= limits.removedRoundsMax) break;
          state.removedRounds.delete(oldest);
        }
      }
      return OK;
    }
    case "batch":
      return {
        ok: true,
        results: command.commands.map((inner) => applyRoutingCommand(state, inner, index, limits)),
      };
  }
}

/** A removed member's agents are marked down (they may re-register elsewhere); its teams lose their coordinator. */
function removeMemberEffects(state: RoutingState, memberId: string, index: number): void {
  for (const agent of state.agents.values()) {
    if (agent.node === memberId && agent.up) {
      agent.up = false;
      agent.changedIndex = index;
    }
  }
}

function jsonBytes(value: unknown): number {
  const text = JSON.stringify(value) ?? "null";
  return new TextEncoder().encode(text).byteLength;
}

/** Node owning `agentId`, or undefined when the agent is unknown. */
export function ownerOf(state: RoutingState, agentId: string): string | undefined {
  return state.agents.get(agentId)?.node;
}

/** JSON-ready view (sorted keys) for the HTTP API, status and snapshots. */
export function routingStateToJson(state: RoutingState): Record<string, unknown> {
  return {
    members: sortedValues(state.members),
    agents: sortedValues(state.agents),
    teams: sortedValues(state.teams),
    topology: state.topology,
    policies: Object.fromEntries(
      [...state.policies.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    ),
    events: state.events,
    roundCheckpoints: sortedValues(state.roundCheckpoints),
    // Oldest first (the order in which the limit drops them), not sorted.
    removedRounds: [...state.removedRounds.values()],
  };
}

function sortedValues<T>(map: Map<string, T>): T[] {
  return [...map.keys()].sort().map((key) => map.get(key) as T);
}

/** Rebuilds a state from routingStateToJson output (snapshots). */
export function routingStateFromJson(json: Record<string, unknown>): RoutingState {
  const state = emptyRoutingState();
  for (const member of json.members as MemberRecord[]) state.members.set(member.id, { ...member });
  for (const agent of json.agents as AgentRecord[]) state.agents.set(agent.id, { ...agent });
  for (const team of json.teams as TeamRecord[]) state.teams.set(team.id, { ...team });
  state.topology = { ...(json.topology as Topology) };
  for (const [name, value] of Object.entries(json.policies as Record<string, unknown>))
    state.policies.set(name, value);
  state.events = [...(json.events as CoordinatorEvent[])];
  // Snapshots written before round checkpoints existed have no such field.
  for (const record of (json.roundCheckpoints as RoundCheckpointRecord[] | undefined) ?? [])
    state.roundCheckpoints.set(roundCheckpointKey(record.scope, record.round, record.name), { ...record });
  // Snapshots written before round tombstones existed have no such field.
  for (const record of (json.removedRounds as RemovedRoundRecord[] | undefined) ?? [])
    state.removedRounds.set(removedRoundKey(record.scope, record.round), { ...record });
  return state;
}
