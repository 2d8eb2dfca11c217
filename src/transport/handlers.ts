// The receiving half shared by the transport adapters: handler registries and the path from a
// received frame's bytes to validated messages handed up.

import { isCfnError } from "../errors.js";
import type { Logger } from "../obs/logger.js";
import type { NodeId } from "../raft/types.js";
import { decodeFrame, parseRaftPayload } from "./frame.js";
import {
  type FrameHandler,
  type MessagesHandler,
  RAFT_CHANNEL,
  type SnapshotStatus,
  validateChannel,
} from "./transport.js";
import type { TransportMetrics } from "./transport-metrics.js";

export class TransportHandlers {
  private readonly messageHandlers: MessagesHandler[] = [];
  private readonly frameHandlers = new Map<string, FrameHandler[]>();
  private readonly unreachableHandlers: ((peerId: NodeId) => void)[] = [];
  private readonly snapshotHandlers: ((peerId: NodeId, status: SnapshotStatus) => void)[] = [];
  private readonly refusedByHandlers: ((peerId: NodeId) => void)[] = [];

  constructor(
    private readonly nodeId: NodeId,
    private readonly logger: Logger,
    private readonly metrics: TransportMetrics,
  ) {}

  onMessages(handler: MessagesHandler): void {
    this.messageHandlers.push(handler);
  }

  onFrame(channel: string, handler: FrameHandler): void {
    validateChannel(channel, true);
    const handlers = this.frameHandlers.get(channel) ?? [];
    handlers.push(handler);
    this.frameHandlers.set(channel, handlers);
  }

  onPeerUnreachable(handler: (peerId: NodeId) => void): void {
    this.unreachableHandlers.push(handler);
  }

  onSnapshotStatus(handler: (peerId: NodeId, status: SnapshotStatus) => void): void {
    this.snapshotHandlers.push(handler);
  }

  /**
   * A peer refused this node: it closed our connection as removed from its peers
   * (PEER_REMOVED_REASON), or answered our handshake with 401 (a wrong token or an unknown id).
   */
  onRefusedByPeer(handler: (peerId: NodeId) => void): void {
    this.refusedByHandlers.push(handler);
  }

  /**
   * Decodes, validates and dispatches one frame from an authenticated peer. Throws
   * CFN_ERR_BAD_FRAME (after counting it) when the frame is malformed: the caller closes the
   * connection. A throwing handler is a bug in the handler; it is logged, not blamed on the peer.
   */
  receive(bytes: Uint8Array, from: NodeId): void {
    let channel: string;
    let payload: unknown;
    try {
      ({ channel, payload } = decodeFrame(bytes));
      if (channel === RAFT_CHANNEL) payload = parseRaftPayload(payload, from, this.nodeId);
    } catch (error) {
      this.countBadFrame(error);
      throw error;
    }
    this.metrics.framesReceived.inc({ channel });
    this.metrics.bytesReceived.inc(bytes.byteLength);
    if (channel === RAFT_CHANNEL) {
      const messages = payload as Parameters<MessagesHandler>[0];
      this.metrics.messagesReceived.inc(messages.length);
      for (const handler of this.messageHandlers) this.callSafely(() => handler(messages, from), channel);
      return;
    }
    const handlers = this.frameHandlers.get(channel);
    if (!handlers) {
      this.logger.debug("frame for a channel without handler dropped", { channel, from });
      return;
    }
    for (const handler of handlers) this.callSafely(() => handler(payload, from), channel);
  }

  countBadFrame(error: unknown): void {
    const reason = isCfnError(error) ? String(error.details.reason ?? error.code) : "decode";
    this.metrics.badFrames.inc({ reason });
  }

  emitUnreachable(peerId: NodeId): void {
    for (const handler of this.unreachableHandlers) this.callSafely(() => handler(peerId), "unreachable");
  }

  emitRefusedBy(peerId: NodeId): void {
    for (const handler of this.refusedByHandlers) this.callSafely(() => handler(peerId), "refused");
  }

  emitSnapshotStatus(peerId: NodeId, status: SnapshotStatus): void {
    for (const handler of this.snapshotHandlers) this.callSafely(() => handler(peerId, status), "snapshot");
  }

  private callSafely(call: () => void, what: string): void {
    try {
      call();
    } catch (error) {
      this.logger.error("transport handler threw", { what, error });
    }
  }
}
