// Forwarded messages meeting a full bus (a real tiny tmpfs, ENOSPC): the owner node's receiver
// must neither acknowledge nor dead-letter them (the bus failed, not the message), so the sender
// resends them and they land once the bus has room again, each once and in order; with a park,
// a park write failing the same way holds the lane instead of dead-lettering. The bus reports such
// a failure as CFN_ERR_BUS_IO (docs/BUS.md "When the bus directory fails"), a CfnError like the
// refusals the receiver does dead-letter, so this tells the two apart.

import { randomBytes } from "node:crypto";
import { readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Bus } from "../../src/bus/index.js";
import { fillSpace, mountTinyTmpfs } from "../storage/tiny-tmpfs.js";
import { consumeAll, recordingReceiver, type SentControl, wireMessage } from "./delivery-wiring.js";
import { perTestScratch, waitFor } from "./harness.js";

const { scratch, cleanups } = perTestScratch("cfn-delivery-full-bus-");
const mounts: (() => void)[] = [];
afterEach(() => {
  for (const unmount of mounts.splice(0)) unmount();
});

function tinyBusRoot(): string {
  const dir = join(tmpdir(), `cfn-full-${process.pid}-${randomBytes(4).toString("hex")}`);
  const unmount = mountTinyTmpfs(dir, "size=256k");
  mounts.push(() => {
    unmount();
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

const wire = wireMessage;

function openBus(root: string, inboxDepthMax: number): Bus {
  const bus = new Bus({ config: { root, name: "default", inboxDepthMax, batchMessagesMax: 100 } });
  cleanups.push(() => bus.close());
  return bus;
}

const consume = consumeAll;

const ackedUpTo = (sent: SentControl[]) =>
  Math.max(0, ...sent.filter((frame) => frame.t === "a").map((frame) => frame.u ?? 0));
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, k) => from + k);
const deadOf = (bus: Bus, agent: string) => bus.agentStatus(agent)?.deadLetters ?? 0;

describe("forwarded messages on a full bus", () => {
  for (const parked of [false, true]) {
    it(`are not acked or dead-lettered, and land on the resend once there is room (${parked ? "with" : "without"} a park)`, async () => {
      const bus = openBus(tinyBusRoot(), parked ? 5 : 1000);
      const { sent, receiver, metrics } = recordingReceiver(bus, scratch(), parked ? 100 : undefined);
      // The agent's directories exist (a first message landed); with a park, its inbox is full
      // (5 of 5), so what follows goes to the park. Then the tmpfs is filled.
      const first = parked ? 5 : 1;
      receiver.handle(
        { t: "d", s: "S", f: 1, k: 0, m: range(1, first).map((i) => wire("a1", i)) } as never,
        "A",
      );
      await waitFor("the first acks", () => ackedUpTo(sent) >= first);
      if (!parked) expect(consume(bus, "a1")).toEqual([1]);
      const filler = fillSpace(bus.dir);

      const all = range(1, 30).map((i) => wire("a1", i));
      receiver.handle({ t: "d", s: "S", f: first + 1, k: first, m: all.slice(first) } as never, "A");
      await new Promise((resolve) => setTimeout(resolve, 100));
      // Nothing past what the bus holds was acknowledged, nothing dead-lettered.
      const heldUpTo = ackedUpTo(sent);
      expect(deadOf(bus, "a1")).toBe(0);
      expect((await metrics.rejected.get()).values.reduce((sum, v) => sum + v.value, 0)).toBe(0);
      expect(heldUpTo).toBeLessThan(30);
      if (parked) expect(heldUpTo).toBe(5);
      const early = consume(bus, "a1");
      expect(early).toEqual(range(parked ? 1 : 2, heldUpTo));

      // Room again: the sender resends from the first unacknowledged message, as it does on the
      // receiver's resend request ("r", sent when a held stream's inbox has room) or its timeout.
      rmSync(filler);
      await waitFor("the ack of all 30", async () => {
        const from = ackedUpTo(sent);
        if (from >= 30) return true;
        receiver.handle({ t: "d", s: "S", f: from + 1, k: from, m: all.slice(from) } as never, "A");
        await new Promise((resolve) => setTimeout(resolve, 50));
        return ackedUpTo(sent) >= 30;
      });
      const got: number[] = [];
      await waitFor("the rest in the inbox", async () => {
        got.push(...consume(bus, "a1"));
        return got.length >= 30 - heldUpTo;
      });
      expect(got).toEqual(range(heldUpTo + 1, 30));
      expect(deadOf(bus, "a1")).toBe(0);
      // No temporaries left behind by the failed writes (the park's or the inbox's).
      const leftovers = readdirSync(bus.dir, { recursive: true }).filter((name) =>
        String(name).split("/").pop()?.startsWith("."),
      );
      expect(leftovers.filter((name) => !String(name).includes("bus.conf"))).toEqual([]);
    });
  }
});
