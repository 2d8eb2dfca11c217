// The node's HTTP API (node:http, JSON). Health and metrics for orchestrators and Prometheus,
// status for `cfn cluster status`, and the calls agents and operators make through their
// local node. Every request passes the security gate (src/security, docs/SECURITY.md): the
// cluster token (superuser) or an API token whose roles grant the route's permission; reads may
// be anonymous (security.anonymousReadAllowed). A refused request is counted in
// cfn_node_api_rejected_total{reason} and audited.
//
//   GET    /healthz                    200 while the process serves (liveness)
//   GET    /readyz                     200 when a leader is known and this node caught up, else 503
//   GET    /metrics                    Prometheus text of the node's registry
//   GET    /v1/status                  node, raft, members with lag, agents, teams, delivery, bus
//   GET    /v1/routing                 the replicated routing state
//   GET    /dashboard                  the live dashboard page (src/obs/dashboard-page.ts); / redirects
//   GET    /v1/dashboard               the dashboard's snapshot: status, counters, inboxes, rounds
//   POST   /v1/agents                  {agent, team?}          register an agent on this node
//   DELETE /v1/agents/:agent                                   deregister
//   POST   /v1/members                 {id, peerUrl, apiUrl, clusterId?}   add a member (via the leader)
//   DELETE /v1/members/:id                                     remove a member (via the leader)
//   POST   /v1/teams/:team/checkpoint  {epoch, seq, data}      replicate a coordinator checkpoint
//   POST   /v1/routing                 {command}               any routing command (topology, policy)
//   POST   /v1/send                    {from, to, type, payload?, id?, priority?, headers?}
//   POST   /v1/leader                  {to}                    transfer leadership
//   POST   /v1/handoff                 {from, clusterId, messages?, acks?}   a removed node's spool
//                                                                 and its last acks (taken, acked)
//   GET    /v1/security/whoami                                the caller's principal, roles, permissions
//   GET    /v1/security/tokens                                API tokens (no secrets)
//   POST   /v1/security/tokens         {principal, roles, ttlDays?}   create one (shown once)
//   DELETE /v1/security/tokens/:id                            revoke
//   GET    /v1/audit                   ?since&principal&action&outcome&limit   this node's audit log
//   GET    /v1/audit/verify                                   walk its hash chain
//
// Connections are bounded before any token is read (docs/NODE.md "Connection limits"):
// node.apiConnectionsMax open at once (at the cap a new one closes the oldest idle one),
// complete headers within node.apiHeadersTimeoutMs, the whole request within
// node.apiRequestTimeoutMs. What is refused or closed is counted and logged (rate-limited).

import { closeSync, openSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { Counter } from "prom-client";
import { validateAgentId } from "../bus/agent-id.js";
import { CfnError, isCfnError } from "../errors.js";
import { DashboardSnapshots } from "../obs/dashboard.js";
import { DASHBOARD_HTML } from "../obs/dashboard-page.js";
import type { Logger } from "../obs/logger.js";
import type { Metrics } from "../obs/metrics.js";
import {
  ConnectionGuard,
  GUARD_WARN_INTERVAL_MS,
  RateLimitedWarning,
  sweepIntervalMs,
} from "../transport/connection-guard.js";
import type { ClusterNode } from "./node.js";
import type { NodeConfig } from "./node-config.js";
import { splitListen } from "./node-config.js";
import type { NodeMetrics } from "./node-metrics.js";
import { isValidId, validateRoutingCommand } from "./routing/commands.js";

export interface NodeApiOptions {
  node: ClusterNode;
  config: NodeConfig;
  logger: Logger;
  metrics: Metrics;
  nodeMetrics: NodeMetrics;
}

const STATUS_OF: Record<string, number> = {
  CFN_ERR_CONFIG_INVALID: 400,
  CFN_ERR_INVALID_MESSAGE: 400,
  CFN_ERR_INVALID_AGENT_ID: 400,
  CFN_ERR_MESSAGE_TOO_LARGE: 413,
  CFN_ERR_AUTH: 401,
  CFN_ERR_FORBIDDEN: 403,
  CFN_ERR_INBOX_FULL: 429,
  CFN_ERR_NOT_LEADER: 503,
  CFN_ERR_CLOSED: 503,
  CFN_ERR_PROPOSAL_DROPPED: 503,
  CFN_ERR_TIMEOUT: 504,
  CFN_ERR_CONF_CHANGE: 409,
  CFN_ERR_ROUTING_REFUSED: 409,
  CFN_ERR_PEER_UNREACHABLE: 502,
};

/** No percent-encoding and no empty segment (a trailing slash aside): the gate and the router agree. */
export function isCanonicalPath(path: string): boolean {
  return !path.includes("%") && !path.slice(0, -1).includes("//");
}

/** How often the API checks that the process still has a free file descriptor, ms. */
export const FD_CHECK_INTERVAL_MS = 1000;

export class NodeApi {
  private readonly options: NodeApiOptions;
  private readonly logger: Logger;
  private readonly server: Server;
  private readonly dashboard: DashboardSnapshots;
  private readonly guard: ConnectionGuard;
  private readonly fdExhausted: Counter<string>;
  private readonly fdWarning: RateLimitedWarning;
  private fdTimer: NodeJS.Timeout | undefined;

  constructor(options: NodeApiOptions) {
    this.options = options;
    const { config, metrics } = options;
    this.dashboard = new DashboardSnapshots(options.node, options.metrics);
    this.logger = options.logger.child("api");
    this.server = createServer(
      {
        headersTimeout: config.apiHeadersTimeoutMs,
        requestTimeout: config.apiRequestTimeoutMs,
        // Node checks those deadlines every 30 s by default: a flood would hold its sockets as long.
        connectionsCheckingInterval: sweepIntervalMs(config.apiHeadersTimeoutMs),
      },
      (request, response) => {
        const socket = request.socket as Socket;
        this.guard.markBusy(socket);
        response.once("close", () => this.guard.markIdle(socket));
        this.handle(request, response).catch((error) => this.fail(response, error));
      },
    );
    this.server.keepAliveTimeout = 5_000;
    const refused = metrics.counter(
      "cfn_node_api_connections_refused_total",
      "API connections refused before a request (reason: connections_max: apiConnectionsMax reached with every connection busy, emfile: out of file descriptors on accept)",
      ["reason"],
    );
    const reaped = metrics.counter(
      "cfn_node_api_connections_reaped_total",
      "API connections closed by the node before a complete request (reason: timeout: apiHeadersTimeoutMs or apiRequestTimeoutMs passed, evicted: the oldest idle one closed for a new one at apiConnectionsMax)",
      ["reason"],
    );
    const open = metrics.gauge(
      "cfn_node_api_connections",
      "Open HTTP API connections (counted against apiConnectionsMax)",
    );
    this.guard = new ConnectionGuard({
      name: "api",
      connectionsSetting: "apiConnectionsMax",
      connectionsMax: config.apiConnectionsMax,
      logger: this.logger,
      onRefused: (reason) => refused.inc({ reason }),
      onReaped: (reason) => reaped.inc({ reason }),
      onCount: (connections) => open.set(connections),
    });
    this.guard.attach(this.server);
    // With a listener here Node leaves the answer to us: 408 for its own deadlines, else 400.
    this.server.on("clientError", (error: Error & { code?: string }, socket: Duplex) => {
      if (socket.destroyed) return;
      const timedOut = error.code === "ERR_HTTP_REQUEST_TIMEOUT";
      if (timedOut) this.guard.noteReaped("timeout");
      if (socket.writable && error.code !== "ECONNRESET")
        socket.end(
          `HTTP/1.1 ${timedOut ? "408 Request Timeout" : "400 Bad Request"}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`,
        );
      socket.destroy();
    });
    this.fdExhausted = metrics.counter(
      "cfn_node_fd_exhausted_total",
      "Once-a-second checks that found the process out of file descriptors (new connections are then dropped before the node sees them): raise ulimit -n or lower apiConnectionsMax / peerPendingConnectionsMax",
    );
    this.fdWarning = new RateLimitedWarning(
      this.logger,
      "the process is out of file descriptors: new API and peer connections are dropped (raise ulimit -n, or lower node.apiConnectionsMax / node.peerPendingConnectionsMax)",
      GUARD_WARN_INTERVAL_MS,
    );
  }

  get url(): string {
    if (this.options.config.advertiseApiUrl) return this.options.config.advertiseApiUrl;
    const address = this.server.address() as AddressInfo | null;
    if (!address) return `http://${this.options.config.apiListen}`;
    return `http://${address.family === "IPv6" ? `[${address.address}]` : address.address}:${address.port}`;
  }

  async start(): Promise<void> {
    const { host, port } = splitListen(this.options.config.apiListen);
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, host, () => {
        this.server.off("error", reject);
        resolve();
      });
    });
    // Without a listener an error on accept (EMFILE when even libuv's reserve descriptor is
    // gone) would be thrown and end the process: count it and go on serving.
    this.server.on("error", (error: Error & { code?: string; syscall?: string }) => {
      if (error.syscall === "accept" && (error.code === "EMFILE" || error.code === "ENFILE"))
        this.guard.noteRefused("emfile");
      else this.logger.error("api listener error", { error });
    });
    // Out of descriptors, libuv accepts and closes new connections itself, unseen by the server:
    // a descriptor that cannot be opened is the only sign, so look for one now and then.
    this.fdTimer = setInterval(() => this.checkDescriptors(), FD_CHECK_INTERVAL_MS);
    this.fdTimer.unref();
    this.logger.info("api listening", { url: this.url });
  }

  private checkDescriptors(): void {
    try {
      closeSync(openSync("/dev/null", "r"));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== "EMFILE" && code !== "ENFILE") return;
      this.fdExhausted.inc();
      this.fdWarning.note(code);
    }
  }

  async close(): Promise<void> {
    if (this.fdTimer) clearInterval(this.fdTimer);
    this.fdTimer = undefined;
    this.guard.close();
    this.fdWarning.flush();
    if (!this.server.listening) return;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const { node, metrics } = this.options;
    // A path only: `//a:99999/x` would be read as an authority (new URL threw on it: a 500).
    const target = request.url ?? "/";
    if (!target.startsWith("/") || target.startsWith("//")) {
      this.options.nodeMetrics.apiRejected.inc({ reason: "path" });
      return this.json(response, 400, {
        error: { code: "CFN_ERR_INVALID_MESSAGE", message: `bad request target ${JSON.stringify(target)}` },
      });
    }
    const url = new URL(target, "http://node");
    // HEAD is a GET without the body (node:http leaves it out): same routes, same permission.
    const method = request.method === "HEAD" ? "GET" : (request.method ?? "GET");
    const path = url.pathname;
    if (!isCanonicalPath(path)) {
      // The gate picks the permission by the path as written and the router reads its segments:
      // `/v1/%6dembers/n3` or `/v1//agents/x` must not reach a route under a lesser permission.
      // No route and no id needs percent-encoding or empty segments.
      this.options.nodeMetrics.apiRejected.inc({ reason: "path" });
      return this.json(response, 400, {
        error: {
          code: "CFN_ERR_INVALID_MESSAGE",
          message: `non-canonical path ${JSON.stringify(path)}: no percent-encoding, no empty segments`,
        },
      });
    }
    // RBAC and audit (src/security/gate.ts): 401/403 here; state changes are audited on close.
    const { gate } = node.security;
    const access = gate.admit(request, response, method, path);
    if (method === "GET") {
      switch (path) {
        case "/healthz": {
          const health = node.health();
          return this.json(response, health.ok ? 200 : 503, health);
        }
        case "/readyz": {
          const readiness = node.readiness();
          return this.json(response, readiness.ready ? 200 : 503, readiness);
        }
        case "/metrics": {
          const text = await metrics.exposition();
          response.writeHead(200, { "content-type": metrics.registry.contentType });
          response.end(text);
          return;
        }
        case "/v1/status":
          return this.json(response, 200, node.status());
        case "/v1/routing":
          return this.json(response, 200, node.routingJson());
        case "/":
        case "/dashboard/":
          response.writeHead(302, { location: "/dashboard" });
          response.end();
          return;
        case "/dashboard":
          response.writeHead(200, {
            "content-type": "text/html; charset=utf-8",
            "cache-control": "no-store",
            // The page is self-contained: nothing but itself and same-origin polls may load.
            "content-security-policy":
              "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
          });
          response.end(DASHBOARD_HTML);
          return;
        case "/v1/dashboard":
          return this.json(response, 200, await this.dashboard.get());
      }
      const secured = await gate.route(access, method, url);
      if (secured) return this.json(response, secured.status, secured.body);
      return this.json(response, 404, {
        error: { code: "CFN_ERR_INVALID_MESSAGE", message: `no route GET ${path}` },
      });
    }
    const body = await this.readBody(request);
    const secured = await gate.route(access, method, url, body);
    if (secured) return this.json(response, secured.status, secured.body);
    const parts = path.split("/").filter(Boolean);
    if (method === "POST" && path === "/v1/agents") {
      const agent = validateAgentId(body.agent); // CFN_ERR_INVALID_AGENT_ID, worded as the bus does
      const team = body.team ?? null;
      if (team !== null && !isValidId(team))
        throw invalid("team must match [A-Za-z0-9._-]{1,128}, not '.' or '..'");
      return this.result(response, await node.registerAgent(agent, team as string | null));
    }
    if (method === "DELETE" && parts[0] === "v1" && parts[1] === "agents" && parts.length === 3) {
      validateAgentId(parts[2]);
      return this.result(response, await node.propose({ op: "agent.remove", agent: parts[2] }));
    }
    if (method === "POST" && path === "/v1/members") {
      const { id, peerUrl, apiUrl, clusterId } = body;
      // A joining node says its cluster (`cfn cluster join` does not): another cluster's is refused.
      if (clusterId !== undefined && clusterId !== this.options.config.clusterId)
        throw new CfnError(
          "CFN_ERR_CONFIG_INVALID",
          `node ${JSON.stringify(id)} is of cluster ${JSON.stringify(clusterId)}; this cluster is ${JSON.stringify(this.options.config.clusterId)} (start it with --cluster-id ${this.options.config.clusterId})`,
        );
      const command = validateRoutingCommand({ op: "member.upsert", id, peerUrl, apiUrl });
      if (command?.op !== "member.upsert") throw invalid("need id, peerUrl (ws://…) and apiUrl (http://…)");
      return this.result(response, await node.addMember(command.id, command.peerUrl, command.apiUrl));
    }
    if (method === "DELETE" && parts[0] === "v1" && parts[1] === "members" && parts.length === 3) {
      if (!isValidId(parts[2])) throw invalid("bad member id");
      return this.result(response, await node.removeMember(parts[2]));
    }
    if (
      method === "POST" &&
      parts[0] === "v1" &&
      parts[1] === "teams" &&
      parts[3] === "checkpoint" &&
      parts.length === 4
    ) {
      const command = validateRoutingCommand({
        op: "team.checkpoint",
        team: parts[2],
        epoch: body.epoch,
        seq: body.seq,
        data: body.data,
      });
      if (!command) throw invalid("need epoch, seq (whole numbers) and data");
      return this.result(response, await node.propose(command));
    }
    if (method === "POST" && path === "/v1/routing") {
      const command = validateRoutingCommand(body.command);
      if (!command) throw invalid("not a routing command");
      gate.admitCommand(access, command);
      return this.result(response, await node.propose(command));
    }
    if (method === "POST" && path === "/v1/send") {
      const { from, to, type, payload, id, priority, headers } = body as Record<string, never>;
      const result = node.send(from, to, { type, payload, id, priority, headers });
      return this.json(response, 200, { sent: true, ids: result.ids });
    }
    if (method === "POST" && path === "/v1/handoff") {
      return this.json(response, 200, await node.acceptHandOff(body));
    }
    if (method === "POST" && path === "/v1/leader") {
      if (!isValidId(body.to)) throw invalid("need to: a member id");
      await node.transferLeadership(body.to);
      return this.json(response, 200, { ok: true, leader: body.to });
    }
    return this.json(response, 404, {
      error: { code: "CFN_ERR_INVALID_MESSAGE", message: `no route ${method} ${path}` },
    });
  }

  private async readBody(request: IncomingMessage): Promise<Record<string, unknown>> {
    const limit = this.options.config.apiBodyBytesMax;
    const chunks: Buffer[] = [];
    let bytes = 0;
    for await (const chunk of request) {
      bytes += (chunk as Buffer).byteLength;
      if (bytes > limit) {
        this.options.nodeMetrics.apiRejected.inc({ reason: "too_large" });
        throw new CfnError("CFN_ERR_MESSAGE_TOO_LARGE", `request body passes apiBodyBytesMax (${limit})`);
      }
      chunks.push(chunk as Buffer);
    }
    if (bytes === 0) return {};
    try {
      const value = JSON.parse(Buffer.concat(chunks).toString("utf8")) as unknown;
      if (typeof value !== "object" || value === null || Array.isArray(value))
        throw new Error("not an object");
      return value as Record<string, unknown>;
    } catch {
      this.options.nodeMetrics.apiRejected.inc({ reason: "malformed" });
      throw invalid("request body must be a JSON object");
    }
  }

  private result(response: ServerResponse, result: { ok: boolean; error?: string }): void {
    this.json(response, result.ok ? 200 : 409, result);
  }

  private json(response: ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    response.writeHead(status, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(text),
    });
    response.end(text);
  }

  private fail(response: ServerResponse, error: unknown): void {
    if (response.headersSent) {
      response.destroy();
      return;
    }
    if (isCfnError(error)) {
      this.json(response, STATUS_OF[error.code] ?? 500, { error: error.toJSON() });
      return;
    }
    this.logger.error("api handler failed", { error });
    this.json(response, 500, { error: { code: "CFN_ERR_INTERNAL", message: String(error) } });
  }
}

function invalid(message: string): CfnError {
  return new CfnError("CFN_ERR_INVALID_MESSAGE", message);
}
