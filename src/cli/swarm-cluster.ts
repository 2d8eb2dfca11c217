// A swarm on the cluster (`cfn swarm spawn|round|stop --cluster`): the agents spawned on this host
// are registered with the local node (agent → node, team `<swarm>.<team>`), the swarm's topology
// becomes the routing policy `swarm.<name>`, and from then on the master on the Raft leader places
// each team's coordinator on a live node and runs the rounds asked for through `<swarm>.rounds`.
// Everything goes through the local node's HTTP API, whose bus must be the one the agents use.

import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import type { Bus } from "../bus/index.js";
import { requestClusterRound } from "../coordination/cluster-client.js";
import { swarmPolicyName, swarmTeamId } from "../coordination/cluster-coordination.js";
import type { RoundResult } from "../coordination/master.js";
import type { SwarmRecord } from "../coordination/registry.js";
import { CfnError } from "../errors.js";
import { apiRequest } from "../node/node.js";
import type { RoutingCommand, RoutingResult } from "../node/routing/commands.js";

/** Registrations per routing batch: one Raft entry each, well inside apiBodyBytesMax. */
export const REGISTER_BATCH_COMMANDS_MAX = 500;

export interface ClusterApi {
  api: string;
  token: string;
}

interface NodeIdentity {
  nodeId: string;
  busDir: string;
}

/** The local node's id, after checking that it serves the bus this command uses. */
export async function localNode(target: ClusterApi, bus: Bus): Promise<NodeIdentity> {
  const status = (await apiRequest(target.api, "GET", "/v1/status", target.token)) as {
    node?: { id?: string };
    bus?: { dir?: string };
  };
  const nodeId = status.node?.id;
  const busDir = status.bus?.dir;
  if (typeof nodeId !== "string" || typeof busDir !== "string")
    throw new CfnError(
      "CFN_ERR_INVALID_MESSAGE",
      `node API ${target.api} answered without node id or bus dir`,
    );
  if (busDir !== bus.dir)
    throw new CfnError(
      "CFN_ERR_CONFIG_INVALID",
      `node ${nodeId} at ${target.api} serves bus ${busDir}, this command uses ${bus.dir}: ` +
        "run it with the node's bus settings (CFN_BUS_ROOT, CFN_BUS_NAME or the node's --config)",
      { nodeId, nodeBusDir: busDir, busDir: bus.dir },
    );
  return { nodeId, busDir };
}

/** Proposes through the node; a refused command, or a refused part of a batch, throws CFN_ERR_ROUTING_REFUSED. */
async function propose(
  target: ClusterApi,
  command: RoutingCommand,
  tolerated: ReadonlySet<string> = NONE,
): Promise<void> {
  const result = (await apiRequest(target.api, "POST", "/v1/routing", target.token, { command }, 30_000)) as
    | RoutingResult
    | undefined;
  const refused = result?.results?.findIndex((inner) => !inner.ok && !tolerated.has(inner.error ?? "")) ?? -1;
  if (command.op === "batch" && refused >= 0) {
    const reason = result?.results?.[refused].error ?? "refused";
    const inner = command.commands[refused];
    throw new CfnError(
      "CFN_ERR_ROUTING_REFUSED",
      `the cluster refused ${inner.op}${"agent" in inner ? ` of ${inner.agent}` : ""}: ${reason}`,
      { reason, op: inner.op },
    );
  }
}

async function proposeInBatches(
  target: ClusterApi,
  commands: RoutingCommand[],
  tolerated: ReadonlySet<string> = NONE,
): Promise<void> {
  for (let start = 0; start < commands.length; start += REGISTER_BATCH_COMMANDS_MAX)
    await propose(
      target,
      { op: "batch", commands: commands.slice(start, start + REGISTER_BATCH_COMMANDS_MAX) },
      tolerated,
    );
}

const NONE: ReadonlySet<string> = new Set();
/** Removing an agent that is already gone is what was wanted. */
const GONE_ALREADY: ReadonlySet<string> = new Set(["unknown_agent"]);

/**
 * Registers the swarm's workers on the local node and publishes its topology: the leader's master
 * then assigns the team coordinators. Returns the node id the agents were registered on.
 */
export async function joinCluster(target: ClusterApi, bus: Bus, record: SwarmRecord): Promise<string> {
  const { nodeId } = await localNode(target, bus);
  try {
    await proposeInBatches(
      target,
      record.agents.map((agent) => ({
        op: "agent.register",
        agent: agent.id,
        node: nodeId,
        team: swarmTeamId(record.swarm, agent.team),
      })),
    );
    await propose(target, {
      op: "policy.set",
      name: swarmPolicyName(record.swarm),
      value: { topology: record.topology },
    });
  } catch (error) {
    // Not half-registered: what went in is withdrawn (best effort), the caller stops the agents.
    await leaveCluster(target, record).catch(() => {});
    throw error;
  }
  return nodeId;
}

/** Withdraws the swarm from the cluster: its policy (the master stops its coordinators), then its agents. */
export async function leaveCluster(target: ClusterApi, record: SwarmRecord): Promise<void> {
  await propose(target, { op: "policy.set", name: swarmPolicyName(record.swarm), value: null });
  await proposeInBatches(
    target,
    record.agents.map((agent) => ({ op: "agent.remove", agent: agent.id })),
    GONE_ALREADY,
  );
}

export interface ClusterRoundRequest {
  input?: unknown;
  items?: unknown[];
  priority?: "high" | "normal" | "low";
  timeoutMs: number;
  limits?: { taskTimeoutMs?: number; attemptsMax?: number };
}

/**
 * Asks the cluster's master for one round of `swarm` and waits for its result. The result comes
 * back to a reply mailbox registered on the local node for the round's duration, so it finds this
 * command even when the master moves to another node mid-round.
 */
export async function runClusterRound(
  target: ClusterApi,
  bus: Bus,
  swarm: string,
  request: ClusterRoundRequest,
  onIssued?: (roundId: string) => void,
): Promise<RoundResult> {
  const { nodeId } = await localNode(target, bus);
  const roundId = `r${Date.now().toString(36)}-${randomBytes(3).toString("hex")}`;
  const replyTo = `${swarm}.client-${roundId}`;
  await propose(target, { op: "agent.register", agent: replyTo, node: nodeId, team: null });
  try {
    const result = requestClusterRound(bus, swarm, {
      roundId,
      replyTo,
      input: request.input,
      items: request.items,
      priority: request.priority,
      timeoutMs: request.timeoutMs,
      limits: request.limits,
    });
    onIssued?.(roundId);
    return await result;
  } finally {
    await propose(target, { op: "agent.remove", agent: replyTo }).catch(() => {});
    // The reply mailbox served this round only: it goes unless something still waits in it.
    const left = bus.agentStatus(replyTo);
    if (left && left.inboxDepth + left.claimed === 0)
      rmSync(bus.layout.agent(replyTo).dir, { recursive: true, force: true });
  }
}
