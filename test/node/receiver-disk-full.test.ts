// The receiving node's data disk fills up: its delivery ledger's next write fails with ENOSPC.
// That stops the node as a failed LevelDB write does (CFN_ERR_STORAGE, "a write to the data dir
// failed; the node stops", exit status 1) instead of going on refusing every frame while it
// looks healthy. The messages wait in the sender's spool; once there is room and the node
// restarts, every one arrives once, in order. Real processes, a real full tmpfs (needs root).

import { rmSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { fillSpace, mountTinyTmpfs } from "../storage/tiny-tmpfs.js";
import { api, drainInbox, type NodeProcess, TestCluster, tryStatus, waitFor } from "./harness.js";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  // Newest first: the tmpfs is mounted inside the cluster's root, unmounted before it is removed.
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** What agent "src" on `node`'s host sends agent "rb" (2 KB each), straight into the bus files. */
function sendToRb(node: NodeProcess, messageIds: string[]): void {
  const bus = node.bus();
  try {
    for (const id of messageIds) bus.sendSync("src", "rb", { id, type: "test", payload: "y".repeat(2000) });
  } finally {
    bus.close();
  }
}

/** Drains rb's inbox on `node` into `got` until it holds `count` ids, then once more after a pause. */
async function collectAtRb(node: NodeProcess, got: string[], count: number): Promise<void> {
  const drain = async () => got.push(...(await drainInbox(node, "rb")).map((message) => message.id));
  await waitFor(`${count} messages at rb`, async () => (await drain()) >= count, 30_000);
  await new Promise((resolve) => setTimeout(resolve, 300));
  await drain();
}

const ids = (prefix: string, count = 10) => Array.from({ length: count }, (_, i) => `${prefix}-${i}`);

describe("the receiving node's data disk fills up", () => {
  it("its ledger's failed write stops it with CFN_ERR_STORAGE; after a restart with room every message arrives once, in order", async () => {
    const cluster = await TestCluster.create(2);
    cleanups.push(() => rmSync(cluster.root, { recursive: true, force: true }));
    const [a, b] = cluster.nodes;
    cleanups.push(mountTinyTmpfs(b.spec.dataDir, "size=8m"));
    cleanups.push(() => cluster.stop().catch(() => undefined));
    await cluster.startAll();
    const registered = await api(b.api, "POST", "/v1/agents", { agent: "rb", team: null });
    expect(registered.status, JSON.stringify(registered.json)).toBe(200);
    await waitFor("rb routed on a", async () =>
      (await tryStatus(a))?.agents.some((agent: { id: string }) => agent.id === "rb"),
    );
    sendToRb(a, ids("pre"));
    const got: string[] = [];
    await collectAtRb(b, got, 10);
    // b's disk fills up; the ledger's next appends fail.
    const filler = fillSpace(b.spec.dataDir);
    sendToRb(a, ids("full", 200));
    const code = await b.waitExit(20_000).catch((error: Error) => {
      throw new Error(`${error.message}; its log ends: ${b.stderr.slice(-2000)}`);
    });
    expect(code).toBe(1);
    expect(b.stderr).toContain("a write to the data dir failed; the node stops");
    expect(b.stderr).toMatch(/CFN_ERR_STORAGE delivery ledger \S+: a write failed \(ENOSPC/);
    // Room again; b restarts and takes everything a spooled meanwhile.
    rmSync(filler);
    sendToRb(a, ids("post"));
    await b.start(cluster.peerFlags(b));
    const expected = [...ids("pre"), ...ids("full", 200), ...ids("post")];
    await collectAtRb(b, got, expected.length);
    expect(got).toEqual(expected);
  });
});
