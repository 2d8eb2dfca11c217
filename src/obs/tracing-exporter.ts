// The span exporter the tracing setup hands to its batch processor: the OTLP/HTTP exporter wrapped
// so that every outcome is counted and a failing collector is logged without breaking anything.
// A wrong endpoint or a collector that is down costs the spans of the failed batch, never the
// process: failures are caught here, counted in cfn_tracing_export_failures_total and logged at
// most once per `failureLogIntervalMs`, so a dead collector does not flood the log.

import { type ExportResult, ExportResultCode } from "@opentelemetry/core";
import type { ReadableSpan, SpanExporter, SpanProcessor } from "@opentelemetry/sdk-trace-base";
import type { Logger } from "./logger.js";
import type { Metrics } from "./metrics.js";

/** Longest quiet period between two log lines about failing exports. */
export const EXPORT_FAILURE_LOG_INTERVAL_MS = 60_000;

export class CountingSpanExporter implements SpanExporter {
  private readonly inner: SpanExporter;
  private readonly logger: Logger;
  private readonly metrics: Metrics | undefined;
  private readonly failureLogIntervalMs: number;
  private lastFailureLogMs = Number.NEGATIVE_INFINITY;
  private failuresSinceLog = 0;

  constructor(options: {
    inner: SpanExporter;
    logger: Logger;
    metrics?: Metrics;
    failureLogIntervalMs?: number;
  }) {
    this.inner = options.inner;
    this.logger = options.logger;
    this.metrics = options.metrics;
    this.failureLogIntervalMs = options.failureLogIntervalMs ?? EXPORT_FAILURE_LOG_INTERVAL_MS;
  }

  export(spans: ReadableSpan[], resultCallback: (result: ExportResult) => void): void {
    const done = (result: ExportResult) => {
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

  forceFlush(): Promise<void> {
    return this.inner.forceFlush?.() ?? Promise.resolve();
  }

  private count(spanCount: number, result: ExportResult): void {
    const ok = result.code === ExportResultCode.SUCCESS;
    this.metrics
      ?.counter("cfn_tracing_exported_spans_total", "Spans handed to the OTLP exporter, by outcome", [
        "outcome",
      ])
      .inc({ outcome: ok ? "success" : "failure" }, spanCount);
    if (ok) return;
    this.metrics
      ?.counter("cfn_tracing_export_failures_total", "OTLP export requests that failed (spans lost)")
      .inc();
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
  private readonly metrics: Metrics | undefined;

  constructor(metrics: Metrics | undefined) {
    this.metrics = metrics;
  }

  onStart(): void {}

  onEnd(): void {
    this.metrics
      ?.counter("cfn_tracing_ended_spans_total", "Sampled spans ended in this process (queued for export)")
      .inc();
  }

  forceFlush(): Promise<void> {
    return Promise.resolve();
  }

  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}
