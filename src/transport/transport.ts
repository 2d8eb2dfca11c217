// The Transport port (STYLE.md item 2): carries Raft messages between nodes and, on the same
// connections, frames of other channels (issue 4 forwards bus messages this way).
//
// Adapters: WsTransport (ws + msgpackr, src/transport/ws-transport.ts) and the in-memory twin
// MemoryTransport on a MemoryNetwork hub (src/transport/memory-transport.ts). Both pass
// test/transport/compliance.ts.

import { CfnError } from "../errors.js";
import type { Message, NodeId } from "../raft/types.js";

/** The channel Raft messages travel on; `sendFrame` may not use it. */
export const RAFT_CHANNEL = "raft";

/** Outcome of sending a Snap message, so the driver can call RawNode.reportSnapshot. */
export interface SnapshotStatus {
  /** The snapshot's index (metadata.index). */
  index: number;
  /**
   * false: the message (for a chunked snapshot: its last chunk) was written to the peer's
   * connection. true: a chunk was dropped or its connection failed; the leader should retry.
   */
  failed: boolean;
}

export type MessagesHandler = (messages: Message[], from: NodeId) => void;
export type FrameHandler = (payload: unknown, from: NodeId) => void;

export interface FrameHandlerOptions {
  /** Large frames whose handling may wait for a later turn of the event loop (deliveries). */
  bulk?: boolean;
}

export interface Transport {
  /** This node's id; every Message sent must have `from === nodeId`. */
  readonly nodeId: NodeId;
  /** Starts listening and dialling the peers added so far. */
  start(): Promise<void>;
  /** Adds (or re-addresses) a peer; the twin ignores `url`. Only known peers may connect. */
  addPeer(peerId: NodeId, url: string): void;
  /** Forgets a peer: its queued frames are dropped and its connections closed. */
  removePeer(peerId: NodeId): void;
  /**
   * Queues Raft messages, grouped per destination: one call → one frame per peer (split only
   * when a frame would pass frameBytesMax). Never throws for a peer's trouble: a message that
   * cannot go is dropped and counted, as Raft retries.
   */
  send(messages: Message[]): void;
  /** Receives validated Raft messages, one call per received frame. */
  onMessages(handler: MessagesHandler): void;
  /**
   * Queues one frame of another channel. Returns false when the peer's queue is full (the
   * caller retries later). Unknown peer → CFN_ERR_PEER_UNREACHABLE; an encoded frame larger
   * than frameBytesMax → CFN_ERR_FRAME_TOO_LARGE.
   */
  sendFrame(peerId: NodeId, channel: string, payload: unknown): boolean;
  /**
   * Receives frames of one channel; the payload is decoded msgpack, unvalidated. A `bulk` channel
   * (cross-node deliveries) is handed over in time slices (src/transport/handlers.ts,
   * FRAME_SLICE_MS): under a backlog its frames wait for a later turn of the event loop. Other
   * channels' frames (Raft, the node's pings and forwarded proposals) never wait.
   */
  onFrame(channel: string, handler: FrameHandler, options?: FrameHandlerOptions): void;
  /** Called when a peer cannot be reached (dial failed, connection lost, link down). */
  onPeerUnreachable(handler: (peerId: NodeId) => void): void;
  /** Called with the outcome of each Snap message (see SnapshotStatus). */
  onSnapshotStatus(handler: (peerId: NodeId, status: SnapshotStatus) => void): void;
  /** Stops listening and dialling, drops queued frames. Idempotent. */
  close(): Promise<void>;
}

/** Limits shared by the adapters (STYLE.md item 5), unit last. */
export interface TransportLimits {
  /** Largest encoded frame sent or accepted, in bytes. Default 16 MiB. */
  frameBytesMax: number;
  /** Frames waiting per peer before Raft frames are dropped (oldest first). Default 1024. */
  peerQueueFramesMax: number;
  /** First reconnect delay after a failed dial or a lost connection, ms. Default 50. */
  reconnectDelayMsMin: number;
  /** Reconnect delay cap (the backoff doubles up to it), ms. Default 5000. */
  reconnectDelayMsMax: number;
  /** A dial whose handshake takes longer fails, ms. Default 5000. */
  handshakeTimeoutMs: number;
  /**
   * Ping period on outbound connections, ms; a connection without a pong for one period is
   * dropped and re-dialled (catches half-open TCP connections). Default 2000.
   */
  keepaliveIntervalMs: number;
  /** Bytes handed to a socket and not yet written before the queue stops draining. Default 8 MiB. */
  socketBufferedBytesMax: number;
}

export const DEFAULT_TRANSPORT_LIMITS: TransportLimits = {
  frameBytesMax: 16 * 1024 * 1024,
  peerQueueFramesMax: 1024,
  reconnectDelayMsMin: 50,
  reconnectDelayMsMax: 5000,
  handshakeTimeoutMs: 5000,
  keepaliveIntervalMs: 2000,
  socketBufferedBytesMax: 8 * 1024 * 1024,
};

/** Hard ceilings: a limit above these is a configuration mistake, not a tuning choice. */
const LIMIT_CEILINGS: TransportLimits = {
  frameBytesMax: 256 * 1024 * 1024,
  peerQueueFramesMax: 1_000_000,
  reconnectDelayMsMin: 60_000,
  reconnectDelayMsMax: 600_000,
  handshakeTimeoutMs: 600_000,
  keepaliveIntervalMs: 600_000,
  socketBufferedBytesMax: 1024 * 1024 * 1024,
};

/** Fills defaults and validates every limit and the relations between them. */
export function resolveTransportLimits(partial: Partial<TransportLimits> = {}): TransportLimits {
  const limits: TransportLimits = { ...DEFAULT_TRANSPORT_LIMITS, ...partial };
  for (const key of Object.keys(DEFAULT_TRANSPORT_LIMITS) as (keyof TransportLimits)[]) {
    const value = limits[key];
    if (!Number.isSafeInteger(value) || value < 1 || value > LIMIT_CEILINGS[key]) {
      throw new CfnError(
        "CFN_ERR_CONFIG_INVALID",
        `transport limit ${key} must be an integer in [1, ${LIMIT_CEILINGS[key]}], got ${String(value)}`,
        { key, value },
      );
    }
  }
  if (limits.reconnectDelayMsMin > limits.reconnectDelayMsMax) {
    throw new CfnError(
      "CFN_ERR_CONFIG_INVALID",
      `reconnectDelayMsMin (${limits.reconnectDelayMsMin}) must not exceed reconnectDelayMsMax (${limits.reconnectDelayMsMax})`,
    );
  }
  if (limits.frameBytesMax < 1024) {
    throw new CfnError(
      "CFN_ERR_CONFIG_INVALID",
      "frameBytesMax must be at least 1024 bytes to carry one Raft message",
    );
  }
  return limits;
}

const CHANNEL_PATTERN = /^[a-z][a-z0-9._-]{0,63}$/;

/** Channel names are short lowercase identifiers; "raft" belongs to `send`. */
export function validateChannel(channel: string, forSendFrame: boolean): void {
  if (typeof channel !== "string" || !CHANNEL_PATTERN.test(channel)) {
    throw new CfnError(
      "CFN_ERR_INVALID_MESSAGE",
      `channel name ${JSON.stringify(channel)} must match ${CHANNEL_PATTERN}`,
    );
  }
  if (forSendFrame && channel === RAFT_CHANNEL) {
    throw new CfnError("CFN_ERR_INVALID_MESSAGE", `channel "${RAFT_CHANNEL}" is reserved for send()`);
  }
}
