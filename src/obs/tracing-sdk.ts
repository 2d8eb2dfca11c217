// The OpenTelemetry SDK side of src/obs/tracing.ts, loaded only when tracing is on: the NodeSDK
// with the W3C trace-context (and baggage) propagator, the OTLP/HTTP exporter (JSON) wrapped to
// count outcomes (src/obs/tracing-exporter.ts), a batch span processor with the tracing.* limits,
// a parent-based ratio sampler and resources naming the service, the instance and the node.

import { connect } from "node:net";
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
import type { Logger } from "./logger.js";
import type { Tracing, TracingOptions } from "./tracing.js";
import { CountingSpanExporter, EndedSpanCounter } from "./tracing-exporter.js";

const CFN_VERSION = "0.1.0";

/** Longest a shutdown that gave up on a pending export spends finding out why (one TCP connect). */
export const COLLECTOR_PROBE_TIMEOUT_MS = 500;

/** Builds and starts the NodeSDK; `onStopped` runs once it is shut down and unregistered. */
export function startSdk(
  options: TracingOptions,
  endpoint: string,
  serviceName: string,
  onStopped: () => void,
): Tracing {
  const { config, logger } = options;
  const log = logger.child("tracing");
  routeDiagnostics(log);
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
      stopped ??= shutdownWithin(sdk, config.shutdownTimeoutMs, log, exporter, endpoint).finally(() => {
        trace.disable();
        propagation.disable();
        context.disable();
        diag.disable();
        onStopped();
      });
      return stopped;
    },
  };
  log.info("tracing started", { endpoint, serviceName, sampleRatio: config.sampleRatio });
  return handle;
}

async function shutdownWithin(
  sdk: NodeSDK,
  timeoutMs: number,
  log: Logger,
  exporter: CountingSpanExporter,
  endpoint: string,
): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<"expired">((resolve) => {
    timer = setTimeout(() => resolve("expired"), timeoutMs);
    timer.unref();
  });
  try {
    const outcome = await Promise.race([sdk.shutdown().then(() => "flushed" as const), expired]);
    if (outcome === "expired") {
      // An export still retrying has not reported its failure yet: say why first, or the only
      // line left would blame the queue.
      const pendingSinceMs = exporter.oldestPendingExportMs();
      if (pendingSinceMs !== undefined)
        log.warn("trace export failed: the collector did not answer before shutdown", {
          endpoint,
          pendingMs: Date.now() - pendingSinceMs,
          error: await probeCollector(endpoint, COLLECTOR_PROBE_TIMEOUT_MS),
        });
      log.warn("tracing shutdown: spans still queued after shutdownTimeoutMs are dropped", { timeoutMs });
    }
  } catch (error) {
    log.warn("tracing shutdown failed", { error });
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Why an OTLP endpoint does not answer, as far as one TCP connect tells: the connect error
 * ("connect ECONNREFUSED 127.0.0.1:4318", "getaddrinfo ENOTFOUND …"), a connect timeout, or that
 * it accepts connections (then the collector is slow or answers with errors).
 */
export function probeCollector(endpoint: string, timeoutMs: number): Promise<string> {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    return Promise.resolve(`${endpoint} is not a URL`);
  }
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = Number(url.port) || (url.protocol === "https:" ? 443 : 80);
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const finish = (cause: string) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(cause);
    };
    const timer = setTimeout(
      () => finish(`no TCP connection to ${host}:${port} within ${timeoutMs} ms`),
      timeoutMs,
    );
    timer.unref();
    socket.once("connect", () =>
      finish(
        `${host}:${port} accepts connections but has not answered the export (slow, or answering errors)`,
      ),
    );
    socket.once("error", (error) => finish(error.message));
  });
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
