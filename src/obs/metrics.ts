// Metrics for every component: a prom-client registry (scraped at /metrics, names with the
// `cfn_` prefix, Prometheus conventions) and an optional JSONL stream, one line per emitted
// sample: {"name","value","labels","ts"} — the predecessor's emit_metric, kept for scripts.
//
// Components take a `Metrics` in their constructor (STYLE.md item 8) so that two nodes can live in
// one process with two registries, and tests can read values back.
//
// The JSONL stream is a side channel: a path that cannot hold it is a configuration error at start
// (CFN_ERR_CONFIG_INVALID), and a write that fails later is counted and logged, never thrown, so
// it cannot turn the caller's own outcome (a refused send, a dead letter) into a crash.

import { appendFileSync, existsSync, mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { CfnError } from "../errors.js";
import { jsonlPathProblem } from "./jsonl-path.js";
import { createLogger, type Logger } from "./logger.js";

export type Labels = Record<string, string | number>;

export interface MetricsOptions {
  /** Path of the JSONL stream; undefined disables it. */
  jsonlPath?: string;
  /** Labels added to every sample (e.g. node id). */
  defaultLabels?: Labels;
  /** Where a failing JSONL write is reported; by default warnings on stderr as `cfn:metrics`. */
  logger?: Logger;
}

/** Latency buckets in seconds, from 10 µs to 10 s. */
export const LATENCY_BUCKETS_SECONDS = [
  0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
  0.5, 1, 2.5, 5, 10,
];

export class Metrics {
  readonly registry: Registry;
  private readonly jsonlPath: string | undefined;
  private readonly counters = new Map<string, Counter<string>>();
  private readonly gauges = new Map<string, Gauge<string>>();
  private readonly histograms = new Map<string, Histogram<string>>();
  private readonly logger: Logger;
  /** Defined while the JSONL stream is on. */
  private readonly jsonlWriteFailures: Counter<string> | undefined;
  /** True from a failed JSONL write until one succeeds again: one log line per failure streak. */
  private jsonlFailing = false;

  constructor(options: MetricsOptions = {}) {
    this.registry = new Registry();
    if (options.defaultLabels) this.registry.setDefaultLabels(options.defaultLabels);
    this.logger = options.logger ?? createLogger("cfn:metrics", { level: "warn" });
    this.jsonlPath = options.jsonlPath || undefined;
    if (this.jsonlPath) {
      createJsonlDirectories(this.jsonlPath);
      this.jsonlWriteFailures = this.counter(
        "cfn_metrics_jsonl_write_failures_total",
        "JSONL stream lines that could not be appended (the event itself was still counted here)",
      );
    }
  }

  /**
   * Returns the counter of that name, creating it on first use. `collect` runs before each read
   * (scrape or value()): a hot path can count in a plain field and add it there.
   */
  counter(name: string, help: string, labelNames: string[] = [], collect?: () => void): Counter<string> {
    let metric = this.counters.get(name);
    if (!metric) {
      metric = new Counter({ name, help, labelNames, registers: [this.registry], collect });
      this.counters.set(name, metric);
    }
    return metric;
  }

  /** Returns the gauge of that name, creating it on first use; `collect` sets it before each read. */
  gauge(name: string, help: string, labelNames: string[] = [], collect?: () => void): Gauge<string> {
    let metric = this.gauges.get(name);
    if (!metric) {
      metric = new Gauge({ name, help, labelNames, registers: [this.registry], collect });
      this.gauges.set(name, metric);
    }
    return metric;
  }

  histogram(
    name: string,
    help: string,
    labelNames: string[] = [],
    buckets: number[] = LATENCY_BUCKETS_SECONDS,
    collect?: () => void,
  ): Histogram<string> {
    let metric = this.histograms.get(name);
    if (!metric) {
      metric = new Histogram({ name, help, labelNames, buckets, registers: [this.registry], collect });
      this.histograms.set(name, metric);
    }
    return metric;
  }

  /**
   * Appends one sample to the JSONL stream (no-op when the stream is off). Never throws: a failed
   * write is counted in cfn_metrics_jsonl_write_failures_total and logged once per failure streak.
   */
  emit(name: string, value: number, labels: Labels = {}): void {
    if (!this.jsonlPath) return;
    const line = JSON.stringify({ name, value, labels, ts: new Date().toISOString() });
    try {
      appendFileSync(this.jsonlPath, `${line}\n`);
      this.jsonlFailing = false;
    } catch (error) {
      this.jsonlWriteFailures?.inc();
      if (this.jsonlFailing) return;
      this.jsonlFailing = true;
      this.logger.warn("metrics JSONL stream: write failed; lines are lost until a write succeeds", {
        path: this.jsonlPath,
        error,
        name,
      });
    }
  }

  /** Prometheus text exposition of every metric in this registry. */
  async exposition(): Promise<string> {
    return this.registry.metrics();
  }

  /** Current value of a counter or gauge (sum over label sets when `labels` is omitted). */
  async value(name: string, labels?: Labels): Promise<number> {
    const metric = this.registry.getSingleMetric(name);
    if (!metric) return 0;
    const data = await metric.get();
    let total = 0;
    for (const sample of data.values) {
      const sampleName = (sample as { metricName?: string }).metricName;
      if (sampleName && sampleName !== name) continue;
      if (labels && !Object.entries(labels).every(([k, v]) => String(sample.labels[k]) === String(v)))
        continue;
      total += sample.value;
    }
    return total;
  }
}

/**
 * Checks metrics.jsonlPath (the config schema checked it already when it came from a config) and
 * creates its missing directories one level at a time: node's recursive mkdir never returns on
 * some pseudo file systems, and a plain mkdir per level fails instead.
 */
function createJsonlDirectories(path: string): void {
  const invalid = (problem: string) =>
    new CfnError("CFN_ERR_CONFIG_INVALID", `invalid configuration: metrics.jsonlPath: ${problem}`, {
      field: "metrics.jsonlPath",
      path,
    });
  const problem = jsonlPathProblem(path);
  if (problem) throw invalid(problem);
  const missing: string[] = [];
  for (let dir = dirname(resolve(path)); !existsSync(dir); dir = dirname(dir)) missing.unshift(dir);
  for (const dir of missing) {
    try {
      mkdirSync(dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "EEXIST") continue;
      throw invalid(`cannot create ${dir} (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
    }
  }
}
