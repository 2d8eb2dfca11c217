// One peer as seen by WsTransport's sending side: a persistent outbound WebSocket that is
// re-dialled with exponential backoff, and a bounded queue of frames drained into it.
//
// Connections are one-way: frames to peer P go on our outbound connection to P; frames from P
// arrive on P's outbound connection to us (accepted by WsTransport's server). A lost connection
// therefore loses only the frames handed to its socket, never the queue.

import { type ClientOptions, WebSocket } from "ws";
import type { Logger } from "../obs/logger.js";
import type { NodeId } from "../raft/types.js";
import { snapshotOf } from "./frame.js";
import type { TransportHandlers } from "./handlers.js";
import { type OutboundFrame, PeerQueue } from "./peer-queue.js";
import type { TransportLimits } from "./transport.js";
import type { TransportMetrics } from "./transport-metrics.js";

/** The HTTP path peers dial; the version is part of it so a future wire format can coexist. */
export const PEER_PATH = "/cfn/v1/peer";
/** Close reason (code 1008) of a connection from a peer this node removed from its peers. */
export const PEER_REMOVED_REASON = "peer removed";
export const HEADER_CLUSTER_TOKEN = "x-cfn-cluster-token";
export const HEADER_NODE_ID = "x-cfn-node-id";
export const HEADER_TARGET_NODE_ID = "x-cfn-target-node-id";

/** Drops are logged at most once per this many ms per peer (they are always counted). */
const DROP_LOG_INTERVAL_MS = 5000;

/** What a wss:// dial may need; passed through ws to tls.connect. */
export interface TlsClientOptions {
  ca?: string | Buffer | (string | Buffer)[];
  cert?: string | Buffer;
  key?: string | Buffer;
  rejectUnauthorized?: boolean;
  servername?: string;
}

export interface WsPeerOptions {
  selfId: NodeId;
  peerId: NodeId;
  url: string;
  clusterToken: string;
  limits: TransportLimits;
  logger: Logger;
  metrics: TransportMetrics;
  handlers: TransportHandlers;
  /** TLS options for wss:// dials (ca, cert, key, rejectUnauthorized). */
  tlsClient?: TlsClientOptions;
  random: () => number;
}

/**
 * Masking (RFC 6455 §5.3) guards caching proxies against script in a browser forging bytes; an
 * authenticated peer node is no browser. An all-zero key is a valid mask and lets ws send the
 * payload as is, without a masked copy of every frame (a measurable share of a leader's CPU).
 */
export function zeroMask(mask: Uint8Array): void {
  mask.fill(0);
}

export class WsPeer {
  private readonly options: WsPeerOptions;
  private readonly queue: PeerQueue;
  private readonly logger: Logger;
  private url: string;
  private socket: WebSocket | undefined;
  private connected = false;
  private failedDials = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private keepaliveTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private started = false;
  private droppedSinceLog = 0;
  private lastDropLogMs = 0;

  constructor(options: WsPeerOptions) {
    this.options = options;
    this.url = options.url;
    this.queue = new PeerQueue(options.limits.peerQueueFramesMax);
    this.logger = options.logger.child(options.peerId);
  }

  get queuedFrames(): number {
    return this.queue.length;
  }

  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    this.dial();
  }

  /** Re-addresses the peer; an open connection to the old address is replaced. */
  setUrl(url: string): void {
    if (url === this.url) return;
    this.url = url;
    if (!this.started) return;
    this.socket?.terminate();
  }

  /** Queues a frame and drains what the socket takes. Returns false when the frame was refused. */
  enqueue(frame: OutboundFrame): boolean {
    const result = this.queue.enqueue(frame);
    if (!result.accepted) {
      this.dropped(frame, "queue_full");
      return false;
    }
    if (result.evicted) this.dropped(result.evicted, "queue_full");
    this.flush();
    return true;
  }

  /**
   * The peer is up (it just dialled us): a dial waiting out its backoff goes now, from the first
   * step of the backoff again. Without it, frames to a restarted peer wait up to
   * reconnectDelayMsMax (its replies, acks, Raft catch-up) though the peer is reachable.
   */
  dialNowIfWaiting(): void {
    if (this.closed || !this.started || this.socket || this.reconnectTimer === undefined) return;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.failedDials = 0;
    this.dial();
  }

  /** Stops dialling, closes the connection and fails what is queued. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    clearInterval(this.keepaliveTimer);
    for (const frame of this.queue.drain()) this.dropped(frame, "closed");
    if (this.connected) this.options.metrics.peersConnected.dec();
    this.connected = false;
    this.socket?.terminate();
    this.socket = undefined;
  }

  private dial(): void {
    const { selfId, peerId, clusterToken, limits, tlsClient } = this.options;
    let target: URL;
    try {
      target = new URL(PEER_PATH, this.url);
    } catch {
      this.logger.error("peer url is not a valid URL; not dialling", { url: this.url });
      return;
    }
    const clientOptions: ClientOptions = {
      headers: {
        [HEADER_CLUSTER_TOKEN]: clusterToken,
        [HEADER_NODE_ID]: selfId,
        [HEADER_TARGET_NODE_ID]: peerId,
      },
      maxPayload: limits.frameBytesMax,
      handshakeTimeout: limits.handshakeTimeoutMs,
      perMessageDeflate: false,
      generateMask: zeroMask,
      ...(tlsClient as ClientOptions | undefined),
    };
    const socket = new WebSocket(target, clientOptions);
    this.socket = socket;
    socket.on("open", () => {
      if (socket !== this.socket) return;
      this.connected = true;
      this.failedDials = 0;
      this.options.metrics.connectionsOpened.inc({ direction: "outbound" });
      this.options.metrics.peersConnected.inc();
      this.logger.info("connected to peer", { url: this.url });
      this.startKeepalive(socket);
      this.flush();
    });
    socket.on("error", (error) => {
      // A 'close' always follows; it decides what to do. Log the first failure of a streak.
      if (socket === this.socket && this.failedDials === 0) {
        this.logger.warn("peer connection failed", { url: this.url, error });
      }
      // ws words a refused handshake "Unexpected server response: 401".
      if (socket === this.socket && / 401$/.test(error.message)) this.options.handlers.emitRefusedBy(peerId);
    });
    socket.on("close", (code, reason) => {
      if (socket !== this.socket) return;
      this.socket = undefined;
      clearInterval(this.keepaliveTimer);
      if (this.connected) {
        this.connected = false;
        this.options.metrics.peersConnected.dec();
        if (!this.closed) this.logger.warn("peer connection lost", { code, reason: reason.toString() });
      }
      if (this.closed) return;
      if (code === 1008 && reason.toString() === PEER_REMOVED_REASON)
        this.options.handlers.emitRefusedBy(peerId);
      this.options.metrics.dialFailures.inc();
      this.options.handlers.emitUnreachable(peerId);
      this.scheduleReconnect();
    });
    // Peers never write on a connection they accepted; anything arriving here is ignored.
    socket.on("message", () => undefined);
  }

  /** Pings every keepaliveIntervalMs; a ping unanswered for a whole period drops the connection. */
  private startKeepalive(socket: WebSocket): void {
    let answered = true;
    socket.on("pong", () => {
      answered = true;
    });
    clearInterval(this.keepaliveTimer);
    this.keepaliveTimer = setInterval(() => {
      if (socket !== this.socket) return;
      if (!answered) {
        this.logger.warn("peer did not answer a ping; dropping the connection", {
          keepaliveIntervalMs: this.options.limits.keepaliveIntervalMs,
        });
        socket.terminate();
        return;
      }
      answered = false;
      socket.ping();
    }, this.options.limits.keepaliveIntervalMs);
    this.keepaliveTimer.unref?.();
  }

  private scheduleReconnect(): void {
    const { reconnectDelayMsMin, reconnectDelayMsMax } = this.options.limits;
    const exponent = Math.min(this.failedDials, 30);
    const ceiling = Math.min(reconnectDelayMsMax, reconnectDelayMsMin * 2 ** exponent);
    // Jitter in [ceiling/2, ceiling] so restarted peers do not dial in lockstep.
    const delayMs = Math.max(reconnectDelayMsMin, Math.round(ceiling * (0.5 + this.options.random() / 2)));
    this.failedDials++;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (!this.closed) this.dial();
    }, delayMs);
    this.reconnectTimer.unref?.();
  }

  private flush(): void {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    while (socket.bufferedAmount < this.options.limits.socketBufferedBytesMax) {
      const frame = this.queue.shift();
      if (!frame) return;
      socket.send(frame.bytes, { binary: true }, (error) => this.written(frame, error));
    }
  }

  private written(frame: OutboundFrame, error: Error | undefined): void {
    const { metrics, handlers, peerId } = this.options;
    if (error) {
      this.dropped(frame, "connection_lost");
      return;
    }
    metrics.framesSent.inc({ channel: frame.channel });
    metrics.bytesSent.inc(frame.bytes.byteLength);
    if (frame.messages.length > 0) metrics.messagesSent.inc(frame.messages.length);
    for (const message of frame.messages) {
      const snapshot = snapshotOf(message);
      if (snapshot?.last) handlers.emitSnapshotStatus(peerId, { index: snapshot.index, failed: false });
    }
    this.flush();
  }

  private dropped(frame: OutboundFrame, reason: string): void {
    const { metrics, handlers, peerId } = this.options;
    metrics.framesDropped.inc({ reason });
    if (frame.messages.length > 0) metrics.messagesDropped.inc({ reason }, frame.messages.length);
    for (const message of frame.messages) {
      const snapshot = snapshotOf(message);
      if (snapshot) handlers.emitSnapshotStatus(peerId, { index: snapshot.index, failed: true });
    }
    this.droppedSinceLog++;
    const now = Date.now();
    if (now - this.lastDropLogMs >= DROP_LOG_INTERVAL_MS) {
      this.logger.warn("frames to peer dropped", {
        reason,
        dropped: this.droppedSinceLog,
        queued: this.queue.length,
        peerQueueFramesMax: this.options.limits.peerQueueFramesMax,
      });
      this.lastDropLogMs = now;
      this.droppedSinceLog = 0;
    }
  }
}
