// `cfn demo` with tracing on: its metrics.prom carries the cfn_tracing_* counters of the demo's
// own tracer, with their final values (after the shutdown's flush), next to the demo's metrics.

import { rmSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { removeRoot, runCli, tempRoot } from "../coordination/helpers.js";
import { OtlpReceiver } from "./otlp-receiver.js";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function sampleOf(exposition: string, series: string): number {
  const escaped = series.replace(/[{}"=]/g, (char) => `\\${char}`);
  const match = exposition.match(new RegExp(`^${escaped} (\\S+)$`, "m"));
  if (!match) throw new Error(`no sample ${series} in:\n${exposition}`);
  return Number(match[1]);
}

describe("cfn demo with tracing on", () => {
  it("writes the tracer's cfn_tracing_* counters into metrics.prom", async () => {
    const otlp = await new OtlpReceiver().start();
    cleanups.push(() => otlp.close());
    const root = tempRoot();
    cleanups.push(() => removeRoot(root));
    const result = await runCli(
      [
        "--bus-root",
        root,
        "--log-level",
        "warn",
        "demo",
        "--agents",
        "4",
        "--teams",
        "2",
        "--json",
        "--keep",
      ],
      {
        env: {
          CFN_TRACING_ENABLED: "true",
          CFN_TRACING_ENDPOINT: otlp.url,
          CFN_TRACING_FLUSH_INTERVAL_MS: "50",
        },
        timeoutMs: 90_000,
      },
    );
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    const summary = JSON.parse(result.stdout);
    cleanups.push(() => rmSync(dirname(summary.metrics.prometheus), { recursive: true, force: true }));
    const exposition = await readFile(summary.metrics.prometheus, "utf8");
    expect(exposition).toMatch(/cfn_coordination_tasks_total/);
    const ended = sampleOf(exposition, "cfn_tracing_ended_spans_total");
    expect(ended).toBeGreaterThan(0);
    // Final values: every span ended in the demo was exported by the shutdown, none failed.
    expect(sampleOf(exposition, 'cfn_tracing_exported_spans_total{outcome="success"}')).toBe(ended);
    expect(sampleOf(exposition, 'cfn_tracing_exported_spans_total{outcome="failure"}')).toBe(0);
    expect(sampleOf(exposition, "cfn_tracing_export_failures_total")).toBe(0);
    expect(otlp.spans.some((span) => span.name === "cfn.round")).toBe(true);
    // One family each: the two registries' expositions share no name.
    expect(exposition.match(/^# TYPE cfn_tracing_ended_spans_total /gm)).toHaveLength(1);
  }, 120_000);
});
