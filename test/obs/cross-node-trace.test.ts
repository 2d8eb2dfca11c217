// Tracing in real node daemons (`cfn node start` with CFN_TRACING_*): a message sent on one node's
// bus with a W3C traceparent header to an agent on another node yields the forward span on the
// sending node and the inbox-write span on the owner node, both in the sender's trace, exported by
// two processes to one OTLP receiver. The flush interval is set far beyond the test, so the spans
// can only arrive through the flush at graceful shutdown (SIGTERM).

import { randomBytes } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { api, TestCluster, tryStatus, waitFor } from "../node/harness.js";
import { OtlpReceiver } from "./otlp-receiver.js";

let cluster: TestCluster | undefined;
let otlp: OtlpReceiver | undefined;

afterEach(async () => {
  await cluster?.stop();
  await otlp?.close();
  cluster = undefined;
  otlp = undefined;
});

describe("tracing across node processes", () => {
  it("one trace: forward span on the sender's node, inbox-write span on the owner's, flushed at SIGTERM", async () => {
    otlp = await new OtlpReceiver().start();
    cluster = await TestCluster.create(2, "cfn-obs-trace-");
    const env = {
      CFN_TRACING_ENABLED: "true",
      CFN_TRACING_ENDPOINT: otlp.url,
      CFN_TRACING_FLUSH_INTERVAL_MS: "600000",
    };
    const [n1, n2] = cluster.nodes;
    await Promise.all(cluster.nodes.map((node) => node.start(cluster?.peerFlags(node) ?? [], env)));
    await cluster.waitReady(cluster.nodes);
    const registered = await api(n2.api, "POST", "/v1/agents", { agent: "a2", team: null });
    expect(registered.status).toBe(200);
    await waitFor("a2 routed on n1", async () => {
      const status = await tryStatus(n1);
      return (status?.agents ?? []).some((agent: { id: string }) => agent.id === "a2");
    });

    const traceId = randomBytes(16).toString("hex");
    const senderSpanId = randomBytes(8).toString("hex");
    const bus = n1.bus();
    const [id] = bus.sendSync("a1", "a2", {
      type: "task",
      headers: { traceparent: `00-${traceId}-${senderSpanId}-01` },
    }).ids;
    bus.close();
    const inbox = n2.bus().openMailbox("a2");
    const delivered = await waitFor("the message in a2's inbox on n2", async () => {
      const deliveries = await inbox.receive({ timeoutMs: 200, max: 10 });
      inbox.ack(deliveries);
      return deliveries.find((delivery) => delivery.message.id === id);
    });
    inbox.close();
    expect(delivered.message.headers?.traceparent).toBe(`00-${traceId}-${senderSpanId}-01`);

    // Spans ended in both daemons but wait in their batch queues: nothing was exported yet. The
    // forward span ends at the owner's ack, which can reach n1 just after the inbox write: wait.
    await waitFor("the forward span ended on n1", async () => {
      const metrics = await fetch(`${n1.api}/metrics`).then((response) => response.text());
      return /^cfn_tracing_ended_spans_total [1-9]/m.test(metrics);
    });
    expect(otlp.spans.filter((span) => span.traceId === traceId)).toEqual([]);

    for (const node of cluster.nodes) node.signal("SIGTERM");
    for (const node of cluster.nodes) expect(await node.waitExit(30_000), node.stderr).toBe(0);
    const spans = await otlp.waitFor(
      (received) =>
        received.some((span) => span.traceId === traceId && span.name === "cfn.delivery.forward") &&
        received.some((span) => span.traceId === traceId && span.name === "cfn.delivery.inbox_write"),
    );
    const forward = spans.find((span) => span.traceId === traceId && span.name === "cfn.delivery.forward");
    const write = spans.find((span) => span.traceId === traceId && span.name === "cfn.delivery.inbox_write");
    expect(forward?.parentSpanId).toBe(senderSpanId);
    expect(write?.parentSpanId).toBe(senderSpanId);
    expect(forward?.resource).toMatchObject({ "service.name": "cfn-node", "cfn.node.id": "n1" });
    expect(write?.resource).toMatchObject({ "service.name": "cfn-node", "cfn.node.id": "n2" });
    expect(forward?.attributes["messaging.message.id"]).toBe(id);
    expect(write?.attributes["messaging.message.id"]).toBe(id);
    expect(write?.attributes["cfn.via"]).toBe("n1"); // the sending node, not its lane's key
  });
});
