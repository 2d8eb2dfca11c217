// A node whose data disk fills up (ENOSPC on its spool) stops with CFN_ERR_STORAGE instead of going
// on on a LevelDB handle that may have left a torn record in its log (later writes "succeed" and
// are dropped at the next open). Its messages wait in the bus files; restarted once there is
// room, it delivers every one, once, in order. Real processes, a real full tmpfs.

import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { mountTinyTmpfs } from "../storage/tiny-tmpfs.js";
import { api, drainInbox, type NodeProcess, TestCluster, tryStatus, waitFor } from "./harness.js";

let cluster: TestCluster | undefined;
let unmount: (() => void) | undefined;
afterEach(async () => {
  // The mount point is inside the cluster's root: its removal fails until the unmount, then again.
  await cluster?.stop().catch(() => undefined);
  unmount?.();
  if (cluster) rmSync(cluster.root, { recursive: true, force: true });
  cluster = undefined;
  unmount = undefined;
});

function send(node: NodeProcess, ids: string[]): void {
  const bus = node.bus();
  for (const id of ids) bus.sendSync("src", "rb", { id, type: "test", payload: "y".repeat(2000) });
  bus.close();
}

const ids = (prefix: string) => Array.from({ length: 10 }, (_, i) => `${prefix}-${i}`);

describe("a node's data disk fills up", () => {
  it("the node stops with CFN_ERR_STORAGE; after a restart with room every message arrives once, in order", async () => {
    cluster = await TestCluster.create(2);
    const [a, b] = cluster.nodes;
    unmount = mountTinyTmpfs(a.spec.dataDir, "size=8m");
    await cluster.startAll();
    const registered = await api(b.api, "POST", "/v1/agents", { agent: "rb", team: null });
    expect(registered.status, JSON.stringify(registered.json)).toBe(200);
    await waitFor("rb routed on a", async () =>
      (await tryStatus(a))?.agents.some((agent: { id: string }) => agent.id === "rb"),
    );
    // b is down: what a's agents send to rb waits in a's spool.
    b.signal("SIGTERM");
    await b.waitExit();
    send(a, ids("pre"));
    await waitFor("pre spooled on a", async () => (await tryStatus(a))?.delivery.spooled === 10);
    // The disk fills up; the next spool write fails.
    const filler = join(a.spec.dataDir, "filler");
    try {
      writeFileSync(filler, Buffer.alloc(16 * 1024 * 1024));
    } catch {
      // ENOSPC: the filler keeps what it wrote
    }
    send(a, ids("full"));
    const code = await a.waitExit(20_000).catch((error: Error) => {
      throw new Error(`${error.message}; its log ends: ${a.stderr.slice(-2000)}`);
    });
    expect(code).toBe(1);
    expect(a.stderr).toContain("CFN_ERR_STORAGE");
    // Room again; more is sent while the node is down (into the bus files, as agents do).
    rmSync(filler);
    send(a, ids("post"));
    await b.start(cluster.peerFlags(b));
    await a.start(cluster.peerFlags(a));
    const expected = [...ids("pre"), ...ids("full"), ...ids("post")];
    const got: string[] = [];
    await waitFor(
      "every message at rb",
      async () => {
        got.push(...(await drainInbox(b, "rb")).map((message) => message.id));
        return got.length >= expected.length;
      },
      30_000,
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    got.push(...(await drainInbox(b, "rb")).map((message) => message.id));
    expect(got).toEqual(expected);
  });
});
