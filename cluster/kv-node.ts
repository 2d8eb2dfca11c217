// `node dist/cluster/kv-node.js --id n1 --peers n1=127.0.0.1:7001,n2=…,n3=… --data-dir DIR …`
//
// One replicated KV node: RaftHost + LevelDB LogStore + WebSocket Transport + KV state machine,
// and a client endpoint (cluster/kv-protocol.ts) on a separate port. Used by the cluster tests,
// chaos and the raft benchmark; the cluster-node daemon of issue 4 grows out of it.
//
// Flags (env in brackets):
//   --id ID                   this node's id                                       [CFN_NODE_ID]
//   --peers LIST              id=host:peerPort for every founding member, self included [CFN_PEERS]
//   --client-addrs LIST       id=host:clientPort for every member (leader hints)    [CFN_CLIENT_ADDRS]
//   --data-dir DIR            LevelDB data dir (created when missing)               [CFN_DATA_DIR]
//   --peer-port N             Raft transport listen port (default: from --peers)
//   --client-port N           client endpoint listen port (default: from --client-addrs)
//   --cluster-token T         shared secret, ≥ 16 chars                             [CFN_CLUSTER_TOKEN]
//   --cluster-id C            written into the data dir (default "cfn-kv")          [CFN_CLUSTER_ID]
//   --tick-ms N, --election-ticks N, --heartbeat-ticks N, --snapshot-entries N     (RaftHost limits)
//   --reconnect-max-ms N      cap of the transport's redial backoff (default 250: a restarted
//                             peer is redialled within 250 ms, so it can vote soon after)
//   --log-level L             debug|info|warn|error|silent (default info)          [CFN_LOG_LEVEL]
//   --listen-host H           address both listeners bind (default 127.0.0.1): a host in a
//                             network namespace or a container binds its own address [CFN_LISTEN_HOST]
//
// Listens on 127.0.0.1 unless --listen-host says otherwise. Prints one JSON line on stdout when serving:
//   {"event":"ready","id":…,"peerUrl":…,"clientUrl":…}
// SIGTERM/SIGINT: graceful stop (leadership transfer, flush, close), exit 0.

import { parseArgs } from "node:util";
import { CfnError } from "../src/errors.js";
import { RaftHost } from "../src/node/raft-host.js";
import { createLogger, type LogLevel } from "../src/obs/logger.js";
import { Metrics } from "../src/obs/metrics.js";
import { KvStateMachine } from "../src/statemachine/kv.js";
import { LevelLogStore } from "../src/storage/level-log-store.js";
import { WsTransport } from "../src/transport/ws-transport.js";
import { KvClientServer } from "./kv-server.js";

const LISTEN_HOST = "127.0.0.1";

export interface KvNodeArgs {
  id: string;
  peers: Record<string, string>;
  clientAddrs: Record<string, string>;
  dataDir: string;
  peerPort: number;
  clientPort: number;
  clusterToken: string;
  clusterId: string;
  host: Partial<{
    tickIntervalMs: number;
    electionTimeoutTicks: number;
    heartbeatTicks: number;
    snapshotEntriesInterval: number;
  }>;
  logLevel: LogLevel;
  reconnectDelayMsMax: number;
  /** Address the peer and client listeners bind (chaos runs on netns hosts and containers). */
  listenHost: string;
}

/** Default cap of the peer redial backoff: a peer that restarts is redialled within this time
 *  (the transport's own default, 5 s, would leave it unable to vote or answer for seconds). */
export const KV_NODE_RECONNECT_DELAY_MS_MAX = 250;

function parseList(text: string | undefined, flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!text) return out;
  for (const item of text.split(",").filter(Boolean)) {
    const [id, address] = item.split("=");
    if (!id || !address)
      throw new CfnError("CFN_ERR_CONFIG_INVALID", `${flag}: "${item}" is not id=host:port`);
    out[id] = address;
  }
  return out;
}

function portOf(address: string | undefined, flag: string): number {
  const port = Number(address?.split(":").pop());
  if (!Number.isInteger(port) || port <= 0 || port > 65535)
    throw new CfnError("CFN_ERR_CONFIG_INVALID", `${flag}: no valid port`);
  return port;
}

function optionalInt(text: string | undefined): number | undefined {
  return text === undefined ? undefined : Number(text);
}

export function parseKvNodeArgs(argv: string[], env: NodeJS.ProcessEnv): KvNodeArgs {
  const { values } = parseArgs({
    args: argv,
    options: {
      id: { type: "string" },
      peers: { type: "string" },
      "client-addrs": { type: "string" },
      "data-dir": { type: "string" },
      "peer-port": { type: "string" },
      "client-port": { type: "string" },
      "cluster-token": { type: "string" },
      "cluster-id": { type: "string" },
      "tick-ms": { type: "string" },
      "election-ticks": { type: "string" },
      "heartbeat-ticks": { type: "string" },
      "snapshot-entries": { type: "string" },
      "log-level": { type: "string" },
      "reconnect-max-ms": { type: "string" },
      "listen-host": { type: "string" },
    },
  });
  const id = values.id ?? env.CFN_NODE_ID;
  if (!id) throw new CfnError("CFN_ERR_CONFIG_INVALID", "--id is required");
  const peers = parseList(values.peers ?? env.CFN_PEERS, "--peers");
  if (!peers[id]) throw new CfnError("CFN_ERR_CONFIG_INVALID", `--peers must list this node (${id})`);
  const clientAddrs = parseList(values["client-addrs"] ?? env.CFN_CLIENT_ADDRS, "--client-addrs");
  const dataDir = values["data-dir"] ?? env.CFN_DATA_DIR;
  if (!dataDir) throw new CfnError("CFN_ERR_CONFIG_INVALID", "--data-dir is required");
  const clusterToken = values["cluster-token"] ?? env.CFN_CLUSTER_TOKEN ?? "";
  const host: KvNodeArgs["host"] = {};
  const tick = optionalInt(values["tick-ms"]);
  if (tick !== undefined) host.tickIntervalMs = tick;
  const election = optionalInt(values["election-ticks"]);
  if (election !== undefined) host.electionTimeoutTicks = election;
  const heartbeat = optionalInt(values["heartbeat-ticks"]);
  if (heartbeat !== undefined) host.heartbeatTicks = heartbeat;
  const snapshot = optionalInt(values["snapshot-entries"]);
  if (snapshot !== undefined) host.snapshotEntriesInterval = snapshot;
  return {
    id,
    peers,
    clientAddrs,
    dataDir,
    peerPort: values["peer-port"] ? Number(values["peer-port"]) : portOf(peers[id], "--peers"),
    clientPort: values["client-port"]
      ? Number(values["client-port"])
      : portOf(clientAddrs[id], "--client-addrs"),
    clusterToken,
    clusterId: values["cluster-id"] ?? env.CFN_CLUSTER_ID ?? "cfn-kv",
    host,
    logLevel: (values["log-level"] ?? env.CFN_LOG_LEVEL ?? "info") as LogLevel,
    reconnectDelayMsMax: optionalInt(values["reconnect-max-ms"]) ?? KV_NODE_RECONNECT_DELAY_MS_MAX,
    listenHost: values["listen-host"] ?? env.CFN_LISTEN_HOST ?? LISTEN_HOST,
  };
}

/** Starts a node in this process; resolves once it serves clients. */
export async function startKvNode(
  args: KvNodeArgs,
): Promise<{ stop: () => Promise<void>; clientUrl: string; peerUrl: string }> {
  const logger = createLogger(`cfn:${args.id}`, { level: args.logLevel });
  const metrics = new Metrics({ defaultLabels: { node: args.id } });
  const store = await LevelLogStore.open({
    path: args.dataDir,
    identity: { clusterId: args.clusterId, nodeId: args.id },
    logger,
    metrics,
  });
  const transport = new WsTransport({
    nodeId: args.id,
    clusterToken: args.clusterToken,
    logger,
    metrics,
    host: args.listenHost,
    port: args.peerPort,
    limits: {
      reconnectDelayMsMax: args.reconnectDelayMsMax,
      reconnectDelayMsMin: Math.min(50, args.reconnectDelayMsMax),
    },
  });
  const kv = new KvStateMachine();
  const peerUrls = Object.fromEntries(
    Object.entries(args.peers).map(([id, address]) => [id, `ws://${address}`]),
  );
  const host = new RaftHost({
    config: { id: args.id, ...args.host },
    logger,
    metrics,
    store,
    transport,
    stateMachine: kv,
    peers: peerUrls,
    bootstrap: { voters: Object.keys(args.peers) },
  });
  const clientUrls = Object.fromEntries(
    Object.entries(args.clientAddrs).map(([id, address]) => [id, `ws://${address}`]),
  );
  const server = new KvClientServer({
    host,
    kv,
    metrics,
    logger,
    clusterToken: args.clusterToken,
    clientUrls,
    listenHost: args.listenHost,
    port: args.clientPort,
  });
  host.onFatal((error) => {
    logger.error("fatal raft host error; exiting", { error });
    process.exit(70);
  });
  await host.start();
  await server.start();
  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      await server.close();
      await host.stop();
    })();
    return stopping;
  };
  return { stop, clientUrl: server.url, peerUrl: transport.url };
}

async function main(): Promise<void> {
  const args = parseKvNodeArgs(process.argv.slice(2), process.env);
  const node = await startKvNode(args);
  process.stdout.write(
    `${JSON.stringify({ event: "ready", id: args.id, peerUrl: node.peerUrl, clientUrl: node.clientUrl, pid: process.pid })}\n`,
  );
  const shutdown = () => {
    node.stop().then(
      () => process.exit(0),
      (error) => {
        process.stderr.write(`kv-node stop failed: ${String(error)}\n`);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);
}

const isEntry =
  process.argv[1] !== undefined && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (isEntry) {
  main().catch((error) => {
    process.stderr.write(`kv-node failed: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  });
}
