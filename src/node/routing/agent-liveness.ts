// Which of a node's own agents changed liveness, from their bus heartbeat files. Pure: the node
// reads the heartbeat mtimes and the clock and hands them in. Only changes become commands, so a
// steady swarm writes nothing to the log however often it heartbeats.

import type { RoutingCommand } from "./commands.js";
import type { RoutingState } from "./state.js";

/**
 * Commands marking this node's agents down (no heartbeat within agentDownAfterMs, or no mailbox
 * at all) or up again (a fresh heartbeat). `lastSeenMs` maps agent id → heartbeat mtime (null or
 * absent: never seen on this host).
 */
export function planAgentLiveness(
  state: RoutingState,
  nodeId: string,
  lastSeenMs: ReadonlyMap<string, number | null>,
  nowMs: number,
  agentDownAfterMs: number,
): RoutingCommand[] {
  const commands: RoutingCommand[] = [];
  for (const agent of [...state.agents.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))) {
    if (agent.node !== nodeId) continue;
    const seen = lastSeenMs.get(agent.id) ?? null;
    const alive = seen !== null && nowMs - seen <= agentDownAfterMs;
    if (agent.up && !alive) commands.push({ op: "agent.up", agent: agent.id, node: nodeId, up: false });
    else if (!agent.up && alive) commands.push({ op: "agent.up", agent: agent.id, node: nodeId, up: true });
  }
  return commands;
}
