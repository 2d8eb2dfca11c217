// Two nodes' delivery halves over a transport pair, dispatched as the node daemon does it: data
// frames to B's receiver, acks and other control frames to A's forwarder; and a receiver alone,
// whose transport only records what it sends.

import { join } from "node:path";
import type { Bus } from "../../src/bus/index.js";
import type { DeliveryForwarder } from "../../src/node/delivery/forwarder.js";
import { DeliveryLedger } from "../../src/node/delivery/ledger.js";
import { InboxPark } from "../../src/node/delivery/park.js";
import { DeliveryReceiver, type ReceiverOptions } from "../../src/node/delivery/receiver.js";
import { DELIVER_CHANNEL, parseDeliveryFrame, type WireMessage } from "../../src/node/delivery/wire.js";
import { NodeMetrics } from "../../src/node/node-metrics.js";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import type { MemoryNetwork, Transport } from "../../src/transport/index.js";

/** Nodes A and B on an in-memory network, each the other's peer, started. A counts into `metrics`. */
export async function startMemoryPair(
  network: MemoryNetwork,
  metrics: Metrics,
): Promise<{ transportA: Transport; transportB: Transport }> {
  const transportA = network.createTransport({ nodeId: "A", logger: silentLogger, metrics });
  const transportB = network.createTransport({ nodeId: "B", logger: silentLogger, metrics: new Metrics() });
  transportA.addPeer("B", "mem://B");
  transportB.addPeer("A", "mem://A");
  await transportA.start();
  await transportB.start();
  return { transportA, transportB };
}

/** `receiver` is asked on every frame, so a test can swap in a restarted receiver. */
export function wireDelivery(
  transportA: Transport,
  forwarder: DeliveryForwarder,
  transportB: Transport,
  receiver: () => DeliveryReceiver,
): void {
  transportB.onFrame(DELIVER_CHANNEL, (payload, from) => {
    const parsed = parseDeliveryFrame(payload);
    if (parsed.ok && parsed.frame.t === "d") receiver().handle(parsed.frame, from);
  });
  transportA.onFrame(DELIVER_CHANNEL, (payload, from) => {
    const parsed = parseDeliveryFrame(payload);
    if (parsed.ok && parsed.frame.t !== "d") forwarder.handleControl(parsed.frame, from);
  });
}

/** A control frame a receiver sent (ack or resync), as recorded. */
export type SentControl = { t: string; s?: string; e?: number; u?: number; l?: number };

/**
 * A receiver writing into `bus`, its ledger in `<root>/ledger`; its transport records what it
 * sends. With `parkedMessagesMax`, it parks messages for full inboxes (park.ts) as a node does.
 */
export function recordingReceiver(
  bus: Bus,
  root: string,
  parkedMessagesMax?: number,
  options: Partial<ReceiverOptions> = {},
) {
  const sent: SentControl[] = [];
  const transport = {
    sendFrame: (_to: string, _channel: string, frame: SentControl) => {
      sent.push(frame);
      return true;
    },
  } as unknown as Transport;
  const metrics = new NodeMetrics(new Metrics());
  const ledgerDir = join(root, "ledger");
  const ledger = DeliveryLedger.open({ dir: ledgerDir, sync: false, fileBytesMax: 1 << 20 });
  const park =
    parkedMessagesMax === undefined
      ? undefined
      : new InboxPark({ bus, logger: silentLogger, metrics, parkedMessagesMax });
  const receiver = new DeliveryReceiver({
    bus,
    ledger,
    transport,
    logger: silentLogger,
    metrics,
    dedupWindowMessagesMax: 1000,
    park,
    ...options,
  });
  return { sent, metrics, receiver, ledger, ledgerDir, park };
}

/** Message `i` (payload { i }, seq i) from s1 to `to`, as a sender node's frame carries it. */
export function wireMessage(to: string, i: number): WireMessage {
  return {
    id: `${to}-${i}`,
    from: "s1",
    to,
    type: "t",
    priority: "normal",
    headers: {},
    payload: { i },
    ts: 1,
    seq: i,
  };
}

/** Consumes everything in `agent`'s inbox now; returns the payloads' i in delivery order. */
export function consumeAll(bus: Bus, agent: string): number[] {
  const mailbox = bus.openMailbox(agent, { heartbeat: false, watch: false });
  const out: number[] = [];
  for (;;) {
    const deliveries = mailbox.receiveNow(100);
    if (deliveries.length === 0) break;
    for (const delivery of deliveries) out.push((delivery.message.payload as { i: number }).i);
    mailbox.ack(deliveries);
  }
  mailbox.close();
  return out;
}
