// The sending side's spool (src/node/delivery/spool.ts): one record per drained batch and
// destination, group-committed; what a restart reloads after acknowledgements.

import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { DeliverySpool, SEQ_RESERVE_BLOCK_MESSAGES } from "../../src/node/delivery/spool.js";
import type { WireMessage } from "../../src/node/delivery/wire.js";
import { silentLogger } from "../../src/obs/logger.js";
import { closeLevel } from "../../src/storage/level-open.js";
import { scratchDir } from "./harness.js";

let root: string | undefined;

afterEach(() => {
  if (root) rmSync(root, { recursive: true, force: true });
  root = undefined;
});

function message(n: number, to: string): WireMessage {
  return { id: `m-${n}`, from: "s", to, type: "t", priority: "normal", headers: {}, payload: { n }, ts: n };
}

describe("delivery spool", () => {
  it("reloads exactly the records not wholly acknowledged, in sequence order per destination", async () => {
    root = scratchDir("cfn-spool-");
    const path = join(root, "spool");
    const spool = await DeliverySpool.open({ path, sync: false, logger: silentLogger });
    // Appends issued together are group-committed; each keeps its own sequences per destination.
    const writes = [0, 1, 2].map((batch) =>
      spool.appendNow(
        [0, 1, 2, 3].map((i) => ({ dest: i % 2 === 0 ? "B" : "C", message: message(batch * 4 + i, "w") })),
      ),
    );
    await Promise.all(writes.map((write) => write.durable));
    expect(writes[2].spooled.map((item) => `${item.dest}${item.seq}`)).toEqual(["B5", "C5", "B6", "C6"]);
    expect(spool.size).toBe(12);
    await spool.remove("B", 1, 3); // B1-2 (first record) wholly, B3 of B3-4 in part
    await spool.remove("C", 1, 6);
    expect(spool.size).toBe(3);
    await spool.close();

    const reopened = await DeliverySpool.open({ path, sync: false, logger: silentLogger });
    const outbound = await reopened.loadOutbound();
    expect(outbound.get("C") ?? []).toEqual([]);
    expect((outbound.get("B") ?? []).map((item) => [item.seq, item.message.id])).toEqual([
      [3, "m-4"],
      [4, "m-6"],
      [5, "m-8"],
      [6, "m-10"],
    ]);
    // Sequences carry on after a clean restart (the unused reservation was handed back).
    const next = reopened.appendNow([{ dest: "B", message: message(99, "w") }]);
    await next.durable;
    expect(next.spooled[0].seq).toBe(7);
    await reopened.close();
  });

  it("reserves sequences in fsynced blocks ahead of use, and a crash restarts past the reservation", async () => {
    root = scratchDir("cfn-spool-");
    const path = join(root, "spool");
    const spool = await DeliverySpool.open({ path, sync: false, logger: silentLogger });
    const batches: { keys: string[]; sync: boolean }[] = [];
    // biome-ignore lint/suspicious/noExplicitAny: observing the spool's LevelDB batches
    const db = (spool as any).db;
    const batch = db.batch.bind(db);
    db.batch = (ops: { key: string }[], options: { sync: boolean }) => {
      batches.push({ keys: ops.map((op) => op.key), sync: options.sync });
      return batch(ops, options);
    };

    // The first message for B: it may go out only once the reservation is on disk (synced, though
    // the spool itself is not).
    const first = spool.appendNow([{ dest: "B", message: message(1, "w") }]);
    expect(first.sendable).toBeDefined();
    expect(spool.reservedUpTo("B")).toBe(0);
    await first.sendable;
    expect(spool.reservedUpTo("B")).toBe(1 + SEQ_RESERVE_BLOCK_MESSAGES);
    expect(batches[0]).toEqual({ keys: [expect.stringMatching(/^o!B!/), "r!B"], sync: true });

    // Within the block: sendable at once, and the write is not synced.
    const second = spool.appendNow([{ dest: "B", message: message(2, "w") }]);
    expect(second.sendable).toBeUndefined();
    await second.durable;
    expect(batches[1]).toEqual({ keys: [expect.stringMatching(/^o!B!/)], sync: false });

    // Past half the block, the next one is reserved ahead: still sendable at once.
    const half = SEQ_RESERVE_BLOCK_MESSAGES / 2;
    const bulk = spool.appendNow(
      Array.from({ length: half }, (_, i) => ({ dest: "B", message: message(3 + i, "w") })),
    );
    expect(bulk.sendable).toBeUndefined();
    await bulk.durable;
    expect(batches[2].keys).toContain("r!B");
    expect(batches[2].sync).toBe(true);
    expect(spool.reservedUpTo("B")).toBe(1 + 2 * SEQ_RESERVE_BLOCK_MESSAGES);

    // A crash (no clean close): the next incarnation starts past everything reserved.
    const reservedAtCrash = spool.reservedUpTo("B");
    await closeLevel(db, spool.path);
    const reopened = await DeliverySpool.open({ path, sync: false, logger: silentLogger });
    const outbound = await reopened.loadOutbound();
    expect((outbound.get("B") ?? []).length).toBe(2 + half);
    const next = reopened.appendNow([{ dest: "B", message: message(99, "w") }]);
    expect(next.spooled[0].seq).toBe(reservedAtCrash + 1);
    await next.sendable;
    await reopened.close();
  });
});
