// The `tracing` settings: OpenTelemetry spans exported over OTLP/HTTP (src/obs/tracing.ts). Off by
// default; the batch span processor's queue, batch and intervals are named limits validated here.
// The standard OTEL_EXPORTER_OTLP_* variables still apply when `tracing.endpoint` is empty.

import { z } from "zod";

const int = (min: number, max: number) => z.number().int().min(min).max(max);

export const tracingSchema = z
  .object({
    enabled: z
      .boolean()
      .default(false)
      .describe("Export OpenTelemetry spans (node daemon, demo, cfn agent run)."),
    endpoint: z
      .string()
      .regex(/^(https?:\/\/\S+)?$/, "empty or an http(s):// URL")
      .default("")
      .describe(
        "OTLP/HTTP base URL, e.g. http://jaeger:4318 (/v1/traces is appended); empty uses OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT or http://localhost:4318.",
      ),
    serviceName: z
      .string()
      .max(128)
      .default("")
      .describe("service.name of the spans; empty: OTEL_SERVICE_NAME or cfn-node, cfn-demo, cfn-agent."),
    sampleRatio: z
      .number()
      .min(0)
      .max(1)
      .default(1)
      .describe("Share of new traces recorded (0 … 1); a child follows its parent's decision."),
    queueSpansMax: int(1, 1_000_000)
      .default(4096)
      .describe("Ended spans held for export; further spans are dropped (counted) until room returns."),
    exportBatchSpansMax: int(1, 100_000)
      .default(512)
      .describe("Largest number of spans in one export request."),
    flushIntervalMs: int(10, 600_000)
      .default(1000)
      .describe("Longest time an ended span waits before export."),
    exportTimeoutMs: int(100, 600_000)
      .default(3000)
      .describe(
        "Deadline of one export request (retries of a refused one included); < tracing.shutdownTimeoutMs.",
      ),
    shutdownTimeoutMs: int(0, 600_000)
      .default(5000)
      .describe(
        "Longest a graceful shutdown waits to flush the spans still queued; 0 does not wait (no export failure is reported then).",
      ),
  })
  .strict()
  .superRefine((tracing, ctx) => {
    if (tracing.exportBatchSpansMax > tracing.queueSpansMax) {
      ctx.addIssue({
        code: "custom",
        path: ["exportBatchSpansMax"],
        message: `must be ≤ tracing.queueSpansMax (${tracing.queueSpansMax}): a batch is taken from the queue`,
      });
    }
    // The OTLP exporter reports a refused or failing request only when its timeout ends: a shutdown
    // that gives up sooner drops the batch without saying why. 0 asks for no wait at all.
    if (tracing.shutdownTimeoutMs > 0 && tracing.exportTimeoutMs >= tracing.shutdownTimeoutMs) {
      ctx.addIssue({
        code: "custom",
        path: ["exportTimeoutMs"],
        message: `must be < tracing.shutdownTimeoutMs (${tracing.shutdownTimeoutMs}): an export still retrying when the shutdown gives up is dropped without its failure being reported`,
      });
    }
  });

export type TracingConfig = z.infer<typeof tracingSchema>;
