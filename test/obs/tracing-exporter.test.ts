// The counting span exporter: its cfn_tracing_* counters exist at 0 before the first span (a series
// born at 1 is invisible to rate() and increase()), outcomes add to them, and a shutdown that gives
// up on an export still retrying against a refusing collector logs the cause before the queue.

import { trace } from "@opentelemetry/api";
import { type ExportResult, ExportResultCode } from "@opentelemetry/core";
import type { ReadableSpan, SpanExporter } from "@opentelemetry/sdk-trace-base";
import { describe, expect, it } from "vitest";
import { tracingSchema } from "../../src/config/tracing-schema.js";
import { type Logger, silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { startTracing } from "../../src/obs/tracing.js";
import { CountingSpanExporter, EndedSpanCounter } from "../../src/obs/tracing-exporter.js";
import { probeCollector } from "../../src/obs/tracing-sdk.js";
import { closedPort } from "./otlp-receiver.js";

/** An exporter that answers every batch with `code`. */
function answering(code: ExportResultCode): SpanExporter {
  return {
    export: (_spans: ReadableSpan[], done: (result: ExportResult) => void) =>
      done({ code, error: code === ExportResultCode.FAILED ? new Error("refused") : undefined }),
    shutdown: () => Promise.resolve(),
  };
}

describe("cfn_tracing_* counters", () => {
  it("exist at 0 from the start, every outcome included", async () => {
    const metrics = new Metrics();
    new CountingSpanExporter({ inner: answering(ExportResultCode.SUCCESS), logger: silentLogger, metrics });
    new EndedSpanCounter(metrics);
    const exposition = await metrics.exposition();
    expect(exposition).toMatch(/^cfn_tracing_exported_spans_total\{outcome="success"\} 0$/m);
    expect(exposition).toMatch(/^cfn_tracing_exported_spans_total\{outcome="failure"\} 0$/m);
    expect(exposition).toMatch(/^cfn_tracing_export_failures_total 0$/m);
    expect(exposition).toMatch(/^cfn_tracing_ended_spans_total 0$/m);
  });

  it("count spans by outcome and failed requests", async () => {
    const metrics = new Metrics();
    const failing = new CountingSpanExporter({
      inner: answering(ExportResultCode.FAILED),
      logger: silentLogger,
      metrics,
    });
    const spans = [{}, {}] as ReadableSpan[];
    failing.export(spans, () => {});
    failing.export(spans, () => {});
    expect(await metrics.value("cfn_tracing_exported_spans_total", { outcome: "failure" })).toBe(4);
    expect(await metrics.value("cfn_tracing_exported_spans_total", { outcome: "success" })).toBe(0);
    expect(await metrics.value("cfn_tracing_export_failures_total")).toBe(2);
  });
});

describe("a collector that refuses connections", () => {
  it("the first warning at shutdown is the export failure and its cause, then the dropped queue", async () => {
    const port = await closedPort();
    const warnings: Array<{ message: string; fields?: Record<string, unknown> }> = [];
    const logger: Logger = {
      ...silentLogger,
      warn: (message, fields) => {
        warnings.push({ message, fields });
      },
      child: () => logger,
    };
    const metrics = new Metrics();
    const tracing = await startTracing({
      // The OTLP exporter retries a refused request for up to exportTimeoutMs: longer than the
      // shutdown waits, so the failure would otherwise surface only after the shutdown warning.
      config: tracingSchema.parse({
        enabled: true,
        endpoint: `http://127.0.0.1:${port}`,
        flushIntervalMs: 10,
        exportTimeoutMs: 5000,
        shutdownTimeoutMs: 300,
      }),
      defaultServiceName: "cfn-test",
      logger,
      metrics,
    });
    trace.getTracer("cfn-test").startSpan("lost").end();
    await new Promise((resolve) => setTimeout(resolve, 100)); // the batch is handed to the exporter
    await tracing.shutdown();
    const messages = warnings.map((warning) => warning.message);
    const failure = messages.findIndex((message) => message.startsWith("trace export failed"));
    const queued = messages.findIndex((message) => message.includes("spans still queued"));
    expect(failure, messages.join(" | ")).toBeGreaterThanOrEqual(0);
    expect(queued).toBeGreaterThan(failure);
    expect(String(warnings[failure].fields?.error)).toContain("ECONNREFUSED");
    expect(warnings[failure].fields?.endpoint).toBe(`http://127.0.0.1:${port}/v1/traces`);
  });

  it("the probe names the connect error, or says the collector accepts connections", async () => {
    const port = await closedPort();
    expect(await probeCollector(`http://127.0.0.1:${port}/v1/traces`, 500)).toContain("ECONNREFUSED");
    expect(await probeCollector("not a url", 500)).toContain("is not a URL");
  });
});
