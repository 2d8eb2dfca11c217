// The demo's embedded default cluster: one local node (a Raft group of one, LevelDB in a data dir
// beside the demo's metrics, the HTTP API on free loopback ports) started before the swarm. The
// swarm's agents and teams are registered in its replicated routing state, and the node's leader
// loop (the master coordinator) assigns every team's coordinator — the same path a multi-node
// cluster takes, with no peers and no external service.

import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { join } from "node:path";
import { parseNodeConfig } from "../config/node-schema.js";
import type { BusConfig } from "../config/schema.js";
import { CfnError } from "../errors.js";
import { ClusterNode } from "../node/node.js";
import type { Logger } from "../obs/logger.js";
import type { Metrics } from "../obs/metrics.js";
import type { WorkerPlan } from "./topology.js";

/** Longest the demo waits for the node to elect itself and for team assignments. */
const CLUSTER_READY_MS_MAX = 15_000;
/** Agents registered per Raft entry (one batch command each). */
const REGISTER_BATCH_AGENTS_MAX = 500;

export interface DemoCluster {
  node: ClusterNode;
  dataDir: string;
  apiUrl: string;
}

export interface DemoClusterView {
  nodeId: string;
  role: string;
  term: number;
  commitIndex: number;
  dataDir: string;
  apiUrl: string;
  agentsRegistered: number;
  teamsAssigned: number;
  teams: number;
}

async function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + CLUSTER_READY_MS_MAX;
  while (!condition()) {
    if (Date.now() > deadline)
      throw new CfnError("CFN_ERR_TIMEOUT", `demo cluster: ${what} within ${CLUSTER_READY_MS_MAX} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Starts the single-node cluster and waits until it leads itself. */
export async function startDemoCluster(options: {
  workDir: string;
  bus: Partial<BusConfig>;
  logger: Logger;
  metrics: Metrics;
}): Promise<DemoCluster> {
  const dataDir = join(options.workDir, "data");
  const [peerPort, apiPort] = [await freeLoopbackPort(), await freeLoopbackPort()];
  const config = parseNodeConfig({
    id: "demo-node",
    clusterId: "cfn-demo",
    clusterToken: randomBytes(16).toString("hex"),
    dataDir,
    peerListen: `127.0.0.1:${peerPort}`,
    apiListen: `127.0.0.1:${apiPort}`,
  });
  const node = await ClusterNode.start({
    config,
    bus: options.bus,
    logger: options.logger,
    metrics: options.metrics,
  });
  await waitFor(() => node.readiness().ready, "a leader");
  return { node, dataDir, apiUrl: node.apiUrl };
}

/** Registers every worker with its team in the routing state and waits for team assignments. */
export async function registerSwarm(cluster: DemoCluster, workers: WorkerPlan[]): Promise<void> {
  for (let start = 0; start < workers.length; start += REGISTER_BATCH_AGENTS_MAX) {
    const commands = workers.slice(start, start + REGISTER_BATCH_AGENTS_MAX).map((worker) => ({
      op: "agent.register" as const,
      agent: worker.id,
      node: cluster.node.id,
      team: worker.team,
    }));
    const result = (await cluster.node.propose({ op: "batch", commands })) as {
      ok: boolean;
      results?: Array<{ ok: boolean }>;
    };
    if (!result.ok || result.results?.some((inner) => !inner.ok)) {
      throw new CfnError(
        "CFN_ERR_PROPOSAL_DROPPED",
        `demo cluster: registering agents failed: ${JSON.stringify(result)}`,
      );
    }
  }
  const teams = new Set(workers.map((worker) => worker.team));
  await waitFor(
    () => describeCluster(cluster).teamsAssigned >= teams.size,
    "every team assigned a coordinator",
  );
}

export function describeCluster(cluster: DemoCluster): DemoClusterView {
  const status = cluster.node.status() as { raft?: { role?: string; term?: number; commit?: number } };
  const routing = cluster.node.routingJson() as {
    agents: Array<{ id: string }>;
    teams: Array<{ id: string; coordinator: string | null }>;
  };
  return {
    nodeId: cluster.node.id,
    role: status.raft?.role ?? "unknown",
    term: status.raft?.term ?? 0,
    commitIndex: status.raft?.commit ?? 0,
    dataDir: cluster.dataDir,
    apiUrl: cluster.apiUrl,
    agentsRegistered: routing.agents.length,
    teamsAssigned: routing.teams.filter((team) => team.coordinator === cluster.node.id).length,
    teams: routing.teams.length,
  };
}
