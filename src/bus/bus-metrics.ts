// The bus's Prometheus metrics (prefix cfn_bus_), created once per Metrics registry.
//
// Sends, claims and latency samples are counted on every message. A prom-client inc() or observe()
// costs a few microseconds when its code is cold (a receiver woken after a pause), a noticeable
// share of a light-load wake-up, so the hot paths add to plain fields here and the metrics take
// them in their collect hooks, which prom-client runs before every read (a scrape, Metrics.value()).

import type { Counter, Gauge, Histogram } from "prom-client";
import type { Metrics } from "../obs/metrics.js";

/** Latency samples held between two reads; a full buffer is handed to the histogram at once. */
export const LATENCY_SAMPLES_PENDING_MAX = 1024;

export interface BusMetrics {
  sent: Counter<string>;
  received: Counter<string>;
  latency: Histogram<string>;
  inboxDepth: Gauge<string>;
  overflows: Counter<string>;
  deadLetters: Counter<string>;
  redeliveries: Counter<string>;
  /** Hot path: `count` messages written into an inbox. */
  countSent(count: number): void;
  /** Hot path: `count` messages claimed and handed to a consumer. */
  countReceived(count: number): void;
  /** Hot path: one send → claim latency sample, in seconds. */
  observeLatency(seconds: number): void;
}

const byRegistry = new WeakMap<Metrics, BusMetrics>();

export function createBusMetrics(metrics: Metrics): BusMetrics {
  const existing = byRegistry.get(metrics);
  if (existing) return existing;
  let sentPending = 0;
  let receivedPending = 0;
  const latencyPending = new Float64Array(LATENCY_SAMPLES_PENDING_MAX);
  let latencyCount = 0;
  const sent = metrics.counter("cfn_bus_messages_sent_total", "Messages written into inboxes", [], () => {
    if (sentPending > 0) sent.inc(sentPending);
    sentPending = 0;
  });
  const received = metrics.counter(
    "cfn_bus_messages_received_total",
    "Messages claimed and handed to a consumer",
    [],
    () => {
      if (receivedPending > 0) received.inc(receivedPending);
      receivedPending = 0;
    },
  );
  const flushLatency = () => {
    for (let index = 0; index < latencyCount; index++) latency.observe(latencyPending[index]);
    latencyCount = 0;
  };
  const latency = metrics.histogram(
    "cfn_bus_send_to_receive_seconds",
    "Time from a message's send timestamp to its claim by a receiver",
    [],
    undefined,
    flushLatency,
  );
  const busMetrics: BusMetrics = {
    sent,
    received,
    latency,
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
    countSent(count) {
      sentPending += count;
    },
    countReceived(count) {
      receivedPending += count;
    },
    observeLatency(seconds) {
      if (latencyCount === LATENCY_SAMPLES_PENDING_MAX) flushLatency();
      latencyPending[latencyCount++] = seconds;
    },
  };
  byRegistry.set(metrics, busMetrics);
  return busMetrics;
}
