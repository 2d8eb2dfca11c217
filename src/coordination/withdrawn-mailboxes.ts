// The mailboxes a cluster swarm leaves on a node's bus once it is stopped: its master's, its
// coordinators', `<swarm>.rounds`, the reply mailboxes of round requests (`<swarm>.client-…`) and
// the dirs messages to its workers passed through on their way to another node. Each node sweeps
// its own bus for a while after the swarm's policy went (`cfn swarm stop`), removing what is empty.
// A mailbox with a heartbeat that this node did not run is an agent process's own (a worker on
// this host): `cfn swarm stop` removes those once it has stopped the processes.

import type { Bus } from "../bus/index.js";
import { removeDirsIfEmpty } from "../bus/recovery.js";

/** How long after a swarm's withdrawal its leftovers are swept, ms (the CLI removes its agents meanwhile). */
export const WITHDRAWN_SWEEP_MS = 60_000;
/** Least time between two sweeps of one bus, ms: each lists every mailbox. */
export const WITHDRAWN_SWEEP_INTERVAL_MS = 1_000;

export interface WithdrawnSweep {
  /** Agent ids this node ran for the swarm (master, rounds, coordinators): closed, heartbeat or not. */
  ownIds: ReadonlySet<string>;
  /** Still in the routing state: an agent not yet removed is left alone. */
  isRegistered: (agentId: string) => boolean;
}

/**
 * Removes the swarm's empty mailboxes from `bus`: how many went and how many of the swarm's are
 * left. Kept: anything holding messages, claims or dead letters, an agent still registered, and
 * the mailbox of an agent process (one with a heartbeat, not of ownIds).
 */
export function removeWithdrawnMailboxes(
  bus: Bus,
  swarm: string,
  sweep: WithdrawnSweep,
): { removed: number; left: number } {
  let removed = 0;
  let left = 0;
  for (const agentId of bus.listAgents()) {
    if (!agentId.startsWith(`${swarm}.`)) continue;
    left++;
    if (sweep.isRegistered(agentId)) continue;
    const status = bus.agentStatus(agentId);
    if (!status || status.inboxDepth + status.claimed + status.deadLetters > 0) continue;
    if (status.lastSeenMs !== null && !sweep.ownIds.has(agentId)) continue;
    removeDirsIfEmpty(bus, bus.layout.agent(agentId));
    if (!bus.agentStatus(agentId)) {
      removed++;
      left--;
    }
  }
  return { removed, left };
}
