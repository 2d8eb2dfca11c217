// The report of one chaos run: a JSON document (everything, for tools and post-mortems) and a
// human summary (what a person reads first). Both are written side by side.

import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface ChaosCheck {
  name: string;
  ok: boolean;
  detail: string;
}

export interface ChaosElection {
  round: number;
  cause: string;
  /** The wait was for a leader other than the one the fault took away. */
  replaced: boolean;
  /** From the wait's start (right after the fault) to an agreed leader. */
  ms: number;
  leader: string;
}

export interface ChaosReport {
  scenario: string;
  backend: string;
  seed: number;
  rounds: number;
  startedAt: string;
  durationMs: number;
  cluster: Record<string, unknown>;
  timing: Record<string, number>;
  workload: Record<string, number>;
  timeline: { atMs: number; kind: string; [detail: string]: unknown }[];
  elections: ChaosElection[];
  writes: {
    acknowledged: number;
    unknownOutcome: number;
    lost: number;
    lostExamples: string[];
    longestStallMs: number;
  };
  history: { operations: number; completed: number; verdict: string; searchSteps: number; failure?: string };
  converged: { ok: boolean; applied?: number; detail: string };
  checks: ChaosCheck[];
  ok: boolean;
  /** Node log tails, only when a check failed. */
  logTails?: Record<string, string>;
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/** Median and p99 of the elections that replaced a leader a fault took away. */
export function electionFigures(report: ChaosReport): {
  count: number;
  medianMs: number;
  p99Ms: number;
  maxMs: number;
} {
  const times = report.elections.filter((e) => e.replaced).map((e) => e.ms);
  return {
    count: times.length,
    medianMs: percentile(times, 50),
    p99Ms: percentile(times, 99),
    maxMs: times.length ? Math.max(...times) : 0,
  };
}

export function formatSummary(report: ChaosReport): string {
  const elections = electionFigures(report);
  const lines = [
    `chaos ${report.scenario} on ${report.backend}: ${report.ok ? "PASS" : "FAIL"} (seed ${report.seed}, ${report.rounds} rounds, ${(report.durationMs / 1000).toFixed(1)} s)`,
    `  leader replaced after a fault: ${elections.count} times, median ${elections.medianMs.toFixed(0)} ms, p99 ${elections.p99Ms.toFixed(0)} ms, max ${elections.maxMs.toFixed(0)} ms (bound ${report.timing.leaderWithinMs} ms)`,
    `  writes: ${report.writes.acknowledged} acknowledged, ${report.writes.lost} lost, ${report.writes.unknownOutcome} of unknown outcome; longest stall ${report.writes.longestStallMs.toFixed(0)} ms`,
    `  history: ${report.history.operations} operations (${report.history.completed} completed), linearizability ${report.history.verdict} (${report.history.searchSteps} search steps)`,
    `  replicas: ${report.converged.detail}`,
    ...report.checks.map((check) => `  [${check.ok ? "ok" : "FAILED"}] ${check.name}: ${check.detail}`),
  ];
  if (!report.ok)
    lines.push(
      `  replay: npm run chaos -- ${report.scenario} --backend ${report.backend} --seed ${report.seed} --rounds ${report.rounds}`,
    );
  return lines.join("\n");
}

/** Writes <dir>/<scenario>-<backend>-<time>.json and .txt (the summary); returns the JSON path. */
export function writeReport(
  report: { scenario: string; backend: string; startedAt: string },
  summary: string,
  dir: string,
): string {
  mkdirSync(dir, { recursive: true });
  const base = join(dir, `${report.scenario}-${report.backend}-${report.startedAt.replace(/[:.]/g, "-")}`);
  writeFileSync(`${base}.json`, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(`${base}.txt`, `${summary}\n`);
  return `${base}.json`;
}
