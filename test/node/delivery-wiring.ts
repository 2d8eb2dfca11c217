// Two nodes' delivery halves over a transport pair, dispatched as the node daemon does it: data
// frames to B's receiver, acks and other control frames to A's forwarder.

import type { DeliveryForwarder } from "../../src/node/delivery/forwarder.js";
import type { DeliveryReceiver } from "../../src/node/delivery/receiver.js";
import { DELIVER_CHANNEL, parseDeliveryFrame } from "../../src/node/delivery/wire.js";
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
