// A full inbox on the receiving node (src/node/delivery/receiver.ts): the sender's stream is held
// at the blocked sequence. Frames behind it are dropped without a resync each (each resync made
// the sender rewind its whole window: a storm of resends and ledger intents), the inbox is polled,
// and once it has room one resync asks the sender to go on. End to end, nothing is lost or
// duplicated and the order holds.

import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Bus } from "../../src/bus/index.js";
import { DeliveryForwarder } from "../../src/node/delivery/forwarder.js";
import { DeliveryLedger } from "../../src/node/delivery/ledger.js";
import { InboxPark, parkDirOf } from "../../src/node/delivery/park.js";
import { DeliveryReceiver } from "../../src/node/delivery/receiver.js";
import { DeliverySpool } from "../../src/node/delivery/spool.js";
import { laneOf, type WireMessage } from "../../src/node/delivery/wire.js";
import { NodeMetrics } from "../../src/node/node-metrics.js";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { MemoryNetwork } from "../../src/transport/index.js";
import { recordingReceiver, startMemoryPair, wireDelivery } from "./delivery-wiring.js";
import { perTestScratch, waitFor } from "./harness.js";

const { scratch, cleanups } = perTestScratch("cfn-delivery-full-");

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function message(n: number, to = "r1"): WireMessage {
  return { id: `m${n}`, from: "s1", to, type: "t", priority: "normal", headers: {}, payload: n, ts: 1 };
}

/** Ids in an agent's inbox, in the order a consumer receives them. */
function receiveAll(bus: Bus, agent: string): string[] {
  const mailbox = bus.openMailbox(agent, { heartbeat: false, watch: false });
  try {
    const ids: string[] = [];
    for (;;) {
      const deliveries = mailbox.receiveNow(100);
      if (deliveries.length === 0) return ids;
      for (const delivery of deliveries) ids.push(delivery.message.id);
      mailbox.ack(deliveries);
    }
  } finally {
    mailbox.close();
  }
}

/** A counter's value, summed over its labels. */
async function total(counter: { get(): Promise<{ values: { value: number }[] }> }): Promise<number> {
  return (await counter.get()).values.reduce((sum, entry) => sum + entry.value, 0);
}

function ledgerBytes(dir: string): number {
  return readdirSync(dir).reduce((sum, name) => sum + statSync(join(dir, name)).size, 0);
}

/** A receiver on its own bus (inboxes of `inboxDepthMax`) whose transport records what it sends. */
function receiverOnBus(root: string, inboxDepthMax: number) {
  const bus = new Bus({ config: { root: join(root, "bus"), name: "default", inboxDepthMax } });
  cleanups.push(() => bus.close());
  const recording = recordingReceiver(bus, root);
  cleanups.push(() => recording.receiver.close());
  return { bus, ...recording };
}

/**
 * Node A (forwarder) and node B (receiver, inboxes of `inboxDepthMax`, a park of
 * `parkedMessagesMax` per agent when given) on the in-memory transport.
 */
async function startPair(root: string, inboxDepthMax: number, parkedMessagesMax?: number) {
  const { transportA, transportB } = await startMemoryPair(new MemoryNetwork(), new Metrics());
  const busB = new Bus({
    config: { root: join(root, "busB"), name: "default", inboxDepthMax, batchMessagesMax: inboxDepthMax },
  });
  const metricsA = new NodeMetrics(new Metrics());
  const metricsB = new NodeMetrics(new Metrics());
  const park =
    parkedMessagesMax === undefined
      ? undefined
      : new InboxPark({ bus: busB, logger: silentLogger, metrics: metricsB, parkedMessagesMax });
  const receiver = new DeliveryReceiver({
    bus: busB,
    ledger: DeliveryLedger.open({ dir: join(root, "ledgerB"), sync: false, fileBytesMax: 1 << 22 }),
    transport: transportB,
    logger: silentLogger,
    metrics: metricsB,
    dedupWindowMessagesMax: 10_000,
    park,
  });
  const busA = new Bus({ config: { root: join(root, "busA"), name: "default", inboxDepthMax: 10_000 } });
  const spool = await DeliverySpool.open({ path: join(root, "spoolA"), sync: false, logger: silentLogger });
  const forwarder = new DeliveryForwarder({
    nodeId: "A",
    bus: busA,
    spool,
    transport: transportA,
    logger: silentLogger,
    metrics: metricsA,
    ownerOf: (agent) => (agent.startsWith("r") ? "B" : "A"),
    isMember: (id) => id === "A" || id === "B",
    batchMessagesMax: 50,
    inflightMessagesMax: 500,
    ackTimeoutMs: 300,
    proxyScanIntervalMs: 20,
    spoolMessagesMax: 100_000,
  });
  wireDelivery(transportA, forwarder, transportB, () => receiver);
  await forwarder.start();
  cleanups.push(async () => {
    park?.close();
    receiver.close();
    await forwarder.close();
    await spool.close();
    await transportA.close();
    await transportB.close();
    busA.close();
    busB.close();
  });
  return { busA, busB, forwarder, metricsA, metricsB };
}

describe("a full inbox on the receiving node", () => {
  it("holds the stream without a resync per frame, and asks once when the inbox has room", async () => {
    const root = scratch();
    const { sent, receiver, metrics, ledgerDir } = receiverOnBus(root, 10);
    const frame = (first: number, count: number) =>
      ({
        t: "d",
        s: "S",
        f: first,
        k: 0,
        m: Array.from({ length: count }, (_, i) => message(first + i)),
      }) as never;

    // 20 messages for an inbox that takes 10: the ten that fit land (written one per file).
    receiver.handle(frame(1, 20), "A");
    await waitFor("the ack of 10", () => sent.some((f) => f.t === "a" && f.u === 10));
    expect(receiver.held()).toEqual([{ from: "A", lane: 0, agent: "r1", seq: 11 }]);
    const ledgerBefore = ledgerBytes(ledgerDir);

    // The rest of the sender's window arrives, and its go-back-N resend: held, no resync each,
    // no intent written for them.
    for (let round = 0; round < 3; round++) {
      receiver.handle(frame(11, 10), "A");
      for (let first = 21; first <= 400; first += 20) receiver.handle(frame(first, 20), "A");
    }
    await sleep(50);
    expect(sent.filter((f) => f.t === "r")).toEqual([]);
    expect(ledgerBytes(ledgerDir)).toBe(ledgerBefore);
    expect((await metrics.heldFrames.get()).values[0]?.value).toBe(60);
  });

  it("asks for the held sequence once the agent has taken messages", async () => {
    const root = scratch();
    const { bus, sent, receiver } = receiverOnBus(root, 10);
    receiver.handle(
      { t: "d", s: "S", f: 1, k: 0, m: Array.from({ length: 15 }, (_, i) => message(i + 1)) } as never,
      "A",
    );
    await sleep(100);
    expect(sent.filter((f) => f.t === "r")).toEqual([]); // still full: polled, not asked
    expect(receiveAll(bus, "r1")).toEqual(Array.from({ length: 10 }, (_, i) => `m${i + 1}`));
    await waitFor("one resync from 11", () => sent.some((f) => f.t === "r"));
    expect(sent.filter((f) => f.t === "r")).toEqual([{ t: "r", s: "S", e: 11 }]);
    expect(receiver.held()).toEqual([]);
    receiver.handle(
      { t: "d", s: "S", f: 11, k: 10, m: Array.from({ length: 5 }, (_, i) => message(i + 11)) } as never,
      "A",
    );
    expect(receiveAll(bus, "r1")).toEqual(["m11", "m12", "m13", "m14", "m15"]);
  });

  it("delivers a burst through a small inbox end to end: all of it, once, in order", async () => {
    const root = scratch();
    const { busA, busB, forwarder } = await startPair(root, 20);

    const total = 400;
    for (let n = 1; n <= total; n++) busA.sendSync("s1", "r1", { id: `m${n}`, type: "t", payload: n });
    // A slow consumer: what the inbox holds now and then.
    const received: string[] = [];
    await waitFor(
      "every message consumed",
      async () => {
        received.push(...receiveAll(busB, "r1"));
        await sleep(5);
        return received.length >= total && forwarder.pendingTotal() === 0;
      },
      30_000,
    );
    expect(received).toEqual(Array.from({ length: total }, (_, i) => `m${i + 1}`));
    expect(receiveAll(busB, "r1")).toEqual([]);
  });

  it("a full inbox holds back only the agents of its lane", async () => {
    const root = scratch();
    const { busA, busB, forwarder } = await startPair(root, 20);
    const other = ["r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"].find(
      (agent) => laneOf(agent) !== laneOf("r1"),
    );
    if (!other) throw new Error("no agent in another lane");
    // r1 never consumes; its inbox takes 20 of 60. The other agent's 60 all land meanwhile.
    for (let n = 1; n <= 60; n++) {
      busA.sendSync("s1", "r1", { id: `a${n}`, type: "t", payload: n });
      busA.sendSync("s1", other, { id: `b${n}`, type: "t", payload: n });
    }
    const received: string[] = [];
    await waitFor("the other lane's agent got all 60", () => {
      received.push(...receiveAll(busB, other));
      return received.length >= 60;
    });
    expect(received).toEqual(Array.from({ length: 60 }, (_, i) => `b${i + 1}`));
    expect(busB.inboxDepth("r1")).toBe(20);
    expect(forwarder.pendingTotal()).toBe(40);
    // r1 catches up: the rest follows, in order.
    const first = receiveAll(busB, "r1");
    await waitFor("r1's backlog delivered", () => {
      first.push(...receiveAll(busB, "r1"));
      return first.length >= 60 && forwarder.pendingTotal() === 0;
    });
    expect(first).toEqual(Array.from({ length: 60 }, (_, i) => `a${i + 1}`));
  });
  it("a full inbox and park pause that agent's sender, not its lane: its backlog waits on the sending host", async () => {
    const root = scratch();
    const { busA, busB, forwarder, metricsA, metricsB } = await startPair(root, 20, 30);
    const same = ["r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12"].find(
      (agent) => laneOf(agent) === laneOf("r1"),
    );
    if (!same) throw new Error("no agent in r1's lane");
    // r1 never consumes: 20 in its inbox, then its messages are parked and A is asked to stop
    // draining r1. Traffic comes in bursts, as agents send: 300 to r1, 300 to an agent of its lane.
    for (let burst = 0; burst < 15; burst++) {
      for (let k = 1; k <= 20; k++) {
        const n = burst * 20 + k;
        busA.sendSync("s1", "r1", { id: `a${n}`, type: "t", payload: n });
        busA.sendSync("s1", same, { id: `b${n}`, type: "t", payload: n });
      }
      await sleep(40);
    }
    const received: string[] = [];
    await waitFor("the agent of the same lane got all 300", () => {
      received.push(...receiveAll(busB, same));
      return received.length >= 300;
    });
    expect(received).toEqual(Array.from({ length: 300 }, (_, i) => `b${i + 1}`));
    // r1's backlog: 20 in its inbox, at most its park's 30 on B, the rest still on A's bus.
    expect(busB.inboxDepth("r1")).toBe(20);
    const parkedOnB = readdirSync(parkDirOf(busB, "r1")).length;
    expect(forwarder.pausedAgents()).toEqual(["r1"]);
    expect(busA.inboxDepth("r1")).toBeGreaterThan(0);
    // (The lane's other agent, consumed only now and then here, is paused and resumed too.)
    expect(await total(metricsB.backpressureAsked)).toBeGreaterThanOrEqual(1);
    expect(await total(metricsA.backpressurePauses)).toBeGreaterThanOrEqual(1);
    expect(parkedOnB).toBeGreaterThan(0);
    // r1 catches up: the pause ends and its backlog follows, all of it, once, in order.
    const first: string[] = [];
    await waitFor("r1's backlog delivered", () => {
      first.push(...receiveAll(busB, "r1"));
      return first.length >= 300 && forwarder.pendingTotal() === 0;
    });
    expect(first).toEqual(Array.from({ length: 300 }, (_, i) => `a${i + 1}`));
    expect(forwarder.pausedAgents()).toEqual([]);
  });
});
