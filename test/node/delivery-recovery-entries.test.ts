// The receiver's crash recovery (src/node/delivery/receiver.ts, recover) looks in its agents'
// inboxes for the messages of an interrupted intent. It reads each entry as a claim does
// (src/bus/safe-read.ts): a FIFO never blocks it, a symlink is never followed and a file larger
// than the bus reads is never loaded — none of them holds a message this node wrote, so none
// may count a message of the intent as written (it would never be written: lost).

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Bus } from "../../src/bus/index.js";
import { DeliveryLedger } from "../../src/node/delivery/ledger.js";
import { recordingReceiver } from "./delivery-wiring.js";
import { perTestScratch } from "./harness.js";

const { cleanups } = perTestScratch("cfn-recovery-entries-");

/** A bus on tmpfs and what a crash left: the intent of m1–m3 for r1, of which only m1 was written. */
function crashedIntent(): { root: string; bus: Bus; inbox: string } {
  const root = mkdtempSync("/dev/shm/cfn-recovery-entries-");
  cleanups.push(() => rmSync(root, { recursive: true, force: true }));
  const bus = new Bus({ config: { root: join(root, "bus"), name: "default" } });
  cleanups.push(() => bus.close());
  const before = DeliveryLedger.open({ dir: join(root, "ledger"), sync: false, fileBytesMax: 1 << 20 });
  before.appendIntent("A", {
    stream: "S",
    first: 1,
    last: 3,
    targets: ["m1", "m2", "m3"].map((id) => ({ to: "r1", id })),
  });
  before.close();
  bus.sendSync("s1", "r1", { id: "m1", type: "t", payload: 1 });
  return { root, bus, inbox: bus.layout.agent("r1").inbox };
}

/** Text that looks like the bus message `id` to r1. */
function lookalike(id: string, padding = 0): string {
  return `{"v":1,"id":"${id}","from":"s1","to":"r1","type":"t","payload":"${"p".repeat(padding)}"}`;
}

function name(unique: string): string {
  return `1_${String(Date.now() * 1000).padStart(16, "0")}_1_${unique}_0.json`;
}

describe("crash recovery over hostile inbox entries", () => {
  it("does not block on a FIFO in an inbox", async () => {
    const { root, bus, inbox } = crashedIntent();
    const fifo = join(inbox, name("fifo-a"));
    execFileSync("mkfifo", [fifo]);
    // A blocking open waits for a writer: this one comes after 2 s (so the old code returned, late).
    const writer: ChildProcess = spawn(
      "sh",
      ["-c", 'sleep 2; printf "%s" "$0" > "$1"', lookalike("m3"), fifo],
      {
        stdio: "ignore",
      },
    );
    cleanups.push(() => {
      if (writer.exitCode === null && writer.pid !== undefined) writer.kill("SIGKILL");
    });
    const { receiver, ledger } = recordingReceiver(bus, root);
    const started = performance.now();
    await receiver.recover(ledger.intentSenders());
    expect(performance.now() - started).toBeLessThan(1000);
    expect(ledger.cursor("A")).toEqual({ stream: "S", seq: 1 });
  }, 10_000);

  it("follows no symlink: a link to a file that looks like a message counts nothing as written", async () => {
    const { root, bus, inbox } = crashedIntent();
    const outside = join(root, "outside.json");
    writeFileSync(outside, lookalike("m3"));
    symlinkSync(outside, join(inbox, name("link-b")));
    const { receiver, ledger } = recordingReceiver(bus, root);
    await receiver.recover(ledger.intentSenders());
    // Only m1 was written: m2 and m3 are expected next, as the sender resends them.
    expect(ledger.cursor("A")).toEqual({ stream: "S", seq: 1 });
  });

  it("reads no file larger than the bus reads: an oversized lookalike counts nothing as written", async () => {
    const { root, bus } = crashedIntent();
    const big = name("huge-c");
    const paths = bus.layout.agent("r1");
    writeFileSync(join(paths.tmp, big), lookalike("m3", bus.config.messageBytesMax));
    renameSync(join(paths.tmp, big), join(paths.inbox, big));
    const { receiver, ledger } = recordingReceiver(bus, root);
    await receiver.recover(ledger.intentSenders());
    expect(ledger.cursor("A")).toEqual({ stream: "S", seq: 1 });
  });
});
