// The local mailbox of a remote agent (the forwarder's proxy) goes once the agent leaves the
// routing state. Before, every cluster round left its reply mailbox (`<swarm>.client-<round>`) on
// the master's node for good: one more dir on tmpfs per round, listed by every scan.

import { afterEach, describe, expect, it } from "vitest";
import { api, drainInbox, TestCluster, waitFor } from "./harness.js";

let cluster: TestCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

describe("proxy mailboxes of removed agents", () => {
  it("removes the dirs of a remote agent on the sender's node once it is deregistered", async () => {
    cluster = await TestCluster.create(2);
    const [n1, n2] = cluster.nodes;
    await cluster.startAll();
    expect((await api(n2.api, "POST", "/v1/agents", { agent: "far", team: null })).status).toBe(200);
    const bus = n1.bus();
    try {
      bus.sendSync("s", "far", { id: "through", type: "t", payload: 1 });
      const got = await waitFor("the message on far's node", async () => {
        const messages = await drainInbox(n2, "far");
        return messages.length > 0 ? messages : undefined;
      });
      expect(got.map((message) => message.id)).toEqual(["through"]);
      expect(bus.agentStatus("far")).toBeDefined(); // the proxy's dirs on the sender's node
      expect((await api(n2.api, "DELETE", "/v1/agents/far")).status).toBe(200);
      await waitFor("far's dirs gone from n1's bus", async () => bus.agentStatus("far") === undefined);
    } finally {
      bus.close();
    }
  });
});
