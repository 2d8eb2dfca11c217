// OpenTelemetry tracing for a cfn process (node daemon, demo, `cfn agent run`): the NodeSDK with
// the W3C trace-context propagator, an OTLP/HTTP exporter (JSON encoding) behind a batch span
// processor with named limits, a parent-based ratio sampler, and resources naming the service and
// the node. Components create spans through `@opentelemetry/api` alone; this file is the SDK side
// and the only place that registers global providers. The SDK itself (src/obs/tracing-sdk.ts, a
// large module tree) is loaded only when tracing is on: every `cfn` process, a spawned agent
// among hundreds included, would otherwise pay for loading it at start.
//
// Promises: off by default (`tracing.enabled`); a wrong endpoint or a dead collector never breaks
// the process (src/obs/tracing-exporter.ts counts and logs); `shutdown()` flushes queued spans
// within `tracing.shutdownTimeoutMs` and unregisters the globals, so a process can start tracing
// again (tests do).

import type { TracingConfig } from "../config/tracing-schema.js";
import type { Logger } from "./logger.js";
import type { Metrics } from "./metrics.js";

const TRACES_PATH = "/v1/traces";

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

/** The running tracing of this process (one at a time: the SDK registers global providers). */
let active: Promise<Tracing> | undefined;

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
/**
 * Starts tracing for this process when `config.enabled`; otherwise returns a handle that does
 * nothing, and spans made through `@opentelemetry/api` stay no-ops (no cost beyond a call).
 */
export async function startTracing(options: TracingOptions): Promise<Tracing> {
  const env = options.env ?? process.env;
  // OTEL_SDK_DISABLED is the standard off switch, over any configuration (the NodeSDK honours it too).
  if (!options.config.enabled || env.OTEL_SDK_DISABLED?.trim().toLowerCase() === "true")
    return disabledTracing;
  if (active) throw new Error("startTracing: tracing is already running in this process"); // a bug
  const endpoint = tracesEndpoint(options.config, env);
  const serviceName = options.config.serviceName || env.OTEL_SERVICE_NAME || options.defaultServiceName;
  const starting = import("./tracing-sdk.js").then(({ startSdk }) =>
    startSdk(options, endpoint, serviceName, () => {
      if (active === starting) active = undefined;
    }),
  );
  active = starting;
  return starting;
}
