// A proxy mailbox (a local mailbox of an agent on another node, drained by the node's forwarder,
// src/node/delivery/forwarder.ts) dead-letters a file it cannot take with the cause `cfn recv`
// gives the same file: an oversized file is `oversized`, not `malformed`. The proxy had drained a
// batch file first: a claim's read buffer grows to hold a batch (src/bus/claim-reader.ts keeps
// up to 8 MiB), and a single-message file the grown buffer held whole was not checked against
// messageBytesMax — parsed instead (malformed), or, were it a well-formed message, delivered.

import { readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Bus } from "../../src/bus/index.js";
import { DeliveryForwarder } from "../../src/node/delivery/forwarder.js";
import { DeliverySpool } from "../../src/node/delivery/spool.js";
import { NodeMetrics } from "../../src/node/node-metrics.js";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { MemoryNetwork } from "../../src/transport/index.js";
import { envelopeOf } from "../bus/helpers.js";
import { startMemoryPair } from "./delivery-wiring.js";
import { perTestScratch, waitFor } from "./harness.js";

const { scratch, cleanups } = perTestScratch("cfn-proxy-dead-");

/** The causes of the dead letters of `agent` on `bus`, by file name (without the claim suffix). */
function deadCauses(bus: Bus, agent: string): Map<string, string> {
  const dead = bus.layout.agent(agent).dead;
  const causes = new Map<string, string>();
  for (const name of readdirSync(dead)) {
    if (!name.endsWith(".reason")) continue;
    const unique = name.split("_")[3];
    causes.set(unique, (JSON.parse(readFileSync(join(dead, name), "utf8")) as { cause: string }).cause);
  }
  return causes;
}

/** Writes `text` into `agent`'s inbox as a sender would (tmp/ then rename). */
function putInInbox(bus: Bus, agent: string, name: string, text: string): void {
  const paths = bus.layout.agent(agent);
  bus.layout.ensureAgent(paths, true);
  writeFileSync(join(paths.tmp, name), text, { mode: 0o600 });
  renameSync(join(paths.tmp, name), join(paths.inbox, name));
}

describe("proxy mailbox dead letters", () => {
  it("gives an oversized file in a proxied mailbox the bus's cause, oversized, also after draining a batch", async () => {
    const root = scratch();
    const metrics = new Metrics();
    const { transportA, transportB } = await startMemoryPair(new MemoryNetwork(), metrics);
    cleanups.push(
      () => transportA.close(),
      () => transportB.close(),
    );
    const bus = new Bus({ config: { root: join(root, "bus"), name: "default" } });
    cleanups.push(() => bus.close());
    const message = (id: string, payloadBytes: number) => envelopeOf(id, payloadBytes, "w1", "r1");
    // A valid batch of 6 messages near messageBytesMax (1 MiB): 6 MB, within 6 × (1 MiB + 64).
    const batch = JSON.stringify({
      v: 1,
      batch: [1, 2, 3, 4, 5, 6].map((n) => message(`b${n}`, 1_000_000)),
    });
    putInInbox(bus, "r1", "1_1796684262226540_6_batch-a_0.json", batch);
    putInInbox(bus, "r1", "1_1796684262226541_1_huge-b_0.json", "y".repeat(5 * 1024 * 1024));
    putInInbox(bus, "r1", "1_1796684262226542_1_huge-c_0.json", JSON.stringify(message("m-big", 3_000_000)));
    putInInbox(bus, "r1", "1_1796684262226543_1_trunc-d_0.json", '{"v":1,"id":');
    const spool = await DeliverySpool.open({ path: join(root, "spool"), sync: false, logger: silentLogger });
    cleanups.push(() => spool.close());
    const forwarder = new DeliveryForwarder({
      nodeId: "A",
      bus,
      spool,
      transport: transportA,
      logger: silentLogger,
      metrics: new NodeMetrics(metrics),
      ownerOf: (agent) => (agent.startsWith("r") ? "B" : "A"),
      isMember: (id) => id === "A" || id === "B",
      batchMessagesMax: 50,
      inflightMessagesMax: 400,
      ackTimeoutMs: 60,
      proxyScanIntervalMs: 20,
      spoolMessagesMax: 1_000_000,
    });
    cleanups.push(() => forwarder.close());
    forwarder.start();
    const paths = bus.layout.agent("r1");
    await waitFor(
      "every file drained",
      () => readdirSync(paths.inbox).length + readdirSync(paths.claimed).length === 0,
    );
    expect(Object.fromEntries(deadCauses(bus, "r1"))).toEqual({
      "huge-b": "oversized",
      "huge-c": "oversized",
      "trunc-d": "malformed",
    });
    // The batch went into the spool for B; the 3 MB message did not.
    await waitFor(
      "the batch spooled",
      async () => (await metrics.value("cfn_delivery_spooled_messages_total")) >= 6,
    );
    expect(await metrics.value("cfn_delivery_spooled_messages_total")).toBe(6);
  });
});
