// The node daemon's Prometheus metrics (cfn_node_*, cfn_delivery_*), created once per node on
// its Metrics registry (the same registry the Raft host, transport and bus use, served at /metrics).

import type { Counter, Gauge, Histogram } from "prom-client";
import type { Metrics } from "../obs/metrics.js";

export class NodeMetrics {
  /** Messages written into a local inbox from another node. */
  readonly delivered: Counter<string>;
  /** Messages taken from the local bus into the spool for another node. */
  readonly spooled: Counter<string>;
  /** Messages acknowledged by their owner node. */
  readonly forwardAcked: Counter<string>;
  /** Frames re-sent after an ack timeout or a resync request. */
  readonly retransmits: Counter<string>;
  readonly duplicates: Counter<string>;
  readonly resyncs: Counter<string>;
  readonly inboxFull: Counter<string>;
  readonly heldFrames: Counter<string>;
  /** Forwarded messages parked on this node because their agent's inbox was full. */
  readonly parked: Counter<string>;
  readonly parkedDepth: Gauge<string>;
  readonly unsendable: Counter<string>;
  readonly handedOff: Counter<string>;
  readonly backpressurePauses: Counter<string>;
  readonly backpressureAsked: Counter<string>;
  readonly handedOver: Counter<string>;
  readonly rejected: Counter<string>;
  /** Malformed or unexpected frames from peers, by channel and reason. */
  readonly badFrames: Counter<string>;
  /** API requests refused (bad token, bad body, …). */
  readonly apiRejected: Counter<string>;
  readonly spoolDepth: Gauge<string>;
  readonly forwardLatency: Histogram<string>;
  readonly agents: Gauge<string>;
  readonly teamsCoordinated: Gauge<string>;
  readonly reassignments: Counter<string>;
  /** Inbox entries the persistence mirror did not copy, by reason (not_regular, oversized). */
  readonly mirrorSkipped: Counter<string>;
  /** Mirrored messages that could not be decrypted at a restore, dead-lettered as undecryptable. */
  readonly mirrorUndecryptable: Counter<string>;

  constructor(metrics: Metrics) {
    this.delivered = metrics.counter(
      "cfn_delivery_inbound_messages_total",
      "Messages from other nodes written into local inboxes",
    );
    this.spooled = metrics.counter(
      "cfn_delivery_spooled_messages_total",
      "Messages put into the spool for other nodes (drained from the local bus, re-routed from a removed member, or handed off by one)",
    );
    this.forwardAcked = metrics.counter(
      "cfn_delivery_acked_messages_total",
      "Forwarded messages acknowledged by their owner node",
    );
    this.retransmits = metrics.counter(
      "cfn_delivery_retransmits_total",
      "Forwarded frames sent again (ack timeout or resync)",
    );
    this.duplicates = metrics.counter(
      "cfn_delivery_duplicates_total",
      "Forwarded messages dropped as already written",
      ["reason"],
    );
    this.resyncs = metrics.counter("cfn_delivery_resyncs_total", "Resync requests sent after a sequence gap");
    this.inboxFull = metrics.counter(
      "cfn_delivery_inbox_full_total",
      "Forwarded batches stopped by a full inbox",
    );
    this.heldFrames = metrics.counter(
      "cfn_delivery_held_frames_total",
      "Forwarded frames dropped while their sender's stream is held at a full inbox (asked again once it has room)",
    );
    this.unsendable = metrics.counter(
      "cfn_delivery_unsendable_messages_total",
      "Spooled messages no frame could carry (over frameBytesMax encoded), dead-lettered on the sending node",
    );
    this.backpressurePauses = metrics.counter(
      "cfn_delivery_paused_agents_total",
      "Agents whose owner node asked this node to stop draining them (their inbox full, messages parked)",
    );
    this.backpressureAsked = metrics.counter(
      "cfn_delivery_pause_requests_total",
      "Backpressure pauses this node asked of sending nodes for agents whose messages it parks",
    );
    this.handedOff = metrics.counter(
      "cfn_delivery_handoff_taken_messages_total",
      "Messages a node removed from the cluster handed off to this node (POST /v1/handoff), taken",
    );
    this.handedOver = metrics.counter(
      "cfn_delivery_handoff_sent_messages_total",
      "Spooled messages this node handed off to a member after it was removed from the cluster",
    );
    this.rejected = metrics.counter(
      "cfn_delivery_rejected_messages_total",
      "Forwarded messages the local bus refused (each dead-lettered, refused_*.json)",
      ["reason"],
    );
    this.badFrames = metrics.counter(
      "cfn_node_bad_frames_total",
      "Malformed or unexpected frames from peers",
      ["channel", "reason"],
    );
    this.apiRejected = metrics.counter("cfn_node_api_rejected_total", "HTTP API requests refused", [
      "reason",
    ]);
    this.parked = metrics.counter(
      "cfn_delivery_parked_messages_total",
      "Forwarded messages parked on this node because their agent's inbox was full (moved in as it has room)",
    );
    this.parkedDepth = metrics.gauge(
      "cfn_delivery_parked_messages",
      "Forwarded messages parked on this node, waiting for room in their agent's inbox",
    );
    this.spoolDepth = metrics.gauge(
      "cfn_delivery_spool_messages",
      "Messages in the spool waiting for an ack",
      ["dest"],
    );
    this.forwardLatency = metrics.histogram(
      "cfn_delivery_forward_seconds",
      "Time from spooling a message to its owner node's ack",
    );
    this.agents = metrics.gauge("cfn_node_agents", "Agents registered on this node", ["state"]);
    this.teamsCoordinated = metrics.gauge("cfn_node_teams_coordinated", "Teams this node coordinates");
    this.reassignments = metrics.counter(
      "cfn_node_team_assignments_total",
      "Team coordinator assignments proposed by this node as leader",
    );
    this.mirrorSkipped = metrics.counter(
      "cfn_node_mirror_skipped_files_total",
      "Inbox entries the persistence mirror did not copy: not a regular file (FIFO, symlink, directory, device), larger than the bus reads, or not UTF-8; the receiver dead-letters each when it claims it",
      ["reason"],
    );
    this.mirrorUndecryptable = metrics.counter(
      "cfn_node_mirror_undecryptable_messages_total",
      "Mirrored messages a restore could not decrypt (altered or damaged on disk), moved to dead-letter as undecryptable",
    );
  }
}
