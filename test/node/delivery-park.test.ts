// The park (src/node/delivery/park.ts): forwarded messages for an agent whose inbox is full wait
// on the owner node instead of holding back the other agents of their sender's lane; they move
// into the inbox, in order, as it has room; a full park holds the lane as before; what is parked
// survives a restart of the receiver and is found by its crash recovery.

import { readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Bus } from "../../src/bus/index.js";
import { DeliveryLedger } from "../../src/node/delivery/ledger.js";
import { PARK_DIR, parkDirOf } from "../../src/node/delivery/park.js";
import type { WireMessage } from "../../src/node/delivery/wire.js";
import { consumeAll, recordingReceiver, type SentControl, wireMessage } from "./delivery-wiring.js";
import { perTestScratch, waitFor } from "./harness.js";

const { scratch, cleanups } = perTestScratch("cfn-delivery-park-");

const wire = wireMessage;

function openBus(root: string, inboxDepthMax: number): Bus {
  const bus = new Bus({
    config: { root: join(root, "bus"), name: "default", inboxDepthMax, batchMessagesMax: 100 },
  });
  cleanups.push(() => bus.close());
  return bus;
}

const consume = consumeAll;

const acked = (sent: SentControl[], u: number) =>
  sent.some((frame) => frame.t === "a" && (frame.u ?? 0) >= u);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, k) => from + k);

describe("parking forwarded messages for a full inbox", () => {
  it("parks a full inbox's messages, writes the other agents' at once, acks all, and moves them in, in order", async () => {
    const root = scratch();
    const bus = openBus(root, 5);
    const { sent, receiver, park, metrics } = recordingReceiver(bus, root, 100);
    // One stream (one lane) carrying 20 messages for `slow` and, between them, 5 for `fast`.
    const messages: WireMessage[] = [];
    for (let i = 1; i <= 20; i++) messages.push(wire("slow", i), ...(i > 15 ? [wire("fast", i - 15)] : []));
    receiver.handle({ t: "d", s: "S", f: 1, k: 0, m: messages } as never, "A");
    await waitFor("the ack of all 25", () => acked(sent, 25));
    expect(receiver.held()).toEqual([]);
    expect(park?.parked()).toEqual([{ agent: "slow", messages: 15 }]);
    expect((await metrics.parked.get()).values[0].value).toBe(15);
    // `fast` got its 5, which came after slow's 6th, though `slow` took only 5: nothing held the lane.
    expect(consume(bus, "fast")).toEqual(range(1, 5));
    // `slow` takes its messages 5 at a time as it consumes, in order, each once.
    const got: number[] = [];
    await waitFor("all 20 of slow, in order", async () => {
      got.push(...consume(bus, "slow"));
      return got.length >= 20;
    });
    expect(got).toEqual(range(1, 20));
    await waitFor("the park empty", () => park?.parked().length === 0);
    expect(readdirSync(parkDirOf(bus, "slow"))).toEqual([]);
  });

  it("keeps parking an agent's later messages while it has parked ones, though its inbox has room again", async () => {
    const root = scratch();
    const bus = openBus(root, 2);
    const { sent, receiver } = recordingReceiver(bus, root, 100);
    receiver.handle({ t: "d", s: "S", f: 1, k: 0, m: range(1, 4).map((i) => wire("slow", i)) } as never, "A");
    await waitFor("the ack of 4", () => acked(sent, 4));
    // Room in the inbox again, before the park's first poll: the next message must not overtake 3–4.
    const first = consume(bus, "slow");
    receiver.handle({ t: "d", s: "S", f: 5, k: 4, m: [wire("slow", 5)] } as never, "A");
    await waitFor("the ack of 5", () => acked(sent, 5));
    const got = [...first];
    await waitFor("all 5 of slow", async () => {
      got.push(...consume(bus, "slow"));
      return got.length >= 5;
    });
    expect(got).toEqual(range(1, 5));
  });

  it("holds the lane at the first message its full park cannot take, and goes on once it has room", async () => {
    const root = scratch();
    const bus = openBus(root, 3);
    const { sent, receiver, park } = recordingReceiver(bus, root, 4);
    const all = range(1, 12).map((i) => wire("slow", i));
    receiver.handle({ t: "d", s: "S", f: 1, k: 0, m: all } as never, "A");
    await waitFor("the ack of 7", () => acked(sent, 7));
    expect(acked(sent, 8)).toBe(false);
    expect(receiver.held()).toEqual([{ from: "A", lane: 0, agent: "slow", seq: 8 }]);
    expect(park?.parked()).toEqual([{ agent: "slow", messages: 4 }]);
    // Frames behind the hold are dropped until the park has room; then a resync asks for 8.
    receiver.handle({ t: "d", s: "S", f: 8, k: 0, m: all.slice(7) } as never, "A");
    expect(receiver.held()).toEqual([{ from: "A", lane: 0, agent: "slow", seq: 8 }]);
    const got = consume(bus, "slow");
    await waitFor("a resync from 8", () => sent.some((frame) => frame.t === "r" && frame.e === 8));
    // As a sender does: every resync is answered with the messages from its sequence on.
    let answered = 0;
    await waitFor("all 12 of slow", async () => {
      for (; answered < sent.length; answered++) {
        const frame = sent[answered];
        if (frame.t === "r" && frame.e !== undefined)
          receiver.handle({ t: "d", s: "S", f: frame.e, k: 0, m: all.slice(frame.e - 1) } as never, "A");
      }
      got.push(...consume(bus, "slow"));
      return got.length >= 12;
    });
    expect(got).toEqual(range(1, 12));
    await waitFor("the ack of 12", () => acked(sent, 12));
  });

  it("moves what was parked before a restart into the inbox, and recovery counts parked messages as written", async () => {
    const root = scratch();
    const bus = openBus(root, 2);
    const before = recordingReceiver(bus, root, 100);
    before.receiver.handle(
      { t: "d", s: "S", f: 1, k: 0, m: range(1, 6).map((i) => wire("slow", i)) } as never,
      "A",
    );
    // A crash right after the write: the intent of 1–6 is in the ledger, no commit, no ack.
    before.receiver.close();
    before.park?.close();
    before.ledger.close();
    const parkedFiles = readdirSync(parkDirOf(bus, "slow"));
    expect(parkedFiles.length).toBeGreaterThan(0);
    // A write the crash interrupted left its temporary: the next start removes it.
    writeFileSync(join(parkDirOf(bus, "slow"), `.${parkedFiles[0]}x`), '{"torn');

    const after = recordingReceiver(bus, root, 100); // reopens the ledger
    expect(after.park?.load()).toBe(4);
    expect(readdirSync(parkDirOf(bus, "slow")).sort()).toEqual(parkedFiles.sort());
    after.receiver.recover(after.ledger.intentSenders());
    expect(after.ledger.cursor("A")).toEqual({ stream: "S", seq: 6 });
    // The sender resends 1–6 (it had no ack): nothing is written twice.
    after.receiver.handle(
      { t: "d", s: "S", f: 1, k: 0, m: range(1, 6).map((i) => wire("slow", i)) } as never,
      "A",
    );
    await waitFor("the ack of 6", () => acked(after.sent, 6));
    const got: number[] = [];
    await waitFor("all 6 of slow", async () => {
      got.push(...consume(bus, "slow"));
      return got.length >= 6;
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    got.push(...consume(bus, "slow"));
    expect(got).toEqual(range(1, 6));
  });

  it("moves in a parked file of more messages than a lowered inboxDepthMax once the inbox is empty", async () => {
    const root = scratch();
    const bus = openBus(root, 256); // parked files of 32 messages
    const before = recordingReceiver(bus, root, 100);
    const all = range(1, 296).map((i) => wire("slow", i));
    before.receiver.handle({ t: "d", s: "S", f: 1, k: 0, m: all } as never, "A");
    await waitFor("the ack of 296", () => acked(before.sent, 296));
    expect(before.park?.parked()).toEqual([{ agent: "slow", messages: 40 }]);
    before.receiver.close();
    before.park?.close();
    before.ledger.close();
    const got = consume(bus, "slow");
    expect(got).toEqual(range(1, 256));
    bus.close();

    // Restarted with inboxDepthMax 8: the parked file of 32 can never fit, so it moves in once the
    // inbox is empty; the file of 8 after it waits for the agent to consume.
    const lowered = openBus(root, 8);
    const after = recordingReceiver(lowered, root, 100);
    expect(after.park?.load()).toBe(40);
    await waitFor("all 296 of slow, in order", async () => {
      got.push(...consume(lowered, "slow"));
      return got.length >= 296;
    });
    expect(got).toEqual(range(1, 296));
    await waitFor("the park empty", () => after.park?.parked().length === 0);
  });

  it("ignores a parked file never renamed into place, in recovery and at load", async () => {
    const root = scratch();
    const bus = openBus(root, 1);
    const ledger = DeliveryLedger.open({ dir: join(root, "ledger"), sync: false, fileBytesMax: 1 << 20 });
    ledger.appendIntent("A", {
      stream: "S",
      first: 1,
      last: 2,
      targets: [1, 2].map((i) => ({ to: "slow", id: `slow-${i}` })),
    });
    ledger.close();
    // 1 landed in the inbox; 2's park file was written but the crash came before its rename.
    bus.sendSync("s1", "slow", { id: "slow-1", type: "t", payload: { i: 1 } });
    const { name } = bus.parkForwarded(parkDirOf(bus, "slow"), "s1", "slow", [wire("slow", 2)]);
    const { renameSync } = await import("node:fs");
    renameSync(join(parkDirOf(bus, "slow"), name), join(parkDirOf(bus, "slow"), `.${name}`));

    const { receiver, ledger: reopened, park } = recordingReceiver(bus, root, 100);
    expect(park?.load()).toBe(0);
    receiver.recover(reopened.intentSenders());
    expect(reopened.cursor("A")).toEqual({ stream: "S", seq: 1 }); // 2 is asked for again
    rmSync(join(bus.dir, PARK_DIR), { recursive: true, force: true });
  });
});
