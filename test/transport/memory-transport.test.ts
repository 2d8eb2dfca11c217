import { describe, expect, it } from "vitest";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { MemoryNetwork, type MemoryTransport } from "../../src/transport/memory-transport.js";
import type { TransportLimits } from "../../src/transport/transport.js";
import { inbox, message, transportCompliance, waitFor } from "./compliance.js";

let network = new MemoryNetwork();
const created: MemoryTransport[] = [];

function build(nodeId: string, limits: Partial<TransportLimits> = {}, metrics = new Metrics()) {
  const transport = network.createTransport({ nodeId, logger: silentLogger, metrics, limits });
  created.push(transport);
  return transport;
}

transportCompliance("memory twin", {
  async create(nodeId, limits) {
    const metrics = new Metrics();
    const transport = build(nodeId, limits, metrics);
    await transport.start();
    return { transport, url: `memory://${nodeId}`, metrics };
  },
  unreachableUrl: async () => "memory://nobody",
  build: (nodeId, limits) => build(nodeId, limits),
  async cleanup() {
    for (const transport of created.splice(0)) await transport.close();
    network = new MemoryNetwork();
  },
});

describe("MemoryNetwork faults", () => {
  async function pair() {
    network = new MemoryNetwork();
    const a = build("a");
    const b = build("b");
    await a.start();
    await b.start();
    a.addPeer("b", "");
    b.addPeer("a", "");
    return { a, b };
  }

  it("a one-way cut drops frames that way only, and reports the peer unreachable", async () => {
    const { a, b } = await pair();
    const atA = inbox(a);
    const atB = inbox(b);
    const unreachable: string[] = [];
    a.onPeerUnreachable((peer) => unreachable.push(peer));
    network.setLinkUp("a", "b", false);
    a.send([message("a", "b", { index: 1 })]);
    b.send([message("b", "a", { index: 2 })]);
    await waitFor(() => atA.messages().length === 1, "b → a still works");
    expect(atB.messages()).toEqual([]);
    expect(unreachable).toEqual(["b"]);
    network.heal();
    a.send([message("a", "b", { index: 3 })]);
    await waitFor(() => atB.messages().length === 1, "a → b after heal");
    expect(atB.messages()[0].index).toBe(3);
  });

  it("a partition made while frames are in flight loses them", async () => {
    const { a, b } = await pair();
    const atB = inbox(b);
    a.send([message("a", "b", { index: 1 })]);
    network.partition(["a"], ["b"]);
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(atB.messages()).toEqual([]);
    network.heal();
  });

  it("isolate cuts a node from everyone", async () => {
    const { a, b } = await pair();
    const atA = inbox(a);
    network.isolate("a");
    b.send([message("b", "a")]);
    expect(network.isLinkUp("b", "a")).toBe(false);
    expect(network.isLinkUp("a", "b")).toBe(false);
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(atA.messages()).toEqual([]);
  });
});
