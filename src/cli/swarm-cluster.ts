// A swarm on the cluster (`cfn swarm spawn|round|stop --cluster`): the agents spawned on this host
// are registered with the local node (agent → node, team `<swarm>.<team>`), the swarm's topology
// becomes the routing policy `swarm.<name>`, and from then on the master on the Raft leader places
// each team's coordinator on a live node and runs the rounds asked for through `<swarm>.rounds`.
// Everything goes through the local node's HTTP API, whose bus must be the one the agents use.

import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import type { Bus } from "../bus/index.js";
import { requestClusterRound } from "../coordination/cluster-client.js";
import { roundsAgentId, swarmPolicyName, swarmTeamId } from "../coordination/cluster-coordination.js";
import type { RoundResult } from "../coordination/master.js";
import type { SwarmRecord } from "../coordination/registry.js";
import { planTopology } from "../coordination/topology.js";
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

/**
 * Withdraws the swarm from the cluster: its policy (the master stops its coordinators), then its
 * agents, then the reply agents of its rounds still registered (a round interrupted before it
 * could remove its own, or one whose requester was killed).
 */
export async function leaveCluster(target: ClusterApi, record: SwarmRecord): Promise<void> {
  await propose(target, { op: "policy.set", name: swarmPolicyName(record.swarm), value: null });
  await proposeInBatches(
    target,
    record.agents.map((agent) => ({ op: "agent.remove", agent: agent.id })),
    GONE_ALREADY,
  );
  const replyAgents = (await registeredAgents(target)).filter((id) => isReplyAgentOf(record.swarm, id));
  await proposeInBatches(
    target,
    replyAgents.map((agent) => ({ op: "agent.remove", agent })),
    GONE_ALREADY,
  );
}

/** Ids of every agent in the routing state, as the node serves it. */
async function registeredAgents(target: ClusterApi): Promise<string[]> {
  const view = (await apiRequest(target.api, "GET", "/v1/routing", target.token, undefined, 30_000)) as {
    agents?: Array<{ id?: unknown }>;
  };
  return (view?.agents ?? []).map((agent) => agent.id).filter((id): id is string => typeof id === "string");
}

/** The agent ids the cluster itself runs for a swarm: its master, `<swarm>.rounds`, its coordinators. */
export function clusterAgentIdsOf(record: SwarmRecord): string[] {
  const plan = planTopology(record.topology, { swarm: record.swarm });
  return [
    plan.master,
    roundsAgentId(record.swarm),
    ...plan.coordinators.map((coordinator) => coordinator.id),
  ];
}

/**
 * Waits (up to `timeoutMs`) until the leader has removed the swarm's own agents from the routing
 * state, which it does once the nodes dropped the master and coordinators of a withdrawn policy.
 * True when they are gone: their mailboxes on this bus are no longer served.
 */
export async function awaitSwarmWithdrawn(
  target: ClusterApi,
  record: SwarmRecord,
  timeoutMs: number,
): Promise<boolean> {
  const own = new Set(clusterAgentIdsOf(record));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const agents = await registeredAgents(target).catch(() => undefined);
    if (agents && !agents.some((id) => own.has(id))) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, WITHDRAWAL_POLL_MS));
  }
}

/** Pause between two looks at the routing state while a withdrawal completes, ms. */
const WITHDRAWAL_POLL_MS = 100;

/** The reply agent of one cluster round of `swarm`. */
function replyAgentId(swarm: string, roundId: string): string {
  return `${swarm}.client-${roundId}`;
}

/** True for the reply agent of a cluster round of `swarm` (not an agent of a swarm named alike). */
export function isReplyAgentOf(swarm: string, agentId: string): boolean {
  const prefix = replyAgentId(swarm, "");
  return agentId.startsWith(prefix) && /^[A-Za-z0-9_-]+$/.test(agentId.slice(prefix.length));
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
 *
 * Aborting `signal` (SIGINT/SIGTERM of `cfn swarm round`) stops the wait: the reply agent is
 * deregistered and its mailbox removed, and CFN_ERR_CLOSED is thrown. The master still finishes
 * the round; its late result lands in a mailbox nobody reads, which `swarm stop` removes. The wait
 * itself keeps running until its deadline (requestClusterRound takes no signal): the caller exits.
 */
export async function runClusterRound(
  target: ClusterApi,
  bus: Bus,
  swarm: string,
  request: ClusterRoundRequest,
  onIssued?: (roundId: string) => void,
  signal?: AbortSignal,
): Promise<RoundResult> {
  const { nodeId } = await localNode(target, bus);
  const roundId = `r${Date.now().toString(36)}-${randomBytes(3).toString("hex")}`;
  const replyTo = replyAgentId(swarm, roundId);
  throwIfInterrupted(signal, roundId);
  try {
    await propose(target, { op: "agent.register", agent: replyTo, node: nodeId, team: null });
    throwIfInterrupted(signal, roundId);
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
    return await untilInterrupted(result, signal, roundId);
  } finally {
    await propose(target, { op: "agent.remove", agent: replyTo }).catch(() => {});
    // The reply mailbox served this round only: it goes unless something still waits in it — or
    // the round was interrupted, and then nobody will read what is in it.
    const left = bus.agentStatus(replyTo);
    if (left && (signal?.aborted || left.inboxDepth + left.claimed === 0))
      rmSync(bus.layout.agent(replyTo).dir, { recursive: true, force: true });
  }
}

function interrupted(roundId: string): CfnError {
  return new CfnError("CFN_ERR_CLOSED", `waiting for round ${roundId} was interrupted`, { roundId });
}

function throwIfInterrupted(signal: AbortSignal | undefined, roundId: string): void {
  if (signal?.aborted) throw interrupted(roundId);
}

/** The round's result, or CFN_ERR_CLOSED as soon as `signal` aborts. */
function untilInterrupted<T>(
  result: Promise<T>,
  signal: AbortSignal | undefined,
  roundId: string,
): Promise<T> {
  if (!signal) return result;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      result.catch(() => {}); // it ends at its own deadline, unread
      reject(interrupted(roundId));
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    result.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
