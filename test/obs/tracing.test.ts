// Tracing against a real OTLP/HTTP receiver (test/obs/otlp-receiver.ts): spans arrive with their
// parent/child links and resources, the sampler follows a remote parent, a dead collector is
// counted and harmless, and a trace context put into a bus message's headers continues in
// another process. The child process runs the compiled code (dist/): build first.

import { existsSync } from "node:fs";
import { join } from "node:path";
import { context, propagation, ROOT_CONTEXT, trace } from "@opentelemetry/api";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { Bus } from "../../src/bus/index.js";
import { loadConfig } from "../../src/config/load.js";
import { type TracingConfig, tracingSchema } from "../../src/config/tracing-schema.js";
import { isCfnError } from "../../src/errors.js";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { contextFromHeaders, traceHeaders } from "../../src/obs/trace-headers.js";
import { startTracing, type Tracing, tracesEndpoint } from "../../src/obs/tracing.js";
import { REPO, start, tempRoot } from "../bus/helpers.js";
import { closedPort, OtlpReceiver } from "./otlp-receiver.js";

const RECEIVER_SCRIPT = join(REPO, "test", "obs", "fixtures", "bus-trace-receiver.mjs");
const cleanups: Array<() => Promise<void> | void> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

beforeAll(() => {
  if (!existsSync(join(REPO, "dist", "src", "obs", "tracing.js")))
    throw new Error("dist/src/obs/tracing.js is missing: run npm run build first");
});

function tracingConfig(settings: Partial<TracingConfig>): TracingConfig {
  return tracingSchema.parse({ enabled: true, flushIntervalMs: 50, ...settings });
}

async function receiver(): Promise<OtlpReceiver> {
  const started = await new OtlpReceiver().start();
  cleanups.push(() => started.close());
  return started;
}

async function startTest(config: TracingConfig, metrics?: Metrics): Promise<Tracing> {
  const tracing = await startTracing({
    config,
    defaultServiceName: "cfn-test",
    instanceId: "n1",
    nodeId: "n1",
    logger: silentLogger,
    metrics,
  });
  cleanups.push(() => tracing.shutdown());
  return tracing;
}

describe("tracing", () => {
  it("exports spans over OTLP/HTTP JSON with parent/child links and the node's resource", async () => {
    const otlp = await receiver();
    const metrics = new Metrics();
    const tracing = await startTest(tracingConfig({ endpoint: otlp.url }), metrics);
    expect(tracing.endpoint).toBe(`${otlp.url}/v1/traces`);
    const tracer = trace.getTracer("cfn-test");
    tracer.startActiveSpan("cfn.round", (round) => {
      tracer.startActiveSpan("cfn.team", (team) => {
        tracer.startSpan("cfn.task", { attributes: { "cfn.task.id": "t-1" } }).end();
        team.end();
      });
      round.end();
    });
    await tracing.forceFlush();
    const spans = await otlp.waitFor((received) => received.length >= 3);
    expect(otlp.contentTypes.every((type) => type.startsWith("application/json"))).toBe(true);
    const byName = new Map(spans.map((span) => [span.name, span]));
    const [round, team, task] = ["cfn.round", "cfn.team", "cfn.task"].map((name) => byName.get(name));
    expect(round?.parentSpanId).toBe("");
    expect(team?.parentSpanId).toBe(round?.spanId);
    expect(task?.parentSpanId).toBe(team?.spanId);
    expect(new Set(spans.map((span) => span.traceId)).size).toBe(1);
    expect(task?.attributes["cfn.task.id"]).toBe("t-1");
    expect(round?.resource["service.name"]).toBe("cfn-test");
    expect(round?.resource["cfn.node.id"]).toBe("n1");
    expect(round?.resource["service.instance.id"]).toBe("n1");
    expect(await metrics.value("cfn_tracing_exported_spans_total", { outcome: "success" })).toBe(3);
    expect(await metrics.value("cfn_tracing_ended_spans_total")).toBe(3);
  });

  it("samples new traces by ratio but follows a remote parent's decision", async () => {
    const otlp = await receiver();
    const tracing = await startTest(tracingConfig({ endpoint: otlp.url, sampleRatio: 0 }));
    const tracer = trace.getTracer("cfn-test");
    tracer.startSpan("unsampled-root").end();
    const sampledParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const remote = contextFromHeaders({ traceparent: sampledParent });
    tracer.startSpan("child-of-sampled", {}, remote).end();
    await tracing.forceFlush();
    const spans = await otlp.waitFor((received) => received.length >= 1);
    expect(spans.map((span) => span.name)).toEqual(["child-of-sampled"]);
    expect(spans[0].traceId).toBe("0af7651916cd43dd8448eb211c80319c");
    expect(spans[0].parentSpanId).toBe("b7ad6b7169203331");
  });

  it("a dead collector is counted and logged, never thrown, and the process keeps tracing", async () => {
    const port = await closedPort();
    const metrics = new Metrics();
    const lines: string[] = [];
    const tracing = await startTracing({
      config: tracingConfig({ endpoint: `http://127.0.0.1:${port}`, exportTimeoutMs: 500 }),
      defaultServiceName: "cfn-test",
      logger: {
        ...silentLogger,
        child: () => ({ ...silentLogger, warn: (message: string) => lines.push(message) }),
      } as typeof silentLogger,
      metrics,
    });
    cleanups.push(() => tracing.shutdown());
    trace.getTracer("cfn-test").startSpan("lost").end();
    await tracing.forceFlush();
    expect(await metrics.value("cfn_tracing_export_failures_total")).toBeGreaterThanOrEqual(1);
    expect(await metrics.value("cfn_tracing_exported_spans_total", { outcome: "failure" })).toBe(1);
    expect(lines.some((line) => line.includes("trace export failed"))).toBe(true);
    // Still usable: a later span goes through the same path without an exception.
    trace.getTracer("cfn-test").startSpan("after").end();
    await tracing.forceFlush();
    await tracing.shutdown();
  });

  it("shutdown unregisters the SDK: spans are no-ops again and tracing can start anew", async () => {
    const otlp = await receiver();
    const first = await startTest(tracingConfig({ endpoint: otlp.url }));
    await first.shutdown();
    const span = trace.getTracer("cfn-test").startSpan("after-shutdown");
    expect(span.isRecording()).toBe(false);
    span.end();
    expect(traceHeaders(trace.setSpan(ROOT_CONTEXT, span))).toEqual({});
    const second = await startTest(tracingConfig({ endpoint: otlp.url }));
    trace.getTracer("cfn-test").startSpan("second-run").end();
    await second.forceFlush();
    const spans = await otlp.waitFor((received) => received.length >= 1);
    expect(spans.map((received) => received.name)).toEqual(["second-run"]);
  });

  it("a trace context in a bus message's headers continues in another process", async () => {
    const otlp = await receiver();
    const tracing = await startTest(tracingConfig({ endpoint: otlp.url }));
    const { root, cleanup } = tempRoot();
    cleanups.push(cleanup);
    const bus = new Bus({ config: { root, name: "trace" } });
    cleanups.push(() => bus.close());
    const child = start(process.execPath, [RECEIVER_SCRIPT, root, "trace", "worker-1", otlp.url]);
    const send = trace.getTracer("cfn-test").startSpan("send");
    const headers = traceHeaders(trace.setSpan(context.active(), send));
    expect(headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    bus.sendSync("master", "worker-1", { type: "task", payload: { n: 1 }, headers });
    send.end();
    const { code, stdout, stderr } = await child;
    expect(code, stderr).toBe(0);
    const seen = JSON.parse(stdout.trim()) as { traceId: string; spanId: string; pid: number };
    await tracing.forceFlush();
    const spans = await otlp.waitFor((received) => received.length >= 2);
    const sent = spans.find((span) => span.name === "send");
    const received = spans.find((span) => span.name === "receive");
    expect(received?.traceId).toBe(send.spanContext().traceId);
    expect(received?.parentSpanId).toBe(send.spanContext().spanId);
    expect(received?.spanId).toBe(seen.spanId);
    expect(sent?.resource["service.name"]).toBe("cfn-test");
    expect(received?.resource["service.name"]).toBe("bus-trace-receiver");
    expect(received?.resource["process.pid"]).toBe(seen.pid);
  });
});

describe("tracing settings", () => {
  it("are off by default, read from CFN_TRACING_* and validated", () => {
    expect(loadConfig({ env: {} }).tracing.enabled).toBe(false);
    const config = loadConfig({
      env: {
        CFN_TRACING_ENABLED: "true",
        CFN_TRACING_ENDPOINT: "http://jaeger:4318",
        CFN_TRACING_SAMPLE_RATIO: "0.25",
      },
    });
    expect(config.tracing).toMatchObject({
      enabled: true,
      endpoint: "http://jaeger:4318",
      sampleRatio: 0.25,
    });
    const refused = (env: NodeJS.ProcessEnv) => {
      try {
        loadConfig({ env });
      } catch (error) {
        return isCfnError(error, "CFN_ERR_CONFIG_INVALID") ? (error as Error).message : "other error";
      }
      return "accepted";
    };
    expect(refused({ CFN_TRACING_SAMPLE_RATIO: "1.5" })).toContain("tracing.sampleRatio");
    expect(refused({ CFN_TRACING_ENDPOINT: "jaeger:4318" })).toContain("tracing.endpoint");
    expect(
      refused({ CFN_TRACING_QUEUE_SPANS_MAX: "100", CFN_TRACING_EXPORT_BATCH_SPANS_MAX: "200" }),
    ).toContain("tracing.exportBatchSpansMax");
  });

  it("the endpoint honours the standard OTEL_EXPORTER_OTLP_* variables when tracing.endpoint is empty", () => {
    const config = tracingSchema.parse({});
    expect(tracesEndpoint(config, {})).toBe("http://localhost:4318/v1/traces");
    expect(tracesEndpoint(config, { OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318/" })).toBe(
      "http://collector:4318/v1/traces",
    );
    expect(
      tracesEndpoint(config, {
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://other:9999/custom",
      }),
    ).toBe("http://other:9999/custom");
    expect(tracesEndpoint({ ...config, endpoint: "http://jaeger:4318/v1/traces" }, {})).toBe(
      "http://jaeger:4318/v1/traces",
    );
  });

  it("OTEL_SDK_DISABLED=true keeps tracing off whatever the settings say", async () => {
    const tracing = await startTracing({
      config: tracingConfig({}),
      defaultServiceName: "cfn-test",
      logger: silentLogger,
      env: { OTEL_SDK_DISABLED: "true" },
    });
    expect(tracing.enabled).toBe(false);
    expect(trace.getTracer("cfn-test").startSpan("off").isRecording()).toBe(false);
  });

  it("propagation is inert while tracing is off", () => {
    expect(propagation.fields()).toEqual([]);
    expect(traceHeaders()).toEqual({});
  });
});
