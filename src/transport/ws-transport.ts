// The WebSocket adapter of the Transport port: ws + msgpackr frames, one persistent outbound
// connection per peer (src/transport/ws-peer.ts), and a server accepting the peers' connections.
//
// Handshake: a peer dials `<url>/cfn/v1/peer` with headers x-cfn-cluster-token (compared in
// constant time), x-cfn-node-id (must be a known peer) and x-cfn-target-node-id (must be us, so
// a stale address book is caught). Anything else → HTTP 401 (404 for another path), counted.
// A malformed or oversized frame closes that connection and is counted; the process goes on.
//
// Connections that have not (yet) authenticated are bounded (ListenerLimits, docs/TRANSPORT.md
// "Listener limits"): at most pendingConnectionsMax at once — a new one evicts the oldest (of its
// own address first), so a peer whose handshake comes at once gets through a flood of silent
// connections — and each must
// finish its authenticated upgrade within handshakeTimeoutMs (headers included), or it is closed.
// Authenticated peer connections do not count: there is at most one per member.

import { createHash, timingSafeEqual } from "node:crypto";
import { createServer as createHttpServer, type IncomingMessage, type Server } from "node:http";
import { createServer as createHttpsServer, type ServerOptions as HttpsServerOptions } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import type { Duplex } from "node:stream";
import { type WebSocket, WebSocketServer } from "ws";
import { assert, CfnError } from "../errors.js";
import type { Logger } from "../obs/logger.js";
import type { Metrics } from "../obs/metrics.js";
import type { Message, NodeId } from "../raft/types.js";
import { ConnectionGuard, sweepIntervalMs } from "./connection-guard.js";
import { encodeFrame, encodeRaftFrames, groupByDestination, snapshotOf } from "./frame.js";
import { TransportHandlers } from "./handlers.js";
import {
  type FrameHandler,
  type FrameHandlerOptions,
  type MessagesHandler,
  RAFT_CHANNEL,
  resolveTransportLimits,
  type SnapshotStatus,
  type Transport,
  type TransportLimits,
  validateChannel,
} from "./transport.js";
import { TransportMetrics } from "./transport-metrics.js";
import {
  HEADER_CLUSTER_TOKEN,
  HEADER_NODE_ID,
  HEADER_TARGET_NODE_ID,
  PEER_PATH,
  PEER_REMOVED_REASON,
  type TlsClientOptions,
  WsPeer,
} from "./ws-peer.js";

/** A cluster token shorter than this is refused at construction. */
export const CLUSTER_TOKEN_CHARS_MIN = 16;

/** Bounds of the peer listener on connections not yet authenticated (unit last). */
export interface ListenerLimits {
  /**
   * Connections to the listener not yet authenticated (TCP accepted, upgrade not done); at the
   * cap a new one closes the oldest. Default 64.
   */
  pendingConnectionsMax: number;
  /** A connection that has not finished its authenticated upgrade by then is closed, ms. Default 5000. */
  handshakeTimeoutMs: number;
}

export const DEFAULT_LISTENER_LIMITS: ListenerLimits = {
  pendingConnectionsMax: 64,
  handshakeTimeoutMs: 5000,
};

const LISTENER_LIMIT_RANGES: Record<keyof ListenerLimits, [number, number]> = {
  pendingConnectionsMax: [1, 100_000],
  handshakeTimeoutMs: [100, 600_000],
};

/** Fills defaults and validates: CFN_ERR_CONFIG_INVALID naming the limit. */
export function resolveListenerLimits(partial: Partial<ListenerLimits> = {}): ListenerLimits {
  const limits: ListenerLimits = { ...DEFAULT_LISTENER_LIMITS };
  for (const [key, value] of Object.entries(partial) as [keyof ListenerLimits, number | undefined][])
    if (value !== undefined) limits[key] = value;
  for (const key of Object.keys(LISTENER_LIMIT_RANGES) as (keyof ListenerLimits)[]) {
    const [min, max] = LISTENER_LIMIT_RANGES[key];
    const value = limits[key];
    if (!Number.isSafeInteger(value) || value < min || value > max)
      throw new CfnError(
        "CFN_ERR_CONFIG_INVALID",
        `peer listener limit ${key} must be an integer in [${min}, ${max}], got ${String(value)}`,
        { key, value },
      );
  }
  return limits;
}

export interface WsTransportOptions {
  nodeId: NodeId;
  /** Shared secret of the cluster, at least CLUSTER_TOKEN_CHARS_MIN characters. */
  clusterToken: string;
  logger: Logger;
  metrics: Metrics;
  /** Listen address; default 127.0.0.1. */
  host?: string;
  /** Listen port; default 0 (any free port; read it back from `url`). */
  port?: number;
  /** TLS: `server` makes the listener https/wss; `client` is used when dialling wss:// peers. */
  tls?: {
    server?: HttpsServerOptions;
    client?: TlsClientOptions;
  };
  limits?: Partial<TransportLimits>;
  /** Bounds on connections not yet authenticated (node.peerPendingConnectionsMax, …). */
  listener?: Partial<ListenerLimits>;
  /** Random source for reconnect jitter; Math.random by default. */
  random?: () => number;
}

interface InboundConnection {
  socket: WebSocket;
  rejected: boolean;
}

export class WsTransport implements Transport {
  readonly nodeId: NodeId;
  readonly limits: TransportLimits;
  readonly listenerLimits: ListenerLimits;
  private readonly options: WsTransportOptions;
  private readonly logger: Logger;
  private readonly metrics: TransportMetrics;
  private readonly handlers: TransportHandlers;
  private readonly tokenDigest: Buffer;
  private readonly peers = new Map<NodeId, WsPeer>();
  private readonly inbound = new Map<NodeId, InboundConnection>();
  private readonly server: Server;
  private readonly wss: WebSocketServer;
  private readonly guard: ConnectionGuard;
  private state: "new" | "started" | "closed" = "new";

  constructor(options: WsTransportOptions) {
    if (typeof options.nodeId !== "string" || options.nodeId.length === 0) {
      throw new CfnError("CFN_ERR_CONFIG_INVALID", "WsTransport: nodeId must be a non-empty string");
    }
    if (typeof options.clusterToken !== "string" || options.clusterToken.length < CLUSTER_TOKEN_CHARS_MIN) {
      throw new CfnError(
        "CFN_ERR_CONFIG_INVALID",
        `WsTransport: clusterToken must have at least ${CLUSTER_TOKEN_CHARS_MIN} characters`,
      );
    }
    this.options = options;
    this.nodeId = options.nodeId;
    this.limits = resolveTransportLimits(options.limits);
    this.listenerLimits = resolveListenerLimits(options.listener);
    this.logger = options.logger.child("transport");
    this.metrics = new TransportMetrics(options.metrics);
    this.handlers = new TransportHandlers(this.nodeId, this.logger, this.metrics);
    this.tokenDigest = digest(options.clusterToken);
    const { handshakeTimeoutMs, pendingConnectionsMax } = this.listenerLimits;
    // Node's own header and request deadlines too (its default waits 60 s for headers): the
    // guard's sweep closes what is still unauthenticated after the upgrade event as well.
    const serverOptions = {
      headersTimeout: handshakeTimeoutMs,
      requestTimeout: handshakeTimeoutMs,
      connectionsCheckingInterval: sweepIntervalMs(handshakeTimeoutMs),
    };
    this.server = options.tls?.server
      ? createHttpsServer({ ...options.tls.server, ...serverOptions })
      : createHttpServer(serverOptions);
    this.guard = new ConnectionGuard({
      name: "peer listener",
      connectionsSetting: "peerPendingConnectionsMax",
      connectionsMax: pendingConnectionsMax,
      idleTimeoutMs: handshakeTimeoutMs,
      timeoutSetting: "peerHandshakeTimeoutMs",
      logger: this.logger,
      onRefused: (reason) => this.metrics.listenerRefused.inc({ reason }),
      onReaped: (reason) => this.metrics.listenerReaped.inc({ reason }),
      onCount: (connections) => this.metrics.listenerPending.set(connections),
    });
    this.guard.attach(this.server);
    this.server.on("clientError", (error: Error & { code?: string }, socket: Duplex) => {
      if (socket.destroyed) return;
      if (error.code === "ERR_HTTP_REQUEST_TIMEOUT") this.guard.noteReaped("timeout");
      const status = error.code === "ERR_HTTP_REQUEST_TIMEOUT" ? "408 Request Timeout" : "400 Bad Request";
      if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      socket.destroy();
    });
    this.server.on("request", (_request, response) => {
      response.writeHead(426, { "content-type": "text/plain", connection: "close" });
      response.end("cfn peer endpoint: WebSocket upgrade required\n");
    });
    this.server.on("upgrade", (request, socket, head) => this.acceptUpgrade(request, socket, head));
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: this.limits.frameBytesMax,
      perMessageDeflate: false,
    });
  }

  /** The base URL peers dial (ws:// or wss://), known once started. */
  get url(): string {
    const address = this.server.address() as AddressInfo | null;
    assert(address, "WsTransport.url read before start()");
    const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
    return `${this.options.tls?.server ? "wss" : "ws"}://${host}:${address.port}`;
  }

  async start(): Promise<void> {
    if (this.state === "closed") throw new CfnError("CFN_ERR_CLOSED", "transport is closed");
    if (this.state === "started") return;
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.options.port ?? 0, this.options.host ?? "127.0.0.1", () => {
        this.server.off("error", reject);
        resolve();
      });
    });
    this.server.on("error", (error: Error & { code?: string; syscall?: string }) => {
      // Out of descriptors on accept: the connection is lost, the listener goes on.
      if (error.syscall === "accept" && (error.code === "EMFILE" || error.code === "ENFILE"))
        this.guard.noteRefused("emfile");
      else this.logger.error("peer listener error", { error });
    });
    this.state = "started";
    this.logger.info("transport listening", { url: this.url });
    for (const peer of this.peers.values()) peer.start();
  }

  addPeer(peerId: NodeId, url: string): void {
    if (this.state === "closed") return;
    assert(peerId !== this.nodeId, "WsTransport.addPeer: a node is not its own peer");
    const existing = this.peers.get(peerId);
    if (existing) {
      existing.setUrl(url);
      return;
    }
    const peer = new WsPeer({
      selfId: this.nodeId,
      peerId,
      url,
      clusterToken: this.options.clusterToken,
      limits: this.limits,
      logger: this.logger,
      metrics: this.metrics,
      handlers: this.handlers,
      tlsClient: this.options.tls?.client,
      random: this.options.random ?? Math.random,
    });
    this.peers.set(peerId, peer);
    if (this.state === "started") peer.start();
  }

  removePeer(peerId: NodeId): void {
    this.peers.get(peerId)?.close();
    this.peers.delete(peerId);
    const connection = this.inbound.get(peerId);
    if (connection) {
      this.inbound.delete(peerId);
      connection.socket.close(1008, PEER_REMOVED_REASON);
    }
  }

  send(messages: Message[]): void {
    if (this.state === "closed") {
      this.metrics.messagesDropped.inc({ reason: "closed" }, messages.length);
      return;
    }
    for (const [to, group] of groupByDestination(messages)) {
      for (const message of group)
        assert(message.from === this.nodeId, `send: message from ${message.from} on ${this.nodeId}`);
      const peer = this.peers.get(to);
      if (!peer) {
        this.dropMessages(to, group, "unknown_peer");
        continue;
      }
      const { frames, tooLarge } = encodeRaftFrames(group, this.limits.frameBytesMax);
      if (tooLarge.length > 0) {
        this.logger.warn("raft message larger than frameBytesMax dropped", {
          to,
          types: tooLarge.map((m) => m.type),
          frameBytesMax: this.limits.frameBytesMax,
        });
        this.dropMessages(to, tooLarge, "too_large");
      }
      for (const frame of frames)
        peer.enqueue({ bytes: frame.bytes, channel: RAFT_CHANNEL, messages: frame.messages });
    }
  }

  onMessages(handler: MessagesHandler): void {
    this.handlers.onMessages(handler);
  }

  sendFrame(peerId: NodeId, channel: string, payload: unknown): boolean {
    validateChannel(channel, true);
    if (this.state === "closed") throw new CfnError("CFN_ERR_CLOSED", "transport is closed");
    const peer = this.peers.get(peerId);
    if (!peer) throw new CfnError("CFN_ERR_PEER_UNREACHABLE", `no peer ${peerId}`, { peerId });
    const bytes = encodeFrame(channel, payload);
    if (bytes.byteLength > this.limits.frameBytesMax) {
      throw new CfnError(
        "CFN_ERR_FRAME_TOO_LARGE",
        `frame of ${bytes.byteLength} bytes passes frameBytesMax (${this.limits.frameBytesMax})`,
        { bytes: bytes.byteLength, frameBytesMax: this.limits.frameBytesMax, channel },
      );
    }
    return peer.enqueue({ bytes, channel, messages: [] });
  }

  onFrame(channel: string, handler: FrameHandler, options: FrameHandlerOptions = {}): void {
    this.handlers.onFrame(channel, handler, options);
  }

  onPeerUnreachable(handler: (peerId: NodeId) => void): void {
    this.handlers.onPeerUnreachable(handler);
  }

  /**
   * `handler(peer)` when `peer` refuses this node: it closed our connection because it removed us
   * (it applied a membership without this node), or it answered our dial with 401. A hint to
   * check, not a verdict: a lagging peer may apply an old removal, a 401 may be a wrong token.
   */
  onRefusedByPeer(handler: (peerId: NodeId) => void): void {
    this.handlers.onRefusedByPeer(handler);
  }

  onSnapshotStatus(handler: (peerId: NodeId, status: SnapshotStatus) => void): void {
    this.handlers.onSnapshotStatus(handler);
  }

  /** Frames waiting in a peer's queue (tests, status pages). */
  queuedFrames(peerId: NodeId): number {
    return this.peers.get(peerId)?.queuedFrames ?? 0;
  }

  async close(): Promise<void> {
    if (this.state === "closed") return;
    const wasStarted = this.state === "started";
    this.state = "closed";
    this.handlers.close();
    for (const peer of this.peers.values()) peer.close();
    this.peers.clear();
    for (const { socket } of this.inbound.values()) socket.terminate();
    this.inbound.clear();
    for (const client of this.wss.clients) client.terminate();
    this.wss.close();
    this.guard.close();
    if (wasStarted) {
      const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
      this.server.closeAllConnections();
      await closed;
    }
  }

  private dropMessages(to: NodeId, messages: Message[], reason: string): void {
    this.metrics.messagesDropped.inc({ reason }, messages.length);
    for (const message of messages) {
      const snapshot = snapshotOf(message);
      if (snapshot) this.handlers.emitSnapshotStatus(to, { index: snapshot.index, failed: true });
    }
  }

  private acceptUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    // Node's HTTP server removes its own error listener from a socket it hands to 'upgrade': a
    // peer that resets the connection (e.g. right after our 401) would otherwise raise an
    // uncaught ECONNRESET and take the whole process down.
    socket.on("error", (error: Error & { code?: string }) => {
      this.logger.debug("peer socket error during handshake", { code: error.code });
    });
    const verdict = this.authenticate(request);
    if (!verdict.ok) {
      this.metrics.authRejected.inc({ reason: verdict.reason });
      this.logger.warn("peer handshake rejected", {
        reason: verdict.reason,
        claimedNodeId: headerOf(request, HEADER_NODE_ID),
        remoteAddress: request.socket.remoteAddress,
      });
      const status = verdict.reason === "path" ? "404 Not Found" : "401 Unauthorized";
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      return;
    }
    this.wss.handleUpgrade(request, socket, head, (webSocket) => {
      // Authenticated: no longer pending (peer connections are bounded by the membership).
      this.guard.release(socket as Socket);
      this.attachInbound(verdict.peerId, webSocket);
    });
  }

  /** Connections accepted and not yet authenticated (tests, status pages). */
  get pendingConnections(): number {
    return this.guard.connections;
  }

  private authenticate(
    request: IncomingMessage,
  ): { ok: true; peerId: NodeId } | { ok: false; reason: string } {
    if (this.state !== "started") return { ok: false, reason: "closed" };
    // The request target exactly, not parsed: `//a:99999/…` is no URL (new URL threw here,
    // inside the upgrade listener, and ended the process).
    const requestTarget = request.url ?? "/";
    const query = requestTarget.indexOf("?");
    const path = query < 0 ? requestTarget : requestTarget.slice(0, query);
    if (path !== PEER_PATH) return { ok: false, reason: "path" };
    const token = headerOf(request, HEADER_CLUSTER_TOKEN);
    const nodeId = headerOf(request, HEADER_NODE_ID);
    const target = headerOf(request, HEADER_TARGET_NODE_ID);
    if (token === undefined || nodeId === undefined || target === undefined)
      return { ok: false, reason: "headers" };
    // Digests have equal length, so the comparison takes the same time whatever the token.
    if (!timingSafeEqual(digest(token), this.tokenDigest)) return { ok: false, reason: "token" };
    if (!this.peers.has(nodeId)) return { ok: false, reason: "unknown_node" };
    if (target !== this.nodeId) return { ok: false, reason: "wrong_target" };
    return { ok: true, peerId: nodeId };
  }

  private attachInbound(peerId: NodeId, socket: WebSocket): void {
    // A peer that reconnects may leave a half-open old connection behind: the newest wins.
    this.inbound.get(peerId)?.socket.close(1000, "replaced by a newer connection");
    const connection: InboundConnection = { socket, rejected: false };
    this.inbound.set(peerId, connection);
    this.metrics.connectionsOpened.inc({ direction: "inbound" });
    this.peers.get(peerId)?.dialNowIfWaiting();
    const reject = (code: number, reason: string, fields: Record<string, unknown>) => {
      if (connection.rejected) return;
      connection.rejected = true;
      this.logger.warn("bad frame from peer; connection closed", { peerId, ...fields });
      socket.close(code, reason);
    };
    socket.on("message", (data, isBinary) => {
      if (connection.rejected) return;
      if (!isBinary || !(data instanceof Uint8Array)) {
        this.metrics.badFrames.inc({ reason: "text" });
        reject(1003, "binary frames only", { reason: "text" });
        return;
      }
      try {
        this.handlers.receive(data, peerId);
      } catch (error) {
        reject(1007, "bad frame", { error });
      }
    });
    socket.on("error", (error: Error & { code?: string }) => {
      // ws reports protocol violations here and closes the connection itself (1009 for size).
      if (connection.rejected) return;
      connection.rejected = true;
      const reason = error.code === "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH" ? "too_large" : "protocol";
      this.metrics.badFrames.inc({ reason });
      this.logger.warn("peer connection error; connection closed", { peerId, reason, error });
    });
    socket.on("close", () => {
      if (this.inbound.get(peerId) === connection) this.inbound.delete(peerId);
    });
  }
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

function headerOf(request: IncomingMessage, name: string): string | undefined {
  const value = request.headers[name];
  return typeof value === "string" && value.length > 0 && value.length <= 1024 ? value : undefined;
}
