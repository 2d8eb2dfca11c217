// The span exporter the tracing setup hands to its batch processor: the OTLP/HTTP exporter wrapped
// so that every outcome is counted and a failing collector is logged without breaking anything.
// A wrong endpoint or a collector that is down costs the spans of the failed batch, never the
// process: failures are caught here, counted in cfn_tracing_export_failures_total and logged at
// most once per `failureLogIntervalMs`, so a dead collector does not flood the log.
// The counters exist at 0 from the start (every outcome label too), so the first failure is an
// increase that rate() and increase() see, and a dashboard shows 0 rather than no data.

import { type ExportResult, ExportResultCode } from "@opentelemetry/core";
import type { ReadableSpan, SpanExporter, SpanProcessor } from "@opentelemetry/sdk-trace-base";
import type { Counter } from "prom-client";
import type { Logger } from "./logger.js";
import type { Metrics } from "./metrics.js";

/** Longest quiet period between two log lines about failing exports. */
export const EXPORT_FAILURE_LOG_INTERVAL_MS = 60_000;

export class CountingSpanExporter implements SpanExporter {
  private readonly inner: SpanExporter;
  private readonly logger: Logger;
  private readonly exportedSpans: Counter<string> | undefined;
  private readonly exportFailures: Counter<string> | undefined;
  private readonly failureLogIntervalMs: number;
  private lastFailureLogMs = Number.NEGATIVE_INFINITY;
  private failuresSinceLog = 0;
  /** Start times (ms) of the exports handed to the inner exporter and not answered yet. */
  private readonly pendingSinceMs = new Set<{ startedMs: number }>();

  constructor(options: {
    inner: SpanExporter;
    logger: Logger;
    metrics?: Metrics;
    failureLogIntervalMs?: number;
  }) {
    this.inner = options.inner;
    this.logger = options.logger;
    this.exportedSpans = options.metrics?.counter(
      "cfn_tracing_exported_spans_total",
      "Spans handed to the OTLP exporter, by outcome",
      ["outcome"],
    );
    for (const outcome of ["success", "failure"]) this.exportedSpans?.inc({ outcome }, 0);
    this.exportFailures = options.metrics?.counter(
      "cfn_tracing_export_failures_total",
      "OTLP export requests that failed (spans lost)",
    );
    this.failureLogIntervalMs = options.failureLogIntervalMs ?? EXPORT_FAILURE_LOG_INTERVAL_MS;
  }

  export(spans: ReadableSpan[], resultCallback: (result: ExportResult) => void): void {
    const pending = { startedMs: Date.now() };
    this.pendingSinceMs.add(pending);
    const done = (result: ExportResult) => {
      this.pendingSinceMs.delete(pending);
      this.count(spans.length, result);
      resultCallback(result);
    };
    try {
      this.inner.export(spans, done);
    } catch (error) {
      // The OTLP exporter reports through its callback; a throw would be a bug in it, and still
      // must not end the caller (a batch processor timer).
      done({ code: ExportResultCode.FAILED, error: error as Error });
    }
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }

  /**
   * When the oldest export still waiting for its answer started (ms since the epoch), or
   * undefined. The OTLP exporter retries a refused or failed request until its timeout before it
   * reports, so a shutdown can give up while the cause is still unreported (src/obs/tracing-sdk.ts).
   */
  oldestPendingExportMs(): number | undefined {
    let oldest: number | undefined;
    for (const { startedMs } of this.pendingSinceMs)
      if (oldest === undefined || startedMs < oldest) oldest = startedMs;
    return oldest;
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush?.() ?? Promise.resolve();
  }

  private count(spanCount: number, result: ExportResult): void {
    const ok = result.code === ExportResultCode.SUCCESS;
    this.exportedSpans?.inc({ outcome: ok ? "success" : "failure" }, spanCount);
    if (ok) return;
    this.exportFailures?.inc();
    this.failuresSinceLog++;
    const now = Date.now();
    if (now - this.lastFailureLogMs < this.failureLogIntervalMs) return;
    this.logger.warn("trace export failed; spans of the failed batches are dropped", {
      error: result.error,
      failures: this.failuresSinceLog,
      spans: spanCount,
    });
    this.lastFailureLogMs = now;
    this.failuresSinceLog = 0;
  }
}

/** Counts spans that ended sampled, ahead of the batch processor (ended − exported = queued or dropped). */
export class EndedSpanCounter implements SpanProcessor {
  private readonly endedSpans: Counter<string> | undefined;

  constructor(metrics: Metrics | undefined) {
    this.endedSpans = metrics?.counter(
      "cfn_tracing_ended_spans_total",
      "Sampled spans ended in this process (queued for export)",
    );
  }

  onStart(): void {}

  onEnd(): void {
    this.endedSpans?.inc();
  }

  forceFlush(): Promise<void> {
    return Promise.resolve();
  }

  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}
