// Metrics for every component: a prom-client registry (scraped at /metrics, names with the
// `cfn_` prefix, Prometheus conventions) and an optional JSONL stream, one line per emitted
// sample: {"name","value","labels","ts"} — the predecessor's emit_metric, kept for scripts.
//
// Components take a `Metrics` in their constructor (STYLE.md item 8) so that two nodes can live in
// one process with two registries, and tests can read values back.

import { appendFileSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { Counter, Gauge, Histogram, Registry } from "prom-client";

export type Labels = Record<string, string | number>;

export interface MetricsOptions {
  /** Path of the JSONL stream; undefined disables it. */
  jsonlPath?: string;
  /** Labels added to every sample (e.g. node id). */
  defaultLabels?: Labels;
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

  constructor(options: MetricsOptions = {}) {
    this.registry = new Registry();
    if (options.defaultLabels) this.registry.setDefaultLabels(options.defaultLabels);
    this.jsonlPath = options.jsonlPath;
    if (this.jsonlPath) mkdirSync(dirname(this.jsonlPath), { recursive: true });
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

  gauge(name: string, help: string, labelNames: string[] = []): Gauge<string> {
    let metric = this.gauges.get(name);
    if (!metric) {
      metric = new Gauge({ name, help, labelNames, registers: [this.registry] });
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

  /** Appends one sample to the JSONL stream (no-op when the stream is off). */
  emit(name: string, value: number, labels: Labels = {}): void {
    if (!this.jsonlPath) return;
    const line = JSON.stringify({ name, value, labels, ts: new Date().toISOString() });
    appendFileSync(this.jsonlPath, `${line}\n`);
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
