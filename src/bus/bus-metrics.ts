// The bus's Prometheus metrics (prefix cfn_bus_), created once per Metrics registry.
//
// Sends, claims and latency samples are counted on every message. A prom-client inc() or observe()
// costs a few microseconds when its code is cold (a receiver woken after a pause), a noticeable
// share of a light-load wake-up, so the hot paths add to plain fields here and the metrics take
// them in their collect hooks, which prom-client runs before every read (a scrape, Metrics.value()).
//
// These counters are per process: they count what the buses of THIS process did (a node's own
// writes of forwarded messages, not the sends of agent processes on the same bus directory; those
// have registries of their own). cfn_bus_inbox_depth is different: it is read from the inbox
// directories at scrape time, so it shows every process's traffic (docs/MONITORING.md).
//
// Labelled counters start with a 0 series for every label value the code can use, so the first
// event is an increase from 0 that rate() and increase() see (a series born at 1 is not).

import type { Counter, Gauge, Histogram } from "prom-client";
import type { Metrics } from "../obs/metrics.js";
import type { DeadLetterCause } from "./dead-letter.js";

/** Latency samples held between two reads; a full buffer is handed to the histogram at once. */
export const LATENCY_SAMPLES_PENDING_MAX = 1024;

/**
 * Agents whose inboxes one read of cfn_bus_inbox_depth counts (two readdirs each). With more agents
 * the reads rotate: each scrape reads the next ones, the others keep their last value.
 */
export const INBOX_DEPTH_AGENTS_PER_SCRAPE_MAX = 1000;

/** Every `reason` of cfn_bus_dead_letters_total, started at 0. */
export const DEAD_LETTER_CAUSES = [
  "foreign",
  "malformed",
  "oversized",
  "misaddressed",
  "deliveries_exhausted",
  "expired",
] as const satisfies readonly DeadLetterCause[];
// Fails to compile when DeadLetterCause gains a value this list lacks.
const deadLetterCausesComplete: Exclude<DeadLetterCause, (typeof DEAD_LETTER_CAUSES)[number]> extends never
  ? true
  : never = true;
void deadLetterCausesComplete;

/** Every `cause` of cfn_bus_redeliveries_total (src/bus/mailbox.ts, src/bus/recovery.ts), started at 0. */
export const REDELIVERY_CAUSES = ["nack", "handed_back", "visibility_timeout", "consumer_died"] as const;
export type RedeliveryCause = (typeof REDELIVERY_CAUSES)[number];

/** What the inbox-depth gauge reads at scrape time: a Bus. */
export interface InboxDepthSource {
  /** The bus directory: two sources of one directory are read once. */
  readonly dir: string;
  /** Ids of the agents with a directory on the bus, sorted. */
  listAgents(): string[];
  /** Messages queued + claimed in the agent's inbox, counted now. */
  inboxDepth(agentId: string): number;
}

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
  /** Makes `source`'s inboxes part of cfn_bus_inbox_depth until the returned function is called. */
  addInboxDepthSource(source: InboxDepthSource): () => void;
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
  const depthSources = new Set<InboxDepthSource>();
  const readDepths = inboxDepthReader(depthSources, () => inboxDepth);
  const inboxDepth = metrics.gauge(
    "cfn_bus_inbox_depth",
    "Messages queued or claimed in an agent's inbox, counted at scrape time",
    ["agent"],
    readDepths,
  );
  const deadLetters = metrics.counter("cfn_bus_dead_letters_total", "Files moved to dead-letter", ["reason"]);
  for (const reason of DEAD_LETTER_CAUSES) deadLetters.inc({ reason }, 0);
  const redeliveries = metrics.counter(
    "cfn_bus_redeliveries_total",
    "Messages put back into an inbox (nack, visibility timeout, crashed consumer)",
    ["cause"],
  );
  for (const cause of REDELIVERY_CAUSES) redeliveries.inc({ cause }, 0);
  const busMetrics: BusMetrics = {
    sent,
    received,
    latency,
    inboxDepth,
    overflows: metrics.counter("cfn_bus_inbox_overflows_total", "Sends refused because the inbox was full"),
    deadLetters,
    redeliveries,
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
    addInboxDepthSource(source) {
      depthSources.add(source);
      return () => {
        depthSources.delete(source);
      };
    },
  };
  byRegistry.set(metrics, busMetrics);
  return busMetrics;
}

/**
 * The collect hook of cfn_bus_inbox_depth: counts the inboxes of every source's agents, at most
 * INBOX_DEPTH_AGENTS_PER_SCRAPE_MAX per read, rotating through them when there are more, and drops
 * the series of agents that are gone. An agent on two bus directories of one registry adds up.
 */
function inboxDepthReader(sources: Set<InboxDepthSource>, gauge: () => Gauge<string>): () => void {
  let cursor = 0;
  const shown = new Set<string>();
  return () => {
    const listed = new Map<string, InboxDepthSource[]>();
    const byDir = new Map<string, InboxDepthSource>();
    for (const source of sources) if (!byDir.has(source.dir)) byDir.set(source.dir, source);
    for (const source of byDir.values())
      for (const agent of source.listAgents()) {
        const owners = listed.get(agent);
        if (owners) owners.push(source);
        else listed.set(agent, [source]);
      }
    const agents = [...listed.keys()].sort();
    for (const agent of shown)
      if (!listed.has(agent)) {
        gauge().remove({ agent });
        shown.delete(agent);
      }
    if (agents.length === 0) return;
    const reads = Math.min(agents.length, INBOX_DEPTH_AGENTS_PER_SCRAPE_MAX);
    cursor %= agents.length;
    for (let index = 0; index < reads; index++) {
      const agent = agents[(cursor + index) % agents.length];
      let depth = 0;
      for (const source of listed.get(agent) ?? []) depth += source.inboxDepth(agent);
      gauge().set({ agent }, depth);
      shown.add(agent);
    }
    cursor = (cursor + reads) % agents.length;
  };
}

/** Longest quiet period between two reports of one inbox's refused sends, in ms. */
export const OVERFLOW_REPORT_INTERVAL_MS = 1000;

/**
 * One report of refused sends: `refused` messages in total, of which `suppressed` were held back
 * from an earlier report (0 for the first refusal of a quiet inbox).
 */
export type OverflowReport = (agentId: string, refused: number, suppressed: number, depth: number) => void;

/**
 * Rate-limits the log and JSONL lines of refused sends (INBOX_FULL) to one per inbox per interval
 * without losing counts: the first refusal of a quiet inbox is reported at once, later ones are
 * summed and reported when the interval ends (an unref'd timer, so it never keeps a process
 * alive), with the next refusal if that comes first (a busy loop starves the timer), or on
 * close(). So the reported values add up to cfn_bus_inbox_overflows_total for graceful exits.
 */
export class OverflowReporter {
  private readonly report: OverflowReport;
  private readonly intervalMs: number;
  private readonly windows = new Map<string, { openedMs: number; suppressed: number; depth: number }>();
  private timer: NodeJS.Timeout | undefined;

  constructor(report: OverflowReport, intervalMs = OVERFLOW_REPORT_INTERVAL_MS) {
    this.report = report;
    this.intervalMs = intervalMs;
  }

  /** `count` messages were refused by `agentId`'s inbox holding `depth`. */
  refused(agentId: string, count: number, depth: number): void {
    const now = Date.now();
    const window = this.windows.get(agentId);
    if (window && now - window.openedMs < this.intervalMs) {
      window.suppressed += count;
      window.depth = depth;
      this.armTimer();
      return;
    }
    const suppressed = window?.suppressed ?? 0;
    this.windows.set(agentId, { openedMs: now, suppressed: 0, depth });
    this.report(agentId, count + suppressed, suppressed, depth);
    // The timer also retires quiet windows, so the map holds only recently refusing inboxes.
    this.armTimer();
  }

  /** Reports everything held back now and stops the timer. */
  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const [agentId, window] of this.windows)
      if (window.suppressed > 0) this.report(agentId, window.suppressed, window.suppressed, window.depth);
    this.windows.clear();
  }

  /** Refusals held back and not reported yet, over all inboxes. */
  get pending(): number {
    let total = 0;
    for (const window of this.windows.values()) total += window.suppressed;
    return total;
  }

  private armTimer(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => this.flushDue(), this.intervalMs);
    this.timer.unref();
  }

  private flushDue(): void {
    this.timer = undefined;
    const now = Date.now();
    for (const [agentId, window] of this.windows) {
      if (window.suppressed > 0) {
        const suppressed = window.suppressed;
        window.suppressed = 0;
        window.openedMs = now;
        this.report(agentId, suppressed, suppressed, window.depth);
      } else if (now - window.openedMs >= this.intervalMs) {
        this.windows.delete(agentId);
      }
    }
    if (this.windows.size > 0) this.armTimer();
  }
}
