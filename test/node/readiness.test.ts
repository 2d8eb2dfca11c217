// /readyz after a restart: a node restarted on its data dir replays its own log first, an old
// state, and learns the leader before it receives what it missed. It must not say ready until
// it holds what the leader had committed (a ReadIndex round confirms it, node.ts readiness()):
// coordination starts coordinators on a ready node, and a load balancer sends it reads.

import { afterEach, describe, expect, it } from "vitest";
import { api, TestCluster, tryStatus, waitFor } from "./harness.js";

let cluster: TestCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

describe("readiness of a restarted node", () => {
  it("is not ready while it lacks entries committed while it was down", async () => {
    cluster = await TestCluster.create(3);
    await cluster.startAll();
    const [n1, n2, n3] = cluster.nodes;
    await n3.kill9();
    const leader = await cluster.leader([n1, n2]);
    // Entries n3 misses: 20 batches of 20 agents.
    const agents: string[] = [];
    for (let b = 0; b < 20; b++) {
      const batch = Array.from({ length: 20 }, (_, i) => `late-${b}-${i}`);
      agents.push(...batch);
      const { status, json } = await api(leader.api, "POST", "/v1/routing", {
        command: {
          op: "batch",
          commands: batch.map((agent) => ({ op: "agent.register", agent, node: leader.id, team: null })),
        },
      });
      expect(status, JSON.stringify(json)).toBe(200);
    }
    const committed: number = (await tryStatus(leader)).raft.commit;
    await n3.start(cluster.peerFlags(n3));
    // From its first answer on: whenever it says ready, it has applied all of them (the applied
    // index comes in the same answer).
    let answers = 0;
    const ready = await waitFor(
      "n3 ready",
      async () => {
        const response = await fetch(`${n3.api}/readyz`).catch(() => undefined);
        if (!response) return false;
        answers++;
        const body = (await response.json()) as { ready: boolean; applied: number };
        return body.ready ? body : false;
      },
      20_000,
    );
    expect(answers).toBeGreaterThan(0);
    expect(ready.applied).toBeGreaterThanOrEqual(committed);
    const known = new Set(((await tryStatus(n3))?.agents ?? []).map((agent: { id: string }) => agent.id));
    expect(agents.filter((agent) => !known.has(agent))).toEqual([]);
  }, 60_000);
});
