// OpenTelemetry tracing for a cfn process (node daemon, demo, `cfn agent run`): the NodeSDK with
// the W3C trace-context propagator, an OTLP/HTTP exporter (JSON encoding) behind a batch span
// processor with named limits, a parent-based ratio sampler, and resources naming the service and
// the node. Components create spans through `@opentelemetry/api` alone; this file is the SDK side
// and the only place that registers global providers.
//
// Promises: off by default (`tracing.enabled`); a wrong endpoint or a dead collector never breaks
// the process (src/obs/tracing-exporter.ts counts and logs); `shutdown()` flushes queued spans
// within `tracing.shutdownTimeoutMs` and unregisters the globals, so a process can start tracing
// again (tests do).

import { context, DiagLogLevel, diag, propagation, trace } from "@opentelemetry/api";
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { envDetector, resourceFromAttributes } from "@opentelemetry/resources";
import { NodeSDK } from "@opentelemetry/sdk-node";
import {
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
} from "@opentelemetry/sdk-trace-base";
import type { TracingConfig } from "../config/tracing-schema.js";
import type { Logger } from "./logger.js";
import type { Metrics } from "./metrics.js";
import { CountingSpanExporter, EndedSpanCounter } from "./tracing-exporter.js";

const TRACES_PATH = "/v1/traces";
const CFN_VERSION = "0.1.0";

export interface TracingOptions {
  config: TracingConfig;
  /** service.name when neither tracing.serviceName nor OTEL_SERVICE_NAME gives one. */
  defaultServiceName: string;
  /** service.instance.id: the node id, agent id or demo run. */
  instanceId?: string;
  /** cfn.node.id resource attribute, when the process belongs to a node. */
  nodeId?: string;
  logger: Logger;
  /** Where export outcomes are counted (the node's registry on a node). */
  metrics?: Metrics;
  env?: NodeJS.ProcessEnv;
}

export interface Tracing {
  readonly enabled: boolean;
  /** Where spans go (the effective OTLP traces URL), empty when disabled. */
  readonly endpoint: string;
  readonly serviceName: string;
  /** Exports every ended span now (tests, and before a planned exit). */
  forceFlush(): Promise<void>;
  /** Flushes within tracing.shutdownTimeoutMs and unregisters the global providers. Idempotent. */
  shutdown(): Promise<void>;
}

const disabledTracing: Tracing = {
  enabled: false,
  endpoint: "",
  serviceName: "",
  forceFlush: async () => {},
  shutdown: async () => {},
};

let active: Tracing | undefined;

/** The OTLP traces URL: tracing.endpoint (a base URL), else the standard OTEL_* variables. */
export function tracesEndpoint(config: TracingConfig, env: NodeJS.ProcessEnv = process.env): string {
  const base = config.endpoint || "";
  if (base)
    return base.replace(/\/+$/, "").endsWith(TRACES_PATH)
      ? base
      : `${base.replace(/\/+$/, "")}${TRACES_PATH}`;
  const signal = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim();
  if (signal) return signal; // the spec: a signal-specific URL is used as is
  const general = env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
  if (general) return `${general.replace(/\/+$/, "")}${TRACES_PATH}`;
  return `http://localhost:4318${TRACES_PATH}`;
}

/**
 * Starts tracing for this process when `config.enabled`; otherwise returns a handle that does
 * nothing, and spans made through `@opentelemetry/api` stay no-ops (no cost beyond a call).
 */
export function startTracing(options: TracingOptions): Tracing {
  const { config, logger } = options;
  const env = options.env ?? process.env;
  // OTEL_SDK_DISABLED is the standard off switch, over any configuration (the NodeSDK honours it too).
  if (!config.enabled || env.OTEL_SDK_DISABLED?.trim().toLowerCase() === "true") return disabledTracing;
  if (active) throw new Error("startTracing: tracing is already running in this process"); // a bug
  const log = logger.child("tracing");
  routeDiagnostics(log);
  const endpoint = tracesEndpoint(config, env);
  const serviceName = config.serviceName || env.OTEL_SERVICE_NAME || options.defaultServiceName;
  const exporter = new CountingSpanExporter({
    inner: new OTLPTraceExporter({ url: endpoint, timeoutMillis: config.exportTimeoutMs }),
    logger: log,
    metrics: options.metrics,
  });
  const attributes: Record<string, string | number> = {
    "service.version": CFN_VERSION,
    "process.pid": process.pid,
  };
  if (options.instanceId) attributes["service.instance.id"] = options.instanceId;
  if (options.nodeId) attributes["cfn.node.id"] = options.nodeId;
  const batch = new BatchSpanProcessor(exporter, {
    maxQueueSize: config.queueSpansMax,
    maxExportBatchSize: config.exportBatchSpansMax,
    scheduledDelayMillis: config.flushIntervalMs,
    exportTimeoutMillis: config.exportTimeoutMs,
  });
  const sdk = new NodeSDK({
    serviceName,
    resource: resourceFromAttributes(attributes),
    // OTEL_RESOURCE_ATTRIBUTES still adds attributes (k8s pod, deployment environment).
    resourceDetectors: [envDetector],
    textMapPropagator: new CompositePropagator({
      propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()],
    }),
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(config.sampleRatio) }),
    spanProcessors: [new EndedSpanCounter(options.metrics), batch],
    // Traces only: metrics are Prometheus (/metrics) and logs are JSON lines on stderr.
    metricReaders: [],
    logRecordProcessors: [],
  });
  sdk.start();
  let stopped: Promise<void> | undefined;
  const handle: Tracing = {
    enabled: true,
    endpoint,
    serviceName,
    // A failed export rejects the flush; it was counted and logged by the exporter already.
    forceFlush: () => batch.forceFlush().catch(() => {}),
    shutdown: () => {
      stopped ??= shutdownWithin(sdk, config.shutdownTimeoutMs, log).finally(() => {
        trace.disable();
        propagation.disable();
        context.disable();
        diag.disable();
        if (active === handle) active = undefined;
      });
      return stopped;
    },
  };
  active = handle;
  log.info("tracing started", { endpoint, serviceName, sampleRatio: config.sampleRatio });
  return handle;
}

async function shutdownWithin(sdk: NodeSDK, timeoutMs: number, log: Logger): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<"expired">((resolve) => {
    timer = setTimeout(() => resolve("expired"), timeoutMs);
    timer.unref();
  });
  try {
    const outcome = await Promise.race([sdk.shutdown().then(() => "flushed" as const), expired]);
    if (outcome === "expired")
      log.warn("tracing shutdown: spans still queued after shutdownTimeoutMs are dropped", { timeoutMs });
  } catch (error) {
    log.warn("tracing shutdown failed", { error });
  } finally {
    clearTimeout(timer);
  }
}

/** The SDK's own diagnostics (export errors, dropped spans) go to the cfn logger, warnings and up. */
function routeDiagnostics(log: Logger): void {
  diag.setLogger(
    {
      error: (message, ...args) => log.warn(`otel: ${message}`, detail(args)),
      warn: (message, ...args) => log.warn(`otel: ${message}`, detail(args)),
      info: (message, ...args) => log.debug(`otel: ${message}`, detail(args)),
      debug: () => {},
      verbose: () => {},
    },
    { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true },
  );
}

function detail(args: unknown[]): Record<string, unknown> | undefined {
  return args.length > 0
    ? { detail: args.map((arg) => (arg instanceof Error ? arg.message : arg)) }
    : undefined;
}
