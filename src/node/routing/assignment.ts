// The master coordinator's decisions, as pure functions over the routing state and the leader's
// view of which members are alive. The Raft leader runs them on a timer and proposes what they
// return; proposals carry the expected epoch, so a decision taken on a stale view fails on apply
// instead of overriding a newer one.

import type { RoutingCommand } from "./commands.js";
import type { RoutingState } from "./state.js";

export interface LivenessView {
  /** Members the leader heard from within nodeDownAfterMs (the leader itself included). */
  alive: ReadonlySet<string>;
  /**
   * Whether a down member that is alive again counts as back (flap damping, flap-damper.ts);
   * absent: every alive member does.
   */
  isBack?: (id: string) => boolean;
}

/**
 * Member state changes the leader should replicate: active members it no longer hears from go
 * "down", down members it hears from again come back "active". "leaving" is set by the member
 * itself at shutdown and is left alone until the member is heard as starting again.
 */
export function planMemberStates(state: RoutingState, view: LivenessView): RoutingCommand[] {
  const commands: RoutingCommand[] = [];
  for (const member of [...state.members.values()].sort(byId)) {
    const alive = view.alive.has(member.id);
    if (member.state === "active" && !alive)
      commands.push({ op: "member.state", id: member.id, state: "down" });
    else if (member.state === "down" && alive && (view.isBack?.(member.id) ?? true))
      commands.push({ op: "member.state", id: member.id, state: "active" });
  }
  return commands;
}

/**
 * Team coordinator (re)assignments: every team whose coordinator is unset, not a member, or not
 * an active and alive member gets the eligible node with the fewest teams (ties: the node holding
 * most of the team's agents, then the smallest id). Healthy assignments are never moved, so a
 * node coming back does not cause churn. Returns [] when no node is eligible.
 */
export function planTeamAssignments(state: RoutingState, view: LivenessView): RoutingCommand[] {
  const eligible = [...state.members.values()]
    .filter((member) => member.state === "active" && view.alive.has(member.id))
    .map((member) => member.id)
    .sort();
  if (eligible.length === 0) return [];
  const load = new Map<string, number>(eligible.map((id) => [id, 0]));
  const orphans: string[] = [];
  for (const team of [...state.teams.values()].sort(byId)) {
    if (team.coordinator !== null && load.has(team.coordinator)) {
      load.set(team.coordinator, (load.get(team.coordinator) ?? 0) + 1);
    } else {
      orphans.push(team.id);
    }
  }
  if (orphans.length === 0) return [];
  const agentsPerNode = agentsOfTeams(state);
  const commands: RoutingCommand[] = [];
  for (const teamId of orphans) {
    const team = state.teams.get(teamId);
    if (!team) continue;
    const local = agentsPerNode.get(teamId);
    let best = eligible[0];
    for (const candidate of eligible) {
      const a = load.get(candidate) ?? 0;
      const b = load.get(best) ?? 0;
      if (a < b) best = candidate;
      else if (a === b && (local?.get(candidate) ?? 0) > (local?.get(best) ?? 0)) best = candidate;
    }
    load.set(best, (load.get(best) ?? 0) + 1);
    commands.push({ op: "team.assign", team: teamId, coordinator: best, expectedEpoch: team.epoch });
  }
  return commands;
}

/** Per team: live agents per node. */
function agentsOfTeams(state: RoutingState): Map<string, Map<string, number>> {
  const result = new Map<string, Map<string, number>>();
  for (const agent of state.agents.values()) {
    if (agent.team === null || !agent.up) continue;
    let perNode = result.get(agent.team);
    if (!perNode) {
      perNode = new Map();
      result.set(agent.team, perNode);
    }
    perNode.set(agent.node, (perNode.get(agent.node) ?? 0) + 1);
  }
  return result;
}

/** Teams per coordinator node (status pages, tests). */
export function teamsPerNode(state: RoutingState): Map<string, string[]> {
  const result = new Map<string, string[]>();
  for (const team of [...state.teams.values()].sort(byId)) {
    if (team.coordinator === null) continue;
    const list = result.get(team.coordinator) ?? [];
    list.push(team.id);
    result.set(team.coordinator, list);
  }
  return result;
}

function byId(a: { id: string }, b: { id: string }): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}
