// OpenTelemetry around cross-node delivery: a traced message (W3C `traceparent` in its headers)
// gets a `cfn.delivery.forward` span on the sending node and a `cfn.delivery.inbox_write` span on
// the owner node, both children of the message's context; its headers arrive unchanged; an
// untraced message makes no span. Real bus, spool, ledger, forwarder and receiver over the
// transport's memory twin; a real tracer provider with an in-memory exporter.

import { rmSync } from "node:fs";
import { join } from "node:path";
import { context, propagation, trace } from "@opentelemetry/api";
import { describe, expect, it } from "vitest";
import { Bus } from "../../src/bus/index.js";
import { DeliveryForwarder } from "../../src/node/delivery/forwarder.js";
import { DeliveryLedger } from "../../src/node/delivery/ledger.js";
import { DeliveryReceiver } from "../../src/node/delivery/receiver.js";
import { DeliverySpool } from "../../src/node/delivery/spool.js";
import { NodeMetrics } from "../../src/node/node-metrics.js";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { MemoryNetwork } from "../../src/transport/index.js";
import { useInMemoryTracer } from "../obs/in-memory-tracer.js";
import { startMemoryPair, wireDelivery } from "./delivery-wiring.js";
import { scratchDir, waitFor } from "./harness.js";

const { exporter, provider } = useInMemoryTracer();

describe("delivery tracing", () => {
  it("spans the forward hop and the inbox write under the message's trace context", async () => {
    const root = scratchDir("cfn-delivery-tracing-");
    const network = new MemoryNetwork();
    const metrics = new Metrics();
    const nodeMetrics = new NodeMetrics(metrics);
    const { transportA, transportB } = await startMemoryPair(network, metrics);
    const busA = new Bus({ config: { root: join(root, "busA"), name: "default" } });
    const busB = new Bus({ config: { root: join(root, "busB"), name: "default" } });
    const spool = await DeliverySpool.open({ path: join(root, "spoolA"), sync: false, logger: silentLogger });
    const ledger = DeliveryLedger.open({ dir: join(root, "ledgerB"), sync: false, fileBytesMax: 1 << 20 });
    const forwarder = new DeliveryForwarder({
      nodeId: "A",
      bus: busA,
      spool,
      transport: transportA,
      logger: silentLogger,
      metrics: nodeMetrics,
      ownerOf: (agent) => (agent === "w1" ? "B" : "A"),
      isMember: (id) => id === "A" || id === "B",
      batchMessagesMax: 50,
      inflightMessagesMax: 400,
      ackTimeoutMs: 500,
      proxyScanIntervalMs: 20,
      spoolMessagesMax: 1_000,
    });
    const receiver = new DeliveryReceiver({
      bus: busB,
      ledger,
      transport: transportB,
      logger: silentLogger,
      metrics: nodeMetrics,
      dedupWindowMessagesMax: 1_000,
    });
    wireDelivery(transportA, forwarder, transportB, () => receiver);
    await forwarder.start();
    try {
      const parent = provider.getTracer("test").startSpan("cfn.task");
      const headers: Record<string, string> = { "x-app": "kept" };
      propagation.inject(trace.setSpan(context.active(), parent), headers);
      busA.sendSync("lead", "w1", { id: "traced", type: "task", headers, payload: 1 });
      busA.sendSync("lead", "w1", { id: "plain", type: "task", payload: 2 });
      await waitFor("forward spans ended at the owner's ack", () =>
        exporter.getFinishedSpans().some((span) => span.name === "cfn.delivery.forward"),
      );
      const mailbox = busB.openMailbox("w1", { heartbeat: false, watch: false });
      const delivered = mailbox.receiveNow(10);
      mailbox.ack(delivered);
      mailbox.close();
      expect(delivered.map((delivery) => delivery.message.id)).toEqual(["traced", "plain"]);
      const { traceparent, ...rest } = delivered[0].message.headers;
      expect(traceparent).toBe(headers.traceparent);
      expect(rest["x-app"]).toBe("kept");

      const spans = exporter.getFinishedSpans().filter((span) => span.name.startsWith("cfn.delivery."));
      expect(spans.map((span) => span.name).sort()).toEqual([
        "cfn.delivery.forward",
        "cfn.delivery.inbox_write",
      ]);
      for (const span of spans) {
        expect(span.spanContext().traceId).toBe(parent.spanContext().traceId);
        expect(span.parentSpanContext?.spanId).toBe(parent.spanContext().spanId);
        expect(span.attributes["messaging.message.id"]).toBe("traced");
      }
      parent.end();
    } finally {
      receiver.close();
      await forwarder.close();
      await spool.close();
      ledger.close();
      await transportA.close();
      await transportB.close();
      busA.close();
      busB.close();
      rmSync(root, { recursive: true, force: true });
    }
  });
});
