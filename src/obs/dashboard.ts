// The live dashboard's data: one JSON snapshot a node serves at GET /v1/dashboard, polled every
// second by the page at GET /dashboard (src/obs/dashboard-page.ts). It reuses what the node already
// exposes — its status (GET /v1/status), its routing state (GET /v1/routing) and its metric
// registry (GET /metrics) — and adds nothing to the node's hot paths: the snapshot is built only
// when a browser asks. Rates are computed by the page from the cumulative counters of two polls,
// so the node keeps no history and two dashboards do not disturb each other.

import type { Metrics } from "./metrics.js";

/** Local inboxes listed per snapshot, deepest first (a 10,000-agent bus would be a 1 MB poll). */
export const DASHBOARD_INBOXES_MAX = 100;
/** Coordinator events (failovers, reassignments) listed per snapshot, newest first. */
export const DASHBOARD_EVENTS_MAX = 20;
/** In-flight coordination rounds listed per snapshot. */
export const DASHBOARD_ROUNDS_MAX = 20;

/**
 * A snapshot younger than this is served again instead of being rebuilt: any number of open
 * dashboards then cost one build per interval (a build reads every inbox directory of the bus,
 * tens of ms for a thousand agents). Below the page's poll interval, so one viewer sees fresh data.
 */
export const DASHBOARD_SNAPSHOT_REUSE_MS = 500;

/** What a node hands the dashboard: the same objects its status and routing routes return. */
export interface DashboardSource {
  status(): Record<string, unknown>;
  routingJson(): Record<string, unknown>;
}

/** Cumulative counters the page turns into rates (per second, between two polls). */
const COUNTERS = {
  busMessagesSent: "cfn_bus_messages_sent_total",
  busMessagesReceived: "cfn_bus_messages_received_total",
  busDeadLetters: "cfn_bus_dead_letters_total",
  busInboxOverflows: "cfn_bus_inbox_overflows_total",
  deliveryInbound: "cfn_delivery_inbound_messages_total",
  deliveryAcked: "cfn_delivery_acked_messages_total",
  raftLeaderChanges: "cfn_raft_leader_changes_total",
  coordinationTasks: "cfn_coordination_tasks_total",
  apiRejected: "cfn_node_api_rejected_total",
} as const;

interface LocalAgent {
  agentId: string;
  inboxDepth: number;
  claimed: number;
  deadLetters: number;
  lastSeenMs: number | null;
}

interface RoundCheckpoint {
  scope?: string;
  round?: string;
  name?: string;
  index?: number;
}

export interface DashboardSnapshot {
  /** Milliseconds since the epoch at which the snapshot was taken (the page's rate clock). */
  takenAtMs: number;
  /** Wall time the node spent building it; the page polls less often when this grows. */
  buildMs: number;
  node: unknown;
  raft: unknown;
  members: unknown[];
  teams: unknown[];
  counters: Record<keyof typeof COUNTERS, number>;
  inboxes: {
    agents: number;
    depthTotal: number;
    claimedTotal: number;
    deadLettersTotal: number;
    /** The deepest DASHBOARD_INBOXES_MAX inboxes. */
    deepest: LocalAgent[];
  };
  spool: { spooled: number; streams: unknown[] };
  rounds: Array<{ scope: string; round: string; records: number; lastIndex: number }>;
  events: unknown[];
}

export async function dashboardSnapshot(
  source: DashboardSource,
  metrics: Metrics,
): Promise<DashboardSnapshot> {
  const startedMs = performance.now();
  const status = source.status();
  const routing = source.routingJson();
  const counters = {} as Record<keyof typeof COUNTERS, number>;
  for (const [key, name] of Object.entries(COUNTERS))
    counters[key as keyof typeof COUNTERS] = await metrics.value(name);
  const bus = (status.bus ?? {}) as { agents?: LocalAgent[] };
  const agents = bus.agents ?? [];
  const delivery = (status.delivery ?? {}) as { spooled?: number; streams?: unknown[] };
  return {
    takenAtMs: Date.now(),
    buildMs: Math.round((performance.now() - startedMs) * 10) / 10,
    node: status.node,
    raft: status.raft,
    members: (status.members as unknown[]) ?? [],
    teams: (status.teams as unknown[]) ?? [],
    counters,
    inboxes: {
      agents: agents.length,
      depthTotal: sum(agents, (agent) => agent.inboxDepth),
      claimedTotal: sum(agents, (agent) => agent.claimed),
      deadLettersTotal: sum(agents, (agent) => agent.deadLetters),
      deepest: [...agents]
        .sort(
          (a, b) => b.inboxDepth + b.claimed - (a.inboxDepth + a.claimed) || (a.agentId < b.agentId ? -1 : 1),
        )
        .slice(0, DASHBOARD_INBOXES_MAX),
    },
    spool: { spooled: delivery.spooled ?? 0, streams: delivery.streams ?? [] },
    rounds: roundsInFlight(routing.roundCheckpoints),
    events: Array.isArray(routing.events) ? routing.events.slice(-DASHBOARD_EVENTS_MAX).reverse() : [],
  };
}

/** Rounds with replicated checkpoints (they exist while a round runs), newest first. */
function roundsInFlight(records: unknown): DashboardSnapshot["rounds"] {
  if (!Array.isArray(records)) return [];
  const byRound = new Map<string, { scope: string; round: string; records: number; lastIndex: number }>();
  for (const record of records as RoundCheckpoint[]) {
    if (typeof record?.round !== "string") continue;
    const scope = record.scope ?? "";
    const key = `${scope}/${record.round}`;
    const entry = byRound.get(key) ?? { scope, round: record.round, records: 0, lastIndex: 0 };
    entry.records++;
    entry.lastIndex = Math.max(entry.lastIndex, record.index ?? 0);
    byRound.set(key, entry);
  }
  return [...byRound.values()].sort((a, b) => b.lastIndex - a.lastIndex).slice(0, DASHBOARD_ROUNDS_MAX);
}

function sum<T>(items: T[], of: (item: T) => number): number {
  let total = 0;
  for (const item of items) total += of(item) || 0;
  return total;
}

/** Serves snapshots to every viewer of one node, rebuilding at most once per reuse interval. */
export class DashboardSnapshots {
  private readonly source: DashboardSource;
  private readonly metrics: Metrics;
  private readonly reuseMs: number;
  private latest: { atMs: number; snapshot: Promise<DashboardSnapshot> } | undefined;

  constructor(source: DashboardSource, metrics: Metrics, reuseMs = DASHBOARD_SNAPSHOT_REUSE_MS) {
    this.source = source;
    this.metrics = metrics;
    this.reuseMs = reuseMs;
  }

  get(): Promise<DashboardSnapshot> {
    const now = Date.now();
    if (!this.latest || now - this.latest.atMs >= this.reuseMs) {
      const snapshot = dashboardSnapshot(this.source, this.metrics);
      // A failed build is not kept: the next poll tries again.
      snapshot.catch(() => {
        if (this.latest?.snapshot === snapshot) this.latest = undefined;
      });
      this.latest = { atMs: now, snapshot };
    }
    return this.latest.snapshot;
  }
}
