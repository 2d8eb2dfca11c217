// The cross-node delivery protocol in one process, over the transport's memory twin wrapped in a
// seeded lossy link that drops, duplicates and delays (reorders) delivery frames and acks, with a
// receiver restart in the middle: every message lands exactly once, in order per sender.

import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Bus } from "../../src/bus/index.js";
import { DeliveryForwarder } from "../../src/node/delivery/forwarder.js";
import { DeliveryLedger } from "../../src/node/delivery/ledger.js";
import { DeliveryReceiver } from "../../src/node/delivery/receiver.js";
import { DeliverySpool } from "../../src/node/delivery/spool.js";
import { DELIVER_CHANNEL } from "../../src/node/delivery/wire.js";
import { NodeMetrics } from "../../src/node/node-metrics.js";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { seededRandom } from "../../src/raft/index.js";
import { MemoryNetwork, type Transport } from "../../src/transport/index.js";
import { startMemoryPair, wireDelivery } from "./delivery-wiring.js";
import { scratchDir, waitFor } from "./harness.js";

/** Wraps a transport: frames of the deliver channel are dropped, duplicated or delayed. */
function lossy(
  inner: Transport,
  random: () => number,
  rates: { drop: number; duplicate: number; delay: number },
): Transport {
  return new Proxy(inner, {
    get(target, property, receiver) {
      if (property !== "sendFrame") return Reflect.get(target, property, receiver);
      return (peer: string, channel: string, payload: unknown): boolean => {
        if (channel !== DELIVER_CHANNEL) return target.sendFrame(peer, channel, payload);
        const roll = random();
        if (roll < rates.drop) return true; // accepted and lost
        const copies = roll < rates.drop + rates.duplicate ? 2 : 1;
        for (let i = 0; i < copies; i++) {
          if (random() < rates.delay)
            setTimeout(() => target.sendFrame(peer, channel, payload), Math.floor(random() * 30));
          else target.sendFrame(peer, channel, payload);
        }
        return true;
      };
    },
  });
}

let root: string | undefined;
const closers: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  if (root) rmSync(root, { recursive: true, force: true });
  root = undefined;
});

describe("delivery protocol over a lossy link (memory transport twin)", () => {
  it("lands every message exactly once and in order despite drops, duplicates, delays and a receiver restart", async () => {
    root = scratchDir("cfn-delivery-protocol-");
    const random = seededRandom(4242);
    const network = new MemoryNetwork();
    const metrics = new Metrics();
    const nodeMetrics = new NodeMetrics(metrics);
    const rates = { drop: 0.1, duplicate: 0.1, delay: 0.2 };
    const { transportA, transportB } = await startMemoryPair(network, metrics);
    const lossyA = lossy(transportA, random, rates);
    const lossyB = lossy(transportB, random, rates);
    closers.push(
      () => transportA.close(),
      () => transportB.close(),
    );

    const busA = new Bus({ config: { root: join(root, "busA"), name: "default", inboxDepthMax: 100_000 } });
    const busB = new Bus({ config: { root: join(root, "busB"), name: "default", inboxDepthMax: 100_000 } });
    const spoolA = await DeliverySpool.open({
      path: join(root, "spoolA"),
      sync: false,
      logger: silentLogger,
    });
    closers.push(() => spoolA.close());
    const forwarder = new DeliveryForwarder({
      nodeId: "A",
      bus: busA,
      spool: spoolA,
      transport: lossyA,
      logger: silentLogger,
      metrics: nodeMetrics,
      ownerOf: (agent) => (agent.startsWith("r") ? "B" : "A"),
      isMember: (id) => id === "A" || id === "B",
      batchMessagesMax: 50,
      inflightMessagesMax: 400,
      ackTimeoutMs: 60,
      proxyScanIntervalMs: 20,
      spoolMessagesMax: 1_000_000,
    });
    closers.push(() => forwarder.close());

    // Node B's receiving side, restartable: a new ledger and receiver on the same dir. A small
    // fileBytesMax makes the ledger compact itself several times during the run.
    const openLedger = () =>
      DeliveryLedger.open({ dir: join(root as string, "ledgerB"), sync: false, fileBytesMax: 64 * 1024 });
    let ledgerB = openLedger();
    const makeReceiver = (ledger: DeliveryLedger) =>
      new DeliveryReceiver({
        bus: busB,
        ledger,
        transport: lossyB,
        logger: silentLogger,
        metrics: nodeMetrics,
        dedupWindowMessagesMax: 100_000,
      });
    let receiver = makeReceiver(ledgerB);
    wireDelivery(transportA, forwarder, transportB, () => receiver);
    await forwarder.start();

    const senders = ["s1", "s2", "s3"];
    const receivers = ["r1", "r2"];
    const sent = new Map<string, string[]>();
    let n = 0;
    const sendBurst = (count: number) => {
      for (let i = 0; i < count; i++) {
        const from = senders[n % senders.length];
        const to = receivers[(n >> 1) % receivers.length];
        const id = `m-${n}`;
        busA.sendSync(from, to, { id, type: "t", payload: { n } });
        const key = `${from}>${to}`;
        sent.set(key, [...(sent.get(key) ?? []), id]);
        n++;
      }
    };
    sendBurst(1500);
    await waitFor("half delivered", () => nodeMetrics.delivered.get().then((m) => m.values[0]?.value >= 700));

    // B restarts: the in-memory dedup window is gone; the cursor in its ledger carries on.
    receiver.close();
    await receiver.idle();
    ledgerB.close();
    ledgerB = openLedger();
    receiver = makeReceiver(ledgerB);
    receiver.recover(ledgerB.intentSenders());
    closers.push(() => ledgerB.close());
    sendBurst(1500);

    const got = new Map<string, string[]>();
    const mailboxes = receivers.map((agent) => busB.openMailbox(agent, { heartbeat: false, watch: false }));
    await waitFor(
      "every message delivered",
      async () => {
        for (const mailbox of mailboxes) {
          for (;;) {
            const deliveries = mailbox.receiveNow(500);
            if (deliveries.length === 0) break;
            for (const delivery of deliveries) {
              const key = `${delivery.message.from}>${delivery.message.to}`;
              got.set(key, [...(got.get(key) ?? []), delivery.message.id]);
            }
            mailbox.ack(deliveries);
          }
        }
        return [...got.values()].reduce((sum, ids) => sum + ids.length, 0) >= n;
      },
      30_000,
    );
    await new Promise((resolve) => setTimeout(resolve, 300)); // late duplicates would land now
    for (const mailbox of mailboxes) {
      const late = mailbox.receiveNow(500);
      for (const delivery of late) got.set("late", [...(got.get("late") ?? []), delivery.message.id]);
      mailbox.close();
    }
    expect(got.get("late")).toBeUndefined();
    // Exactly once and in order, per sender → receiver.
    expect(new Map([...got.entries()].sort())).toEqual(new Map([...sent.entries()].sort()));
    // The link really was lossy: the protocol had work to do.
    expect((await nodeMetrics.retransmits.get()).values[0]?.value ?? 0).toBeGreaterThan(0);
    const duplicates = (await nodeMetrics.duplicates.get()).values.reduce(
      (sum, value) => sum + value.value,
      0,
    );
    expect(duplicates).toBeGreaterThan(0);
    receiver.close();
    busA.close();
    busB.close();
  });
});
