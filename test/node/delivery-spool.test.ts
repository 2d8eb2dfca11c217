// The sending side's spool (src/node/delivery/spool.ts): one record per drained batch and
// destination, group-committed; what a restart reloads after acknowledgements.

import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { DeliverySpool } from "../../src/node/delivery/spool.js";
import type { WireMessage } from "../../src/node/delivery/wire.js";
import { silentLogger } from "../../src/obs/logger.js";
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
    // Sequences carry on after the restart.
    const next = reopened.appendNow([{ dest: "B", message: message(99, "w") }]);
    await next.durable;
    expect(next.spooled[0].seq).toBe(7);
    await reopened.close();
  });
});
