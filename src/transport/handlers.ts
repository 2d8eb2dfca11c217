// The receiving half shared by the transport adapters: handler registries and the path from a
// received frame's bytes to validated messages handed up.

import { isCfnError } from "../errors.js";
import type { Logger } from "../obs/logger.js";
import type { NodeId } from "../raft/types.js";
import { decodeFrame, parseRaftPayload } from "./frame.js";
import {
  type FrameHandler,
  type FrameHandlerOptions,
  type MessagesHandler,
  RAFT_CHANNEL,
  type SnapshotStatus,
  validateChannel,
} from "./transport.js";
import type { TransportMetrics } from "./transport-metrics.js";

/**
 * Longest run of bulk frame handlers (cross-node deliveries) in one turn of the event loop,
 * ms. A peer that comes back after a partition sends its whole backlog at once — thousands of
 * messages, each written into an inbox synchronously — and handling it in one go held the event
 * loop for 0.5 – 2.5 s: Raft's ticks and heartbeats waited, and healing a partition cost a leader
 * election. Frames past this budget wait for the next turn, in arrival order; the frames of other
 * channels never wait (Raft's, and the node's pings: small, and what keeps leader and liveness).
 */
export const FRAME_SLICE_MS = 8;
/**
 * Most frames that wait for a later turn. Past it a frame is handled at once (the event loop is
 * held as before rather than a frame dropped): the senders' windows bound it well below this.
 */
export const FRAMES_DEFERRED_MAX = 65_536;

interface DeferredFrame {
  channel: string;
  payload: unknown;
  from: NodeId;
}

export class TransportHandlers {
  /** Frames waiting for a later turn of the event loop (FRAME_SLICE_MS), oldest first. */
  private readonly deferred: DeferredFrame[] = [];
  /** Channels registered with `bulk`: their frames are handed over in slices. */
  private readonly bulkChannels = new Set<string>();
  private deferredHead = 0;
  /** performance.now() when this turn's first frame handler ran; undefined between turns. */
  private sliceStartedAt: number | undefined;
  private drainScheduled = false;
  private closed = false;

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

  onFrame(channel: string, handler: FrameHandler, options: FrameHandlerOptions = {}): void {
    validateChannel(channel, true);
    if (options.bulk) this.bulkChannels.add(channel);
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
    if (!this.frameHandlers.has(channel)) {
      this.logger.debug("frame for a channel without handler dropped", { channel, from });
      return;
    }
    // Only bulk channels wait (deliveries) and count against the slice; the node's pings must
    // not queue behind a backlog.
    if (!this.bulkChannels.has(channel)) {
      this.callHandlers(channel, payload, from);
      return;
    }
    const waiting = this.deferred.length - this.deferredHead;
    if (waiting > 0 || this.sliceSpent()) {
      if (waiting < FRAMES_DEFERRED_MAX) {
        this.deferred.push({ channel, payload, from });
        this.scheduleDrain();
        return;
      }
      this.metrics.framesDeferredOverflow.inc();
    }
    this.dispatch(channel, payload, from);
  }

  /**
   * Stops handing deferred frames to handlers (the transport is closing): what still waits is
   * dropped, as frames in a closing socket's buffer are; senders resend what was not acknowledged.
   */
  close(): void {
    this.closed = true;
    this.deferred.length = 0;
    this.deferredHead = 0;
  }

  private dispatch(channel: string, payload: unknown, from: NodeId): void {
    if (this.sliceStartedAt === undefined) {
      this.sliceStartedAt = performance.now();
      this.scheduleDrain(); // ends the slice at the next turn, and hands on what waits then
    }
    this.callHandlers(channel, payload, from);
  }

  private callHandlers(channel: string, payload: unknown, from: NodeId): void {
    const handlers = this.frameHandlers.get(channel);
    if (!handlers) return;
    for (const handler of handlers) this.callSafely(() => handler(payload, from), channel);
  }

  /** True when this turn's frame handlers have run for FRAME_SLICE_MS already. */
  private sliceSpent(): boolean {
    return this.sliceStartedAt !== undefined && performance.now() - this.sliceStartedAt >= FRAME_SLICE_MS;
  }

  private scheduleDrain(): void {
    if (this.drainScheduled) return;
    this.drainScheduled = true;
    setImmediate(() => this.drain());
  }

  /** A new turn: a new slice for the frames that waited, oldest first. */
  private drain(): void {
    this.drainScheduled = false;
    this.sliceStartedAt = undefined;
    if (this.closed) return;
    while (this.deferredHead < this.deferred.length) {
      if (this.sliceSpent()) {
        this.scheduleDrain();
        break;
      }
      const frame = this.deferred[this.deferredHead];
      this.deferred[this.deferredHead++] = undefined as unknown as DeferredFrame;
      this.dispatch(frame.channel, frame.payload, frame.from);
    }
    if (this.deferredHead === this.deferred.length) {
      this.deferred.length = 0;
      this.deferredHead = 0;
    } else if (this.deferredHead > 1024 && this.deferredHead * 2 > this.deferred.length) {
      this.deferred.splice(0, this.deferredHead);
      this.deferredHead = 0;
    }
    this.metrics.framesDeferred.set(this.deferred.length - this.deferredHead);
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
