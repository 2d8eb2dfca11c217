// Metrics shared by the transport adapters (Prometheus names, `cfn_transport_` prefix).

import type { Counter, Gauge } from "prom-client";
import type { Metrics } from "../obs/metrics.js";

export class TransportMetrics {
  readonly framesSent: Counter<string>;
  readonly framesReceived: Counter<string>;
  readonly messagesSent: Counter<string>;
  readonly messagesReceived: Counter<string>;
  readonly bytesSent: Counter<string>;
  readonly bytesReceived: Counter<string>;
  readonly framesDropped: Counter<string>;
  readonly messagesDropped: Counter<string>;
  readonly badFrames: Counter<string>;
  readonly authRejected: Counter<string>;
  readonly dialFailures: Counter<string>;
  readonly connectionsOpened: Counter<string>;
  readonly peersConnected: Gauge<string>;
  readonly listenerRefused: Counter<string>;
  readonly listenerReaped: Counter<string>;
  readonly listenerPending: Gauge<string>;
  readonly framesDeferred: Gauge<string>;
  readonly framesDeferredOverflow: Counter<string>;

  constructor(metrics: Metrics) {
    this.framesSent = metrics.counter("cfn_transport_frames_sent_total", "Frames written to peers", [
      "channel",
    ]);
    this.framesReceived = metrics.counter("cfn_transport_frames_received_total", "Valid frames received", [
      "channel",
    ]);
    this.messagesSent = metrics.counter(
      "cfn_transport_raft_messages_sent_total",
      "Raft messages written to peers",
    );
    this.messagesReceived = metrics.counter(
      "cfn_transport_raft_messages_received_total",
      "Valid Raft messages received",
    );
    this.bytesSent = metrics.counter("cfn_transport_bytes_sent_total", "Frame bytes written to peers");
    this.bytesReceived = metrics.counter("cfn_transport_bytes_received_total", "Frame bytes received");
    this.framesDropped = metrics.counter(
      "cfn_transport_frames_dropped_total",
      "Outbound frames dropped after queueing (reason: queue_full, connection_lost, link_down, closed)",
      ["reason"],
    );
    this.messagesDropped = metrics.counter(
      "cfn_transport_raft_messages_dropped_total",
      "Outbound Raft messages dropped (reason: queue_full, connection_lost, too_large, unknown_peer, link_down, closed)",
      ["reason"],
    );
    this.badFrames = metrics.counter(
      "cfn_transport_bad_frames_total",
      "Inbound frames rejected; the connection is closed (reason: decode, envelope, version, shape, sender, text, too_large)",
      ["reason"],
    );
    this.authRejected = metrics.counter(
      "cfn_transport_auth_rejected_total",
      "Inbound handshakes rejected (reason: token, unknown_node, wrong_target, path, headers)",
      ["reason"],
    );
    this.dialFailures = metrics.counter(
      "cfn_transport_dial_failures_total",
      "Outbound dials or connections that failed",
    );
    this.connectionsOpened = metrics.counter("cfn_transport_connections_opened_total", "Connections opened", [
      "direction",
    ]);
    this.peersConnected = metrics.gauge(
      "cfn_transport_peers_connected",
      "Peers with an open outbound connection",
    );
    this.listenerRefused = metrics.counter(
      "cfn_transport_listener_refused_total",
      "Connections to the peer listener lost before the node saw them (reason: emfile: out of file descriptors on accept)",
      ["reason"],
    );
    this.framesDeferred = metrics.gauge(
      "cfn_transport_frames_deferred",
      "Received non-Raft frames waiting for a later turn of the event loop (each turn handles frames for at most 8 ms, so Raft keeps its timing under a backlog)",
    );
    this.framesDeferredOverflow = metrics.counter(
      "cfn_transport_frames_deferred_overflow_total",
      "Received frames handled at once because 65,536 already waited (the event loop is held instead)",
    );
    this.listenerReaped = metrics.counter(
      "cfn_transport_listener_reaped_total",
      "Unauthenticated connections to the peer listener closed by the node (reason: timeout: no authenticated upgrade within peerHandshakeTimeoutMs, evicted: oldest closed for a new one at peerPendingConnectionsMax)",
      ["reason"],
    );
    this.listenerPending = metrics.gauge(
      "cfn_transport_listener_pending_connections",
      "Connections to the peer listener accepted and not yet authenticated",
    );
  }
}
