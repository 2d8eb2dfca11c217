// Metrics shared by the LogStore adapters, labelled by adapter ("leveldb", "memory").

import type { Counter, Histogram } from "prom-client";
import type { Metrics } from "../obs/metrics.js";

export class LogStoreMetrics {
  private readonly saveSeconds: Histogram<string>;
  private readonly batches: Counter<string>;
  private readonly entries: Counter<string>;
  private readonly bytes: Counter<string>;
  private readonly failures: Counter<string>;
  private readonly labels: { adapter: string };

  constructor(metrics: Metrics, adapter: string) {
    this.labels = { adapter };
    this.saveSeconds = metrics.histogram(
      "cfn_storage_batch_seconds",
      "Time to write one synced batch (a Ready round or a compaction)",
      ["adapter"],
    );
    this.batches = metrics.counter("cfn_storage_batches_total", "Synced write batches", ["adapter"]);
    this.entries = metrics.counter("cfn_storage_entries_written_total", "Log entries written", ["adapter"]);
    this.bytes = metrics.counter("cfn_storage_bytes_written_total", "Encoded bytes written", ["adapter"]);
    this.failures = metrics.counter("cfn_storage_write_failures_total", "Synced write batches that failed", [
      "adapter",
    ]);
  }

  recordFailure(): void {
    this.failures.inc(this.labels);
  }

  recordBatch(seconds: number, entryCount: number, bytes: number): void {
    this.saveSeconds.observe(this.labels, seconds);
    this.batches.inc(this.labels);
    if (entryCount > 0) this.entries.inc(this.labels, entryCount);
    if (bytes > 0) this.bytes.inc(this.labels, bytes);
  }
}
