// The bus's Prometheus series as a scrape sees them: labelled counters exist at 0 before the first
// event, cfn_bus_inbox_depth is counted from the inbox directories when read (so it shows other
// processes' traffic), bounded per scrape, and the JSONL overflow values add up to the counter.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  DEAD_LETTER_CAUSES,
  INBOX_DEPTH_AGENTS_PER_SCRAPE_MAX,
  OVERFLOW_REPORT_INTERVAL_MS,
  OverflowReporter,
  REDELIVERY_CAUSES,
} from "../../src/bus/bus-metrics.js";
import { isCfnError } from "../../src/errors.js";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { openTestBus, tempRoot } from "./helpers.js";

let root: string;
let cleanup: () => void;

beforeEach(() => {
  ({ root, cleanup } = tempRoot());
});

afterEach(() => {
  cleanup();
});

/** The `agent` label of every cfn_bus_inbox_depth sample, with its value. */
async function depthSeries(metrics: Metrics): Promise<Map<string, number>> {
  const data = await metrics.registry.getSingleMetric("cfn_bus_inbox_depth")!.get();
  return new Map(data.values.map((sample) => [String(sample.labels.agent), sample.value]));
}

function refuseAll(send: () => unknown, times: number): number {
  let refused = 0;
  for (let index = 0; index < times; index++) {
    try {
      send();
    } catch (error) {
      if (!isCfnError(error, "CFN_ERR_INBOX_FULL")) throw error;
      refused++;
    }
  }
  return refused;
}

function jsonlSum(path: string, name: string): number {
  return readFileSync(path, "utf8")
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line) as { name: string; value: number })
    .filter((line) => line.name === name)
    .reduce((sum, line) => sum + line.value, 0);
}

describe("bus counters before any event", () => {
  it("exposes every dead-letter reason and redelivery cause at 0, so the first event is an increase", async () => {
    const metrics = new Metrics();
    openTestBus(root, {}, { metrics }).close();
    const exposition = await metrics.exposition();
    for (const reason of DEAD_LETTER_CAUSES)
      expect(exposition).toContain(`cfn_bus_dead_letters_total{reason="${reason}"} 0`);
    for (const cause of REDELIVERY_CAUSES)
      expect(exposition).toContain(`cfn_bus_redeliveries_total{cause="${cause}"} 0`);
    expect(exposition).toMatch(/^cfn_bus_inbox_overflows_total 0$/m);
  });
});

describe("cfn_bus_inbox_depth", () => {
  it("is counted from the inboxes at scrape time: another process's sends show without any status call", async () => {
    const nodeMetrics = new Metrics();
    const node = openTestBus(root, {}, { metrics: nodeMetrics });
    // An agent process: its own bus and registry on the same directory.
    const agent = openTestBus(root, {}, { metrics: new Metrics() });
    for (let index = 0; index < 3; index++) agent.sendSync("lead", "worker", { type: "t" });
    agent.sendSync("lead", "idle", { type: "t" });
    expect(await depthSeries(nodeMetrics)).toEqual(
      new Map([
        ["idle", 1],
        ["worker", 3],
      ]),
    );
    // Not stale: the next scrape sees the inbox as it is then, claimed messages included.
    const mailbox = agent.openMailbox("worker");
    const claimed = mailbox.receiveNow(1);
    agent.sendSync("lead", "worker", { type: "t" });
    expect((await depthSeries(nodeMetrics)).get("worker")).toBe(4);
    mailbox.ack([...claimed, ...mailbox.receiveNow(10)]);
    expect((await depthSeries(nodeMetrics)).get("worker")).toBe(0);
    // A removed agent's series goes; a closed bus takes its series with it (none go stale).
    mailbox.close({ removeDirs: true });
    expect([...(await depthSeries(nodeMetrics)).keys()]).toEqual(["idle"]);
    expect(await nodeMetrics.value("cfn_bus_inbox_depth", { agent: "idle" })).toBe(1);
    node.close();
    agent.close();
    expect((await depthSeries(nodeMetrics)).size).toBe(0);
  });

  it(`reads at most ${INBOX_DEPTH_AGENTS_PER_SCRAPE_MAX} agents per scrape, rotating through the rest`, async () => {
    const metrics = new Metrics();
    const bus = openTestBus(root, {}, { metrics });
    const agents = INBOX_DEPTH_AGENTS_PER_SCRAPE_MAX + 5;
    for (let index = 0; index < agents; index++)
      bus.sendSync("lead", `a-${String(index).padStart(5, "0")}`, { type: "t" });
    const first = await depthSeries(metrics);
    expect(first.size).toBe(INBOX_DEPTH_AGENTS_PER_SCRAPE_MAX);
    expect(first.has("a-01004")).toBe(false);
    const second = await depthSeries(metrics);
    expect(second.size).toBe(agents);
    expect([...second.values()].every((depth) => depth === 1)).toBe(true);
    bus.close();
  });
});

describe("overflows in the JSONL stream", () => {
  it("100 sends into a 5-deep inbox: the counter says 95, and so do the JSONL values once the bus closes", async () => {
    const jsonlPath = join(root, "metrics.jsonl");
    const metrics = new Metrics({ jsonlPath, logger: silentLogger });
    const bus = openTestBus(root, { inboxDepthMax: 5, batchMessagesMax: 5 }, { metrics });
    const refused = refuseAll(() => bus.sendSync("lead", "worker", { type: "t" }), 100);
    expect(refused).toBe(95);
    expect(await metrics.value("cfn_bus_inbox_overflows_total")).toBe(95);
    // The first refusal is written at once, the rest are held for the rest of the second.
    expect(jsonlSum(jsonlPath, "cfn_bus_inbox_overflows_total")).toBe(1);
    bus.close();
    expect(jsonlSum(jsonlPath, "cfn_bus_inbox_overflows_total")).toBe(95);
  });

  it("refusals that stop are written when the interval ends, without a close or another refusal", async () => {
    const jsonlPath = join(root, "metrics.jsonl");
    const metrics = new Metrics({ jsonlPath, logger: silentLogger });
    const bus = openTestBus(root, { inboxDepthMax: 5, batchMessagesMax: 5 }, { metrics });
    expect(refuseAll(() => bus.sendSync("lead", "worker", { type: "t" }), 30)).toBe(25);
    expect(refuseAll(() => bus.sendSync("lead", "other", { type: "t" }), 8)).toBe(3);
    await new Promise((resolve) => setTimeout(resolve, OVERFLOW_REPORT_INTERVAL_MS + 300));
    const lines = readFileSync(jsonlPath, "utf8")
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { value: number; labels: { agent: string } });
    const byAgent = (agent: string) =>
      lines.filter((line) => line.labels.agent === agent).reduce((sum, line) => sum + line.value, 0);
    expect(byAgent("worker")).toBe(25);
    expect(byAgent("other")).toBe(3);
    expect(lines.length).toBe(4); // one line at once and one at the interval's end, per inbox
    bus.close();
    expect(jsonlSum(jsonlPath, "cfn_bus_inbox_overflows_total")).toBe(28);
  });

  it("the reporter keeps at most one line per inbox per interval and loses no count", () => {
    const reports: Array<{ agent: string; refused: number }> = [];
    const reporter = new OverflowReporter((agent, refused) => reports.push({ agent, refused }), 60_000);
    for (let index = 0; index < 1000; index++) reporter.refused("w", 2, 5);
    expect(reports).toEqual([{ agent: "w", refused: 2 }]);
    expect(reporter.pending).toBe(1998);
    reporter.close();
    expect(reports.reduce((sum, report) => sum + report.refused, 0)).toBe(2000);
    expect(reporter.pending).toBe(0);
  });
});
