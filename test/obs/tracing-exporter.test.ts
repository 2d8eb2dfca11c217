// The counting span exporter: its cfn_tracing_* counters exist at 0 before the first span (a series
// born at 1 is invisible to rate() and increase()), outcomes add to them, and a shutdown that gives
// up on an export still retrying against a refusing collector logs the cause before the queue.

import { trace } from "@opentelemetry/api";
import { type ExportResult, ExportResultCode } from "@opentelemetry/core";
import type { ReadableSpan, SpanExporter } from "@opentelemetry/sdk-trace-base";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config/load.js";
import { type TracingConfig, tracingSchema } from "../../src/config/tracing-schema.js";
import { isCfnError } from "../../src/errors.js";
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

/**
 * Starts tracing with `config`, ends one span, lets its batch reach the exporter, shuts down;
 * returns the warnings logged meanwhile and the metrics.
 */
async function exportOneSpanAndShutDown(config: TracingConfig) {
  const warnings: Array<{ message: string; fields?: Record<string, unknown> }> = [];
  const logger: Logger = {
    ...silentLogger,
    warn: (message, fields) => {
      warnings.push({ message, fields });
    },
    child: () => logger,
  };
  const metrics = new Metrics();
  const tracing = await startTracing({ config, defaultServiceName: "cfn-test", logger, metrics });
  trace.getTracer("cfn-test").startSpan("lost").end();
  await new Promise((resolve) => setTimeout(resolve, 100)); // the batch is handed to the exporter
  await tracing.shutdown();
  return { warnings, metrics };
}

describe("a collector that refuses connections", () => {
  it("the first warning at shutdown is the export failure and its cause, then the dropped queue", async () => {
    const port = await closedPort();
    // The OTLP exporter retries a refused request for up to exportTimeoutMs: longer than the
    // shutdown waits, so the failure would otherwise surface only after the shutdown warning.
    // The schema refuses such settings; this is the safety net for an export that still runs.
    const { warnings } = await exportOneSpanAndShutDown({
      ...tracingSchema.parse({ enabled: true, endpoint: `http://127.0.0.1:${port}`, flushIntervalMs: 10 }),
      exportTimeoutMs: 5000,
      shutdownTimeoutMs: 300,
    });
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

describe("tracing.exportTimeoutMs < tracing.shutdownTimeoutMs", () => {
  it("is refused otherwise at config load, naming both settings; the defaults keep it", () => {
    const defaults = tracingSchema.parse({});
    expect(defaults.exportTimeoutMs).toBeLessThan(defaults.shutdownTimeoutMs);
    for (const env of [
      { CFN_TRACING_EXPORT_TIMEOUT_MS: "10000" },
      { CFN_TRACING_EXPORT_TIMEOUT_MS: "2000", CFN_TRACING_SHUTDOWN_TIMEOUT_MS: "2000" },
    ]) {
      let refusal: unknown;
      try {
        loadConfig({ env });
      } catch (error) {
        refusal = error;
      }
      expect(isCfnError(refusal, "CFN_ERR_CONFIG_INVALID"), String(refusal)).toBe(true);
      expect((refusal as Error).message).toMatch(
        /tracing\.exportTimeoutMs: must be < tracing\.shutdownTimeoutMs/,
      );
    }
    // 0 asks the shutdown not to wait at all: allowed with any export timeout.
    expect(loadConfig({ env: { CFN_TRACING_SHUTDOWN_TIMEOUT_MS: "0" } }).tracing.shutdownTimeoutMs).toBe(0);
  });

  it("with the defaults, a refused collector's failure is reported before the shutdown ends, nothing left queued", async () => {
    const port = await closedPort();
    const startedMs = Date.now();
    // The exporter retries the refused request (backing off) until exportTimeoutMs.
    const { warnings: logged, metrics } = await exportOneSpanAndShutDown(
      tracingSchema.parse({ enabled: true, endpoint: `http://127.0.0.1:${port}`, flushIntervalMs: 10 }),
    );
    const warnings = logged.map((warning) => warning.message);
    // 100 ms of it before the shutdown (the span's batch handed to the exporter).
    expect(Date.now() - startedMs).toBeLessThan(100 + tracingSchema.parse({}).shutdownTimeoutMs);
    expect(warnings, warnings.join(" | ")).toContain(
      "trace export failed; spans of the failed batches are dropped",
    );
    expect(warnings.some((message) => message.includes("spans still queued"))).toBe(false);
    expect(await metrics.value("cfn_tracing_exported_spans_total", { outcome: "failure" })).toBe(1);
  }, 15_000);
});
