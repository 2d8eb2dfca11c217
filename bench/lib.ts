// Shared pieces of the benchmark suites: statistics over repeated runs and the summary format
// of ARCHITECTURE.md ("bench/"): the last line a suite prints is
//   {"suite":…, "figures":[{"name","value","unit","target","met", …}]}
// and the same object is written to bench/results/<suite>.json.

import { type ChildProcess, fork } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export interface Figure {
  name: string;
  /** The figure compared with the target (usually the median over runs). */
  value: number;
  unit: string;
  /** Human-readable target, e.g. "≥ 25000" or "≤ 1". */
  target: string;
  met: boolean;
  /** Optional extra statistics: p50, p99, min, max, runs, samples… */
  [extra: string]: unknown;
}

export interface SuiteResult {
  suite: string;
  figures: Figure[];
  /** Context a reader needs: machine, anchors measured in the same run, notes. */
  context?: Record<string, unknown>;
}

export interface Stats {
  count: number;
  min: number;
  max: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
}

/** Nearest-rank percentile over a copy of the samples. */
export function percentile(samples: number[], fraction: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(fraction * sorted.length) - 1));
  return sorted[rank];
}

export function stats(samples: number[]): Stats {
  const count = samples.length;
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  let sum = 0;
  for (const sample of samples) {
    if (sample < min) min = sample;
    if (sample > max) max = sample;
    sum += sample;
  }
  return {
    count,
    min,
    max,
    mean: count ? sum / count : Number.NaN,
    p50: percentile(samples, 0.5),
    p90: percentile(samples, 0.9),
    p99: percentile(samples, 0.99),
  };
}

/** Rounds for printing without losing the significant digits of small values. */
export function round(value: number, digits = 3): number {
  if (!Number.isFinite(value)) return value;
  const magnitude = Math.abs(value) >= 1 ? digits : digits + Math.ceil(-Math.log10(Math.abs(value) || 1));
  return Number(value.toFixed(Math.min(magnitude, 9)));
}

/** Builds a figure for "at least target" (throughput-like) comparisons. */
export function atLeast(
  name: string,
  value: number,
  unit: string,
  target: number,
  extra: object = {},
): Figure {
  return { name, value: round(value), unit, target: `≥ ${target}`, met: value >= target, ...extra };
}

/** Builds a figure for "at most target" (latency-like) comparisons. */
export function atMost(
  name: string,
  value: number,
  unit: string,
  target: number,
  extra: object = {},
): Figure {
  return { name, value: round(value), unit, target: `≤ ${target}`, met: value <= target, ...extra };
}

export function exactly(
  name: string,
  value: number,
  unit: string,
  target: number,
  extra: object = {},
): Figure {
  return { name, value, unit, target: `= ${target}`, met: value === target, ...extra };
}

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Prints the human lines, writes bench/results/<suite>.json, and prints the JSON summary last. */
export function report(result: SuiteResult): void {
  for (const figure of result.figures) {
    const mark = figure.met ? "ok  " : "MISS";
    process.stderr.write(
      `${mark} ${figure.name}: ${figure.value} ${figure.unit} (target ${figure.target})\n`,
    );
  }
  const dir = join(repoRoot, "bench", "results");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${result.suite}.json`), `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

// ---- worker processes -----------------------------------------------------------------------------

/** A forked bench worker: `ready` when it says so (or exits), `result` with its answer. */
export interface BenchWorker<T> {
  child: ChildProcess;
  ready: Promise<void>;
  result: Promise<T>;
}

/**
 * Forks `script` with `flag` (the script's worker mode) and sends it `request`. The worker posts
 * `{ready: true}` once it is listening and `{result}` when done; a non-zero exit rejects `result`.
 */
export function forkWorker<T>(
  script: string,
  flag: string,
  request: { kind: string },
  execArgv: string[] = [],
): BenchWorker<T> {
  const child = fork(script, [flag], { execArgv, stdio: ["ignore", "inherit", "inherit", "ipc"] });
  let markReady: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => {
    markReady = resolve;
  });
  const result = new Promise<T>((resolve, reject) => {
    child.on("message", (message: { ready?: boolean; result?: T }) => {
      if (message.ready) markReady();
      if (message.result !== undefined) resolve(message.result);
    });
    child.once("exit", (code) => {
      markReady();
      if (code !== 0) reject(new Error(`bench worker ${request.kind} exited with ${code}`));
    });
  });
  child.send(request);
  return { child, ready, result };
}

/** The worker side: answers the first request with `handle`'s result, then exits. */
export function serveWorker<R>(handle: (request: R) => Promise<unknown>): void {
  process.once("message", (request: R) => {
    handle(request).then(
      (result) => process.send?.({ result }, () => process.exit(0)),
      (error: Error) => {
        process.stderr.write(`bench worker failed: ${error.stack}\n`);
        process.exit(1);
      },
    );
  });
}
