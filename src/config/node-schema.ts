// The `node` settings of the cluster node daemon (`cfn node start`): identity, addresses, the
// cluster to found or join, and the named limits of failure detection and cross-node delivery.
// The `node` section of the main schema (src/config/schema.ts): file, CFN_NODE_* environment,
// then `cfn node start` flags and a cluster file (cluster/*.yaml) on top.

import { z } from "zod";
import { isValidAgentId } from "../bus/agent-id.js";
import { CfnError } from "../errors.js";

const int = (min: number, max: number) => z.number().int().min(min).max(max);
const idPattern = /^[A-Za-z0-9._-]{1,128}$/;
// The bus's agent-id rule: a node id names a data dir under a cluster file's dataRoot.
const nodeId = z
  .string()
  .refine(isValidAgentId, "letters, digits, '.', '_' or '-', 1 to 128 characters, not '.' or '..'");
const LISTEN_PATTERN = /^[^\s:]+:[0-9]{1,5}$/;
// One message per problem: a value that is not host:port is not also told about its port.
const listen = z
  .string()
  .regex(LISTEN_PATTERN, "host:port expected, e.g. 127.0.0.1:7101")
  .refine(
    (value) => !LISTEN_PATTERN.test(value) || Number(value.split(":")[1]) <= 65_535,
    "port ≤ 65535 (host:port)",
  );

export const peerSchema = z
  .object({
    peerUrl: z
      .string()
      .regex(/^wss?:\/\/\S+$/, "ws:// or wss:// URL")
      .describe("Transport URL of the peer."),
    apiUrl: z
      .string()
      .regex(/^https?:\/\/\S+$/, "http:// or https:// URL")
      .describe("HTTP API URL of the peer."),
  })
  .strict();

/** The data dir when none is set (with --id alone: ./cfn-data/<id>). */
export const NODE_DEFAULT_DATA_DIR = "./cfn-data/node-1";
/** The default cluster token: fine for a node alone on its host, never for a cluster with peers. */
export const SINGLE_NODE_TOKEN = "cfn-single-node-local-token";

export const nodeSchema = z
  .object({
    id: nodeId.default("node-1").describe("This node's id, unique in the cluster."),
    clusterId: z
      .string()
      .regex(idPattern)
      .default("cfn")
      .describe("Cluster name; a data dir written by another cluster is refused."),
    clusterToken: z
      .string()
      .min(16, "at least 16 characters")
      .default(SINGLE_NODE_TOKEN)
      .describe(
        "Shared secret peers and API clients present; set your own for a multi-node cluster or a listen address off loopback.",
      ),
    dataDir: z
      .string()
      .min(1)
      .default(NODE_DEFAULT_DATA_DIR)
      .describe("Directory of the Raft log and the delivery spool."),
    peerListen: listen.default("127.0.0.1:7101").describe("host:port the peer WebSocket server listens on."),
    apiListen: listen
      .default("127.0.0.1:7201")
      .describe("host:port of the HTTP API (status, health, metrics)."),
    advertisePeerUrl: z.string().default("").describe("URL peers dial; empty: ws://<peerListen>."),
    advertiseApiUrl: z
      .string()
      .default("")
      .describe("URL of the API given to others; empty: http://<apiListen>."),
    peers: z
      .record(nodeId, peerSchema)
      .default({})
      .describe("Founding members other than this node (with bootstrap) or known members (join)."),
    join: z
      .string()
      .default("")
      .describe("API URL of a running member to join through; empty founds or restarts."),
    tickIntervalMs: int(1, 1000).default(25).describe("Raft tick length, in ms."),
    electionTimeoutTicks: int(2, 100_000).default(10).describe("Ticks without a leader before a campaign."),
    heartbeatTicks: int(1, 100_000).default(2).describe("Ticks between leader heartbeats."),
    healthIntervalMs: int(10, 60_000)
      .default(200)
      .describe("How often a node pings its peers (node liveness), in ms."),
    nodeDownAfterMs: int(50, 600_000)
      .default(800)
      .describe("A member not heard from for this long is marked down and its teams reassigned, in ms."),
    coordinatorIntervalMs: int(10, 60_000)
      .default(100)
      .describe("How often the leader re-plans assignments, in ms."),
    agentScanIntervalMs: int(10, 600_000)
      .default(1000)
      .describe("How often a node checks its agents' heartbeats, in ms."),
    agentDownAfterMs: int(100, 86_400_000)
      .default(90_000)
      .describe("An agent whose heartbeat is older than this is marked down, in ms."),
    proxyScanIntervalMs: int(10, 60_000)
      .default(200)
      .describe("How often the node looks for local mailboxes of remote agents to drain, in ms."),
    forwardBatchMessagesMax: int(1, 10_000).default(512).describe("Messages per forwarded frame."),
    forwardInflightMessagesMax: int(1, 1_000_000)
      .default(16_384)
      .describe("Unacknowledged forwarded messages per destination node and lane."),
    ackTimeoutMs: int(10, 600_000)
      .default(1000)
      .describe("A forwarded batch not acknowledged within this time is sent again, in ms."),
    spoolMessagesMax: int(1, 100_000_000)
      .default(1_000_000)
      .describe("Messages the spool holds before the node stops draining outbound mailboxes."),
    spoolBytesMax: int(1 << 20, 2 ** 40)
      .default(1 << 30)
      .describe("Bytes of spooled messages (as stored) before the node stops draining outbound mailboxes."),
    spoolSync: z
      .boolean()
      .default(false)
      .describe(
        "fsync each spool write: survives power loss, not only a process crash (always on with persistence).",
      ),
    idleBackgroundThreads: z
      .boolean()
      .default(false)
      .describe(
        "Run the daemon's helper threads (GC, compiler, thread pool, LevelDB) under SCHED_IDLE so woken main threads preempt them (Linux); only on hosts with CPU to spare.",
      ),
    dedupWindowMessagesMax: int(1, 10_000_000)
      .default(100_000)
      .describe("Recent (agent, message id) pairs a receiving node remembers to drop duplicates."),
    parkedMessagesMax: int(0, 10_000_000)
      .default(1000)
      .describe(
        "Forwarded messages a receiving node parks per agent whose inbox is full, so the other agents of the sender's lane go on (0: hold the lane at once).",
      ),
    persistence: z
      .boolean()
      .default(false)
      .describe("Mirror inboxes to disk so a host restart restores undelivered messages."),
    persistenceFlushIntervalMs: int(1, 60_000)
      .default(50)
      .describe("Sweep interval mirroring same-host sends and pruning consumed messages, in ms."),
    shutdownTimeoutMs: int(100, 600_000)
      .default(10_000)
      .describe("Longest a graceful shutdown takes before closing anyway, in ms."),
    leaveOnShutdown: z
      .boolean()
      .default(false)
      .describe("Remove this node from the membership at graceful shutdown."),
    frameBytesMax: int(1024, 256 * 1024 * 1024)
      .default(16 * 1024 * 1024)
      .describe("Largest peer frame sent or accepted, in bytes (transport limit)."),
    apiBodyBytesMax: int(1024, 64 * 1024 * 1024)
      .default(4 * 1024 * 1024)
      .describe("Largest HTTP API request body."),
    apiConnectionsMax: int(1, 1_000_000)
      .default(512)
      .describe(
        "Open HTTP API connections; at the cap a new one closes the oldest idle one (no request in progress), or is refused when all are busy.",
      ),
    apiHeadersTimeoutMs: int(100, 600_000)
      .default(10_000)
      .describe("An API connection that has not sent complete request headers by then is closed, in ms."),
    apiRequestTimeoutMs: int(100, 3_600_000)
      .default(30_000)
      .describe("An API request (headers and body) not fully received by then is closed, in ms."),
    peerPendingConnectionsMax: int(1, 100_000)
      .default(64)
      .describe(
        "Connections to the peer listener not yet authenticated; at the cap a new one closes the oldest (authenticated peers do not count).",
      ),
    peerHandshakeTimeoutMs: int(100, 600_000)
      .default(5000)
      .describe(
        "A connection to the peer listener that has not finished its authenticated WebSocket upgrade by then is closed, in ms.",
      ),
  })
  .strict()
  .superRefine((node, ctx) => {
    if (node.heartbeatTicks >= node.electionTimeoutTicks) {
      ctx.addIssue({ code: "custom", path: ["heartbeatTicks"], message: "must be < electionTimeoutTicks" });
    }
    if (node.nodeDownAfterMs < node.healthIntervalMs * 3) {
      ctx.addIssue({ code: "custom", path: ["nodeDownAfterMs"], message: "must be ≥ 3 × healthIntervalMs" });
    }
    if (node.forwardBatchMessagesMax > node.forwardInflightMessagesMax) {
      ctx.addIssue({
        code: "custom",
        path: ["forwardBatchMessagesMax"],
        message: "must be ≤ forwardInflightMessagesMax",
      });
    }
    if (node.apiHeadersTimeoutMs > node.apiRequestTimeoutMs) {
      ctx.addIssue({
        code: "custom",
        path: ["apiHeadersTimeoutMs"],
        message: "must be ≤ apiRequestTimeoutMs",
      });
    }
    if (node.peers[node.id]) {
      ctx.addIssue({ code: "custom", path: ["peers", node.id], message: "a node is not its own peer" });
    }
  });

export type NodeConfig = z.infer<typeof nodeSchema>;

/** Validates node settings, failing with CFN_ERR_CONFIG_INVALID naming every bad field. */
export function parseNodeConfig(input: unknown): NodeConfig {
  const parsed = nodeSchema.safeParse(input ?? {});
  if (parsed.success) {
    const node = parsed.data;
    // Here, where a node starts (flags, CFN_CLUSTER_TOKEN and the cluster file applied), not in
    // the schema: every command loads the configuration, and CFN_CLUSTER_TOKEN reaches only this.
    if (node.clusterToken === SINGLE_NODE_TOKEN && (Object.keys(node.peers).length > 0 || node.join !== ""))
      // Everyone knows the default: a cluster on it accepts any peer and any API client.
      throw new CfnError(
        "CFN_ERR_CONFIG_INVALID",
        "invalid node configuration: node.clusterToken: is the single-node default, known to everyone: a node with peers or --join needs its own secret (--token, CFN_CLUSTER_TOKEN, node.clusterToken, or the cluster file's token / tokenEnv)",
        { problems: ["node.clusterToken: the single-node default with peers or --join"] },
      );
    if (node.clusterToken === SINGLE_NODE_TOKEN) {
      // The default token is the cluster token: anyone who can reach the API is its superuser.
      // Fine on loopback (this host's users only), never on an address others can reach.
      const exposed = (
        [
          ["node.apiListen", node.apiListen],
          ["node.peerListen", node.peerListen],
        ] as const
      ).filter(([, address]) => !isLoopbackHost(splitListen(address).host));
      if (exposed.length > 0) {
        const where = exposed.map(([setting, address]) => `${setting} ${address}`).join(", ");
        throw new CfnError(
          "CFN_ERR_CONFIG_INVALID",
          `invalid node configuration: node.clusterToken: is the single-node default, known to everyone, and ${where} is not a loopback address: anyone who reaches it would be the cluster's superuser. Set your own secret (--token, CFN_CLUSTER_TOKEN or CFN_NODE_CLUSTER_TOKEN, node.clusterToken), or listen on 127.0.0.1`,
          {
            problems: exposed.map(
              ([setting]) => `node.clusterToken: the single-node default with ${setting} not on loopback`,
            ),
          },
        );
      }
    }
    return node;
  }
  const problems = parsed.error.issues.map((issue) => {
    // An unknown key's issue sits on the object: name the keys themselves.
    const keys = issue.code === "unrecognized_keys" ? issue.keys : [undefined];
    return keys
      .map(
        (key) => `node.${[...issue.path, ...(key === undefined ? [] : [key])].join(".")}: ${issue.message}`,
      )
      .join("; ");
  });
  throw new CfnError("CFN_ERR_CONFIG_INVALID", `invalid node configuration: ${problems.join("; ")}`, {
    problems,
  });
}

export function advertisedPeerUrl(config: NodeConfig): string {
  return config.advertisePeerUrl || `ws://${config.peerListen}`;
}

export function advertisedApiUrl(config: NodeConfig): string {
  return config.advertiseApiUrl || `http://${config.apiListen}`;
}

/** localhost or 127.0.0.0/8 (a listen host cannot be an IPv6 literal: host:port has one colon). */
export function isLoopbackHost(host: string): boolean {
  const name = host.toLowerCase().replace(/\.$/, "");
  if (name === "localhost" || name === "::1" || name === "[::1]") return true;
  return (
    /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(name) &&
    name.split(".").every((part) => Number(part) <= 255)
  );
}

/** The peer listener's bounds on unauthenticated connections (WsTransportOptions.listener). */
export function peerListenerLimits(config: NodeConfig): {
  pendingConnectionsMax: number;
  handshakeTimeoutMs: number;
} {
  return {
    pendingConnectionsMax: config.peerPendingConnectionsMax,
    handshakeTimeoutMs: config.peerHandshakeTimeoutMs,
  };
}

export function splitListen(listen: string): { host: string; port: number } {
  const at = listen.lastIndexOf(":");
  return { host: listen.slice(0, at), port: Number(listen.slice(at + 1)) };
}
