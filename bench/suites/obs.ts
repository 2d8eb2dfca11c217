// `npm run bench -- obs [--runs 7] [--spans 20000] [--agents 1000]`: the cost of observability,
// as CPU time (process.cpuUsage, steadier than wall time on a shared machine):
//   span-cpu-off        a span started and ended with tracing off (the no-op API path)
//   span-cpu-on         a span started, ended, batched and exported over OTLP/HTTP JSON to a local
//                       receiver in a child process (the receiver's CPU is not counted)
//   dashboard-cpu       one GET /v1/dashboard snapshot of a real single-node ClusterNode whose
//                       bus holds --agents inboxes (each with one message), server side
//   dashboard-core-share  that CPU over the page's poll period (which stretches with build time)
// Figures are medians over runs, with p99; the targets are this repo's own (docs/OBSERVABILITY.md):
// a 1 s dashboard poll must stay under 2 % of a core, tracing on must stay cheap per span.

import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { trace } from "@opentelemetry/api";
import { tracingSchema } from "../../src/config/tracing-schema.js";
import { startDemoCluster } from "../../src/coordination/demo-cluster.js";
import { dashboardSnapshot } from "../../src/obs/dashboard.js";
import { DASHBOARD_POLL_COST_FACTOR, DASHBOARD_POLL_INTERVAL_MS } from "../../src/obs/dashboard-page.js";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { startTracing } from "../../src/obs/tracing.js";
import { atMost, type Figure, round, type SuiteResult, stats } from "../lib.js";

function option(args: string[], name: string, fallback: number): number {
  const index = args.indexOf(name);
  return index >= 0 ? Number(args[index + 1]) : fallback;
}

/** CPU microseconds (user + system) this process spends in `work`. */
async function cpuMicros(work: () => Promise<void> | void): Promise<number> {
  const before = process.cpuUsage();
  await work();
  const used = process.cpuUsage(before);
  return used.user + used.system;
}

/** An OTLP/HTTP sink in a child process: accepts POST /v1/traces, counts spans, answers {}. */
async function startSink(): Promise<{ url: string; child: ChildProcess }> {
  const source = `
    const http = require("node:http");
    const server = http.createServer((req, res) => {
      const chunks = [];
      req.on("data", (c) => chunks.push(c));
      req.on("end", () => { res.writeHead(200, { "content-type": "application/json" }); res.end("{}"); });
    });
    server.listen(0, "127.0.0.1", () => process.stdout.write(server.address().port + "\\n"));`;
  const child = spawn(process.execPath, ["-e", source], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<number>((resolve) =>
    child.stdout?.once("data", (chunk) => resolve(Number(String(chunk).trim()))),
  );
  return { url: `http://127.0.0.1:${port}`, child };
}

function makeSpans(count: number): void {
  const tracer = trace.getTracer("cfn-bench");
  for (let index = 0; index < count; index++) {
    const span = tracer.startSpan("cfn.bench", {
      attributes: { "cfn.agent": "worker-1", "messaging.message.id": index },
    });
    span.end();
  }
}

async function spanFigures(runs: number, spans: number): Promise<Figure[]> {
  const off: number[] = [];
  for (let run = 0; run < runs; run++) off.push((await cpuMicros(() => makeSpans(spans))) / spans);
  const sink = await startSink();
  const on: number[] = [];
  try {
    for (let run = 0; run < runs; run++) {
      const tracing = await startTracing({
        config: tracingSchema.parse({
          enabled: true,
          endpoint: sink.url,
          queueSpansMax: spans,
          exportBatchSpansMax: 512,
          flushIntervalMs: 50,
        }),
        defaultServiceName: "cfn-bench",
        logger: silentLogger,
        metrics: new Metrics(),
      });
      makeSpans(200); // warm-up: JIT, the exporter's agent and connection
      await tracing.forceFlush();
      on.push(
        (await cpuMicros(async () => {
          makeSpans(spans);
          await tracing.forceFlush();
        })) / spans,
      );
      await tracing.shutdown();
    }
  } finally {
    sink.child.kill("SIGTERM");
  }
  const offStats = stats(off);
  const onStats = stats(on);
  return [
    atMost("span-cpu-off", offStats.p50, "µs/span", 1, { p99: round(offStats.p99), runs, spans }),
    atMost("span-cpu-on", onStats.p50, "µs/span", 50, { p99: round(onStats.p99), runs, spans }),
  ];
}

async function dashboardFigures(runs: number, agents: number): Promise<Figure[]> {
  const root = join("/dev/shm", `cfn-bench-obs-${randomBytes(4).toString("hex")}`);
  const metrics = new Metrics();
  const cluster = await startDemoCluster({
    workDir: join(tmpdir(), `cfn-bench-obs-${randomBytes(4).toString("hex")}`),
    bus: { root, name: "bench" },
    logger: silentLogger,
    metrics,
  });
  try {
    for (let index = 0; index < agents; index++)
      cluster.node.send("master", `worker-${index}`, { type: "task" });
    const url = `${cluster.apiUrl}/v1/dashboard`;
    for (let warm = 0; warm < 3; warm++) await (await fetch(url)).text();
    // The server and this client share the process: measure the snapshot itself (what a node
    // spends per poll: build and encode) apart from the client's fetch.
    const samples: number[] = [];
    const shares: number[] = [];
    for (let run = 0; run < runs * 5; run++) {
      let buildMs = 0;
      const cpuMs =
        (await cpuMicros(async () => {
          const snapshot = await dashboardSnapshot(cluster.node, metrics);
          JSON.stringify(snapshot);
          buildMs = snapshot.buildMs;
        })) / 1000;
      samples.push(cpuMs);
      // The page's next poll comes after max(interval, factor × build time): its CPU share.
      shares.push((100 * cpuMs) / Math.max(DASHBOARD_POLL_INTERVAL_MS, buildMs * DASHBOARD_POLL_COST_FACTOR));
    }
    const result = stats(samples);
    const share = stats(shares);
    return [
      atMost("dashboard-cpu", result.p50, "ms/poll", 20, {
        p99: round(result.p99),
        agents,
        polls: samples.length,
      }),
      atMost("dashboard-core-share", share.p50, "% of a core", 5, { p99: round(share.p99), agents }),
    ];
  } finally {
    await cluster.node.shutdown("bench");
    rmSync(root, { recursive: true, force: true });
    rmSync(cluster.dataDir, { recursive: true, force: true });
  }
}

export async function run(args: string[]): Promise<SuiteResult> {
  const runs = option(args, "--runs", 7);
  const spans = option(args, "--spans", 20_000);
  const agents = option(args, "--agents", 1000);
  const figures = [...(await spanFigures(runs, spans)), ...(await dashboardFigures(runs, agents))];
  return {
    suite: "obs",
    figures,
    context: {
      cpus: cpus().length,
      loadavg: loadavg().map((value) => round(value, 2)),
      node: process.version,
    },
  };
}
