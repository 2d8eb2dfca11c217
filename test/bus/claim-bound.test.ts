// A claim checks every file against the bound of its name (messageBytesMax for one message,
// N × (messageBytesMax + 64) for a batch of N), also once its read buffer has grown to hold an
// earlier batch (src/bus/claim-reader.ts keeps up to 8 MiB): a single-message file that buffer
// holds whole is still oversized — not parsed (malformed), and never delivered.

import { readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Bus } from "../../src/bus/index.js";
import { envelopeOf, tempRoot } from "./helpers.js";

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0).reverse()) cleanup();
});

const message = (id: string, payloadBytes: number) => envelopeOf(id, payloadBytes);

describe.each([true, false])("claim bound (nativeIo %s)", (nativeIo) => {
  it("refuses an oversized single-message file after a batch grew the read buffer", () => {
    const temp = tempRoot();
    cleanups.push(temp.cleanup);
    const bus = new Bus({ config: { root: temp.root, name: "default", nativeIo } });
    cleanups.push(() => bus.close());
    const paths = bus.layout.agent("r1");
    bus.layout.ensureAgent(paths, true);
    const put = (name: string, text: string) => {
      writeFileSync(join(paths.tmp, name), text);
      renameSync(join(paths.tmp, name), join(paths.inbox, name));
    };
    const batch = { v: 1, batch: [1, 2, 3, 4].map((n) => message(`b${n}`, 1_000_000)) };
    put("1_0000000000000001_4_batch-a_0.json", JSON.stringify(batch));
    put("1_0000000000000002_1_junk-b_0.json", "y".repeat(2_500_000));
    put("1_0000000000000003_1_big-c_0.json", JSON.stringify(message("big", 2_000_000)));
    const mailbox = bus.openMailbox("r1", { heartbeat: false, watch: false });
    try {
      const ids: string[] = [];
      for (;;) {
        const deliveries = mailbox.receiveNow(10);
        if (deliveries.length === 0) break;
        ids.push(...deliveries.map((delivery) => delivery.message.id));
        mailbox.ack(deliveries);
      }
      expect(ids).toEqual(["b1", "b2", "b3", "b4"]);
    } finally {
      mailbox.close();
    }
    const causes = readdirSync(paths.dead)
      .filter((name) => name.endsWith(".reason"))
      .sort()
      .map((name) => (JSON.parse(readFileSync(join(paths.dead, name), "utf8")) as { cause: string }).cause);
    expect(causes).toEqual(["oversized", "oversized"]);
  });
});
