// The receiving node's message-id window (src/node/delivery/recent-ids.ts): a message that comes
// again under another sequence — a sender whose spool was recreated re-sends it on a new stream —
// is dropped while its (agent, id) pair is in the window and counted as a duplicate; once the
// window has moved past it, the same id is a new message again.

import { readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Bus } from "../../src/bus/index.js";
import { DeliveryLedger } from "../../src/node/delivery/ledger.js";
import { DeliveryReceiver } from "../../src/node/delivery/receiver.js";
import type { WireMessage } from "../../src/node/delivery/wire.js";
import { NodeMetrics } from "../../src/node/node-metrics.js";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { MemoryNetwork } from "../../src/transport/index.js";
import { startMemoryPair } from "./delivery-wiring.js";
import { scratchDir } from "./harness.js";

let root: string | undefined;
const closers: (() => unknown)[] = [];

afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  if (root) rmSync(root, { recursive: true, force: true });
  root = undefined;
});

const message = (id: string, to = "w1"): WireMessage => ({
  id,
  from: "s1",
  to,
  type: "t",
  priority: "normal",
  headers: {},
  payload: { id },
  ts: Date.now() * 1000,
});

describe("delivery receiver: message-id dedup window", () => {
  it("drops a re-sent id inside the window and takes it again once the window moved past it", async () => {
    root = scratchDir("cfn-delivery-dedup-");
    const metrics = new Metrics();
    const nodeMetrics = new NodeMetrics(metrics);
    const { transportA, transportB } = await startMemoryPair(new MemoryNetwork(), metrics);
    closers.push(
      () => transportA.close(),
      () => transportB.close(),
    );
    const bus = new Bus({ config: { root: join(root, "bus"), name: "default", inboxDepthMax: 1000 } });
    const ledger = DeliveryLedger.open({ dir: join(root, "ledger"), sync: false, fileBytesMax: 1 << 20 });
    closers.push(() => ledger.close());
    const receiver = new DeliveryReceiver({
      bus,
      ledger,
      transport: transportB,
      logger: silentLogger,
      metrics: nodeMetrics,
      dedupWindowMessagesMax: 3,
    });
    const inbox = () => {
      const mailbox = bus.openMailbox("w1", { heartbeat: false, watch: false });
      try {
        const ids: string[] = [];
        for (;;) {
          const deliveries = mailbox.receiveNow(100);
          if (deliveries.length === 0) return ids;
          ids.push(...deliveries.map((delivery) => delivery.message.id));
          mailbox.ack(deliveries);
        }
      } finally {
        mailbox.close();
      }
    };
    const dropped = async () =>
      (await nodeMetrics.duplicates.get()).values
        .filter((value) => value.labels.reason === "message_id")
        .reduce((sum, value) => sum + value.value, 0);

    receiver.handle({ t: "d", s: "stream-1", f: 1, k: 0, m: [message("a"), message("b")] }, "A");
    expect(inbox()).toEqual(["a", "b"]);
    // The sender's spool was recreated: a new stream re-sends "b" and then "c".
    receiver.handle({ t: "d", s: "stream-2", f: 1, k: 0, m: [message("b"), message("c")] }, "A");
    expect(inbox()).toEqual(["c"]);
    expect(await dropped()).toBe(1);
    // The same id for another agent is another message.
    receiver.handle({ t: "d", s: "stream-2", f: 3, k: 0, m: [message("c", "w2")] }, "A");
    expect(readdirSync(bus.layout.agent("w2").inbox)).toHaveLength(1);
    // Window of 3: (w1,a) (w1,b) (w1,c) (w2,c) — "a" has left it and is taken again.
    receiver.handle({ t: "d", s: "stream-3", f: 1, k: 0, m: [message("a"), message("c")] }, "A");
    expect(inbox()).toEqual(["a"]);
    expect(await dropped()).toBe(2);
  });
});
