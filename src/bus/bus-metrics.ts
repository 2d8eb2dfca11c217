// The bus's Prometheus metrics (prefix cfn_bus_), created once per Metrics registry.

import type { Counter, Gauge, Histogram } from "prom-client";
import type { Metrics } from "../obs/metrics.js";

export interface BusMetrics {
  sent: Counter<string>;
  received: Counter<string>;
  latency: Histogram<string>;
  inboxDepth: Gauge<string>;
  overflows: Counter<string>;
  deadLetters: Counter<string>;
  redeliveries: Counter<string>;
}

export function createBusMetrics(metrics: Metrics): BusMetrics {
  return {
    sent: metrics.counter("cfn_bus_messages_sent_total", "Messages written into inboxes"),
    received: metrics.counter("cfn_bus_messages_received_total", "Messages claimed and handed to a consumer"),
    latency: metrics.histogram(
      "cfn_bus_send_to_receive_seconds",
      "Time from a message's send timestamp to its claim by a receiver",
    ),
    inboxDepth: metrics.gauge("cfn_bus_inbox_depth", "Messages queued or claimed in an agent's inbox", [
      "agent",
    ]),
    overflows: metrics.counter("cfn_bus_inbox_overflows_total", "Sends refused because the inbox was full"),
    deadLetters: metrics.counter("cfn_bus_dead_letters_total", "Files moved to dead-letter", ["reason"]),
    redeliveries: metrics.counter(
      "cfn_bus_redeliveries_total",
      "Messages put back into an inbox (nack, visibility timeout, crashed consumer)",
      ["cause"],
    ),
  };
}
