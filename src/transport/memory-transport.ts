// The in-memory twin of the Transport port: several MemoryTransports on one MemoryNetwork hub.
// Frames go through the same codec and validation as on the wire (so a payload that would not
// survive msgpack fails here too) and are delivered one microtask later, in order per link.
// Links can be cut one way or both (partitions, isolation) for tests.
//
// Differences from WsTransport, on purpose: no queue while a link is down (frames are dropped
// and the sender hears "unreachable" at once, the usual model in a Raft simulation), and no
// reconnect timing.

import { assert, CfnError } from "../errors.js";
import type { Logger } from "../obs/logger.js";
import type { Metrics } from "../obs/metrics.js";
import type { Message, NodeId } from "../raft/types.js";
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

/** The hub: knows every transport on it and which directed links are cut. */
export class MemoryNetwork {
  private readonly members = new Map<NodeId, MemoryTransport>();
  private readonly cutLinks = new Set<string>();

  /** Creates a transport on this network (not started). */
  createTransport(options: Omit<MemoryTransportOptions, "network">): MemoryTransport {
    return new MemoryTransport({ ...options, network: this });
  }

  /** Cuts (up=false) or restores the directed link from → to. */
  setLinkUp(from: NodeId, to: NodeId, up: boolean): void {
    const key = linkKey(from, to);
    if (up) this.cutLinks.delete(key);
    else this.cutLinks.add(key);
  }

  /** Cuts every link between the two groups, both ways. */
  partition(groupA: NodeId[], groupB: NodeId[]): void {
    for (const a of groupA) {
      for (const b of groupB) {
        this.setLinkUp(a, b, false);
        this.setLinkUp(b, a, false);
      }
    }
  }

  /** Cuts every link to and from a node. */
  isolate(nodeId: NodeId): void {
    for (const other of this.members.keys()) {
      if (other === nodeId) continue;
      this.setLinkUp(nodeId, other, false);
      this.setLinkUp(other, nodeId, false);
    }
  }

  /** Restores every link. */
  heal(): void {
    this.cutLinks.clear();
  }

  isLinkUp(from: NodeId, to: NodeId): boolean {
    return !this.cutLinks.has(linkKey(from, to));
  }

  /** @internal */
  join(transport: MemoryTransport): void {
    const existing = this.members.get(transport.nodeId);
    if (existing && existing !== transport && existing.isOpen) {
      throw new CfnError("CFN_ERR_CONFIG_INVALID", `node ${transport.nodeId} is already on this network`);
    }
    this.members.set(transport.nodeId, transport);
  }

  /** @internal */
  leave(transport: MemoryTransport): void {
    if (this.members.get(transport.nodeId) === transport) this.members.delete(transport.nodeId);
  }

  /** @internal Returns false when the frame cannot go now (link cut, peer not running). */
  route(from: NodeId, to: NodeId, bytes: Uint8Array): boolean {
    if (!this.isLinkUp(from, to) || !this.members.get(to)?.isOpen) return false;
    queueMicrotask(() => {
      const target = this.members.get(to);
      // Re-checked at delivery: a partition made after sending still loses what is in flight.
      if (target?.isOpen && this.isLinkUp(from, to)) target.deliver(from, bytes);
    });
    return true;
  }
}

function linkKey(from: NodeId, to: NodeId): string {
  return `${from}\u0000${to}`;
}

export interface MemoryTransportOptions {
  network: MemoryNetwork;
  nodeId: NodeId;
  logger: Logger;
  metrics: Metrics;
  limits?: Partial<TransportLimits>;
}

export class MemoryTransport implements Transport {
  readonly nodeId: NodeId;
  readonly limits: TransportLimits;
  private readonly network: MemoryNetwork;
  private readonly logger: Logger;
  private readonly metrics: TransportMetrics;
  private readonly handlers: TransportHandlers;
  private readonly peers = new Set<NodeId>();
  private state: "new" | "started" | "closed" = "new";

  constructor(options: MemoryTransportOptions) {
    if (typeof options.nodeId !== "string" || options.nodeId.length === 0) {
      throw new CfnError("CFN_ERR_CONFIG_INVALID", "MemoryTransport: nodeId must be a non-empty string");
    }
    this.nodeId = options.nodeId;
    this.network = options.network;
    this.limits = resolveTransportLimits(options.limits);
    this.logger = options.logger.child("transport");
    this.metrics = new TransportMetrics(options.metrics);
    this.handlers = new TransportHandlers(this.nodeId, this.logger, this.metrics);
  }

  get isOpen(): boolean {
    return this.state === "started";
  }

  async start(): Promise<void> {
    if (this.state === "closed") throw new CfnError("CFN_ERR_CLOSED", "transport is closed");
    this.network.join(this);
    this.state = "started";
  }

  addPeer(peerId: NodeId, _url: string): void {
    assert(peerId !== this.nodeId, "MemoryTransport.addPeer: a node is not its own peer");
    this.peers.add(peerId);
  }

  removePeer(peerId: NodeId): void {
    this.peers.delete(peerId);
  }

  send(messages: Message[]): void {
    if (this.state !== "started") {
      this.metrics.messagesDropped.inc({ reason: "closed" }, messages.length);
      return;
    }
    for (const [to, group] of groupByDestination(messages)) {
      for (const message of group)
        assert(message.from === this.nodeId, `send: message from ${message.from} on ${this.nodeId}`);
      if (!this.peers.has(to)) {
        this.dropMessages(to, group, "unknown_peer");
        continue;
      }
      const { frames, tooLarge } = encodeRaftFrames(group, this.limits.frameBytesMax);
      if (tooLarge.length > 0) this.dropMessages(to, tooLarge, "too_large");
      for (const frame of frames) {
        if (!this.network.route(this.nodeId, to, frame.bytes)) {
          this.metrics.framesDropped.inc({ reason: "link_down" });
          this.dropMessages(to, frame.messages, "link_down");
          this.handlers.emitUnreachable(to);
          continue;
        }
        this.countSent(RAFT_CHANNEL, frame.bytes, frame.messages.length);
        for (const message of frame.messages) {
          const snapshot = snapshotOf(message);
          if (snapshot?.last) this.handlers.emitSnapshotStatus(to, { index: snapshot.index, failed: false });
        }
      }
    }
  }

  onMessages(handler: MessagesHandler): void {
    this.handlers.onMessages(handler);
  }

  sendFrame(peerId: NodeId, channel: string, payload: unknown): boolean {
    validateChannel(channel, true);
    if (this.state === "closed") throw new CfnError("CFN_ERR_CLOSED", "transport is closed");
    if (!this.peers.has(peerId))
      throw new CfnError("CFN_ERR_PEER_UNREACHABLE", `no peer ${peerId}`, { peerId });
    const bytes = encodeFrame(channel, payload);
    if (bytes.byteLength > this.limits.frameBytesMax) {
      throw new CfnError(
        "CFN_ERR_FRAME_TOO_LARGE",
        `frame of ${bytes.byteLength} bytes passes frameBytesMax (${this.limits.frameBytesMax})`,
        { bytes: bytes.byteLength, frameBytesMax: this.limits.frameBytesMax, channel },
      );
    }
    if (this.state !== "started" || !this.network.route(this.nodeId, peerId, bytes)) {
      // Accepted and lost, as a frame queued for a dead connection would be.
      this.metrics.framesDropped.inc({ reason: "link_down" });
      this.handlers.emitUnreachable(peerId);
      return true;
    }
    this.countSent(channel, bytes, 0);
    return true;
  }

  onFrame(channel: string, handler: FrameHandler, options: FrameHandlerOptions = {}): void {
    this.handlers.onFrame(channel, handler, options);
  }

  onPeerUnreachable(handler: (peerId: NodeId) => void): void {
    this.handlers.onPeerUnreachable(handler);
  }

  onSnapshotStatus(handler: (peerId: NodeId, status: SnapshotStatus) => void): void {
    this.handlers.onSnapshotStatus(handler);
  }

  async close(): Promise<void> {
    if (this.state === "closed") return;
    this.state = "closed";
    this.handlers.close();
    this.network.leave(this);
  }

  /** @internal Called by the network: a frame from `from` arrives. */
  deliver(from: NodeId, bytes: Uint8Array): void {
    if (!this.peers.has(from)) {
      // WsTransport refuses the handshake of a node it does not know; the twin drops its frames.
      this.metrics.authRejected.inc({ reason: "unknown_node" });
      return;
    }
    try {
      this.handlers.receive(bytes, from);
    } catch (error) {
      this.logger.warn("bad frame from peer dropped", { from, error });
    }
  }

  private countSent(channel: string, bytes: Uint8Array, messageCount: number): void {
    this.metrics.framesSent.inc({ channel });
    this.metrics.bytesSent.inc(bytes.byteLength);
    if (messageCount > 0) this.metrics.messagesSent.inc(messageCount);
  }

  private dropMessages(to: NodeId, messages: Message[], reason: string): void {
    this.metrics.messagesDropped.inc({ reason }, messages.length);
    for (const message of messages) {
      const snapshot = snapshotOf(message);
      if (snapshot) this.handlers.emitSnapshotStatus(to, { index: snapshot.index, failed: true });
    }
  }
}
