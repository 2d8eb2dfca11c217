// Regression test for a RaftHost bug found while building the node daemon (src/node/raft-host.ts
// belongs to the RaftHost engineer, who fixed it in 42bb952 with a "closing" state). Before the
// fix, RaftHost.stop() waited for the Ready loop, then closed the transport and the store; but a
// peer message stepped in between (state "stopping" still accepts them) schedules a new Ready
// round on setImmediate, which saves to the store after stop() closed it: the save fails with
// CFN_ERR_CLOSED and the host reports it through onFatal as an unrecoverable I/O failure. A node
// daemon that exits on fatal errors then exits 1 in the middle of a graceful shutdown (seen under
// load with 3 node processes). The node also ignores fatal errors while it is shutting down.

import { describe, expect, it } from "vitest";
import { RaftHost } from "../../src/node/raft-host.js";
import { RoutingStateMachine } from "../../src/node/routing/index.js";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { MessageType, makeMessage } from "../../src/raft/index.js";
import { MemoryDataDir, MemoryLogStore } from "../../src/storage/index.js";
import { MemoryNetwork, type MessagesHandler, type Transport } from "../../src/transport/index.js";

describe("RaftHost.stop() (bug report)", () => {
  it("does not report a fatal error when a peer message arrives while it stops", async () => {
    const metrics = new Metrics();
    const network = new MemoryNetwork();
    const inner = network.createTransport({ nodeId: "n1", logger: silentLogger, metrics });
    let deliver: MessagesHandler | undefined;
    // The transport hands the host a peer message while it is being closed, as a socket does
    // when a frame is already in flight.
    const transport: Transport = new Proxy(inner, {
      get(target, property, receiver) {
        if (property === "onMessages")
          return (handler: MessagesHandler) => {
            deliver = handler;
            target.onMessages(handler);
          };
        if (property === "close")
          return async () => {
            deliver?.([makeMessage({ type: MessageType.Heartbeat, from: "n2", to: "n1", term: 99 })], "n2");
            await target.close();
          };
        return Reflect.get(target, property, receiver);
      },
    });
    const memoryStore = await MemoryLogStore.open({
      dir: new MemoryDataDir("n1"),
      identity: { clusterId: "c", nodeId: "n1" },
      logger: silentLogger,
      metrics,
    });
    // Closing takes a round trip to the I/O thread pool, as LevelLogStore.close() does (it marks
    // itself closed at once, then awaits db.close()).
    const store = new Proxy(memoryStore, {
      get(target, property, receiver) {
        if (property === "close")
          return () => {
            const closing = target.close();
            return new Promise<void>((resolve) => setTimeout(() => closing.then(resolve), 5));
          };
        return Reflect.get(target, property, receiver);
      },
    });
    const host = new RaftHost({
      config: { id: "n1" },
      logger: silentLogger,
      metrics,
      store,
      transport,
      stateMachine: new RoutingStateMachine(),
      peers: { n2: "mem://n2" },
      bootstrap: { voters: ["n1"] },
    });
    const fatal: unknown[] = [];
    host.onFatal((error) => fatal.push(error));
    await host.start();
    await host.stop();
    await new Promise((resolve) => setTimeout(resolve, 50)); // let a Ready round scheduled late run
    expect(fatal).toEqual([]);
  });
});
