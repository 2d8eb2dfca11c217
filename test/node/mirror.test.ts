// The inbox mirror of message persistence (src/node/mirror.ts): what a durability round copies
// before the receiving node acknowledges, and what a whole-host restart (tmpfs emptied) restores.

import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Bus } from "../../src/bus/index.js";
import { parkDirOf } from "../../src/node/delivery/park.js";
import { InboxMirror, MIRROR_MARKER } from "../../src/node/mirror.js";
import { silentLogger } from "../../src/obs/logger.js";
import { perTestScratch } from "./harness.js";

const { scratch, cleanups } = perTestScratch("cfn-mirror-");

function openBus(root: string): Bus {
  const bus = new Bus({ config: { root: join(root, "bus"), name: "default" } });
  cleanups.push(() => bus.close());
  return bus;
}

function openMirror(root: string, bus: Bus): Promise<InboxMirror> {
  return InboxMirror.open({
    bus,
    path: join(root, "mirror"),
    logger: silentLogger,
    flushIntervalMs: 60_000,
    shouldMirror: () => true,
  });
}

/** The host goes down: tmpfs is emptied; the node restarts and restores from its mirror. */
async function hostRestart(
  root: string,
  bus: Bus,
  mirror: InboxMirror,
): Promise<{ bus: Bus; restored: number }> {
  // A crash: no last sweep (close() skips it while a sweep is marked running).
  // biome-ignore lint/suspicious/noExplicitAny: suppressing the final sweep
  (mirror as any).sweeping = true;
  await mirror.close();
  bus.close();
  rmSync(join(root, "bus"), { recursive: true, force: true });
  const fresh = openBus(root);
  const reopened = await openMirror(root, fresh);
  cleanups.push(() => reopened.close());
  return { bus: fresh, restored: await reopened.restore() };
}

function inboxIds(bus: Bus, agent: string): string[] {
  const mailbox = bus.openMailbox(agent, { heartbeat: false, watch: false });
  try {
    return mailbox.receiveNow(100).map((delivery) => delivery.message.id);
  } finally {
    mailbox.close();
  }
}

describe("inbox mirror", () => {
  it("puts nothing back after a crash of the node process alone: a mirrored message missing from the surviving bus was consumed", async () => {
    const root = scratch();
    const bus = openBus(root);
    const first = await openMirror(root, bus);
    expect(await first.restore()).toBe(0); // the node's start
    bus.sendSync("s1", "w1", { id: "consumed", type: "t", payload: 1 });
    bus.sendSync("s1", "w1", { id: "queued", type: "t", payload: 2 });
    await first.mirrorAgents(["w1"]);
    // The agent consumes one message; the node process dies before a sweep prunes its entry.
    const worker = bus.openMailbox("w1", { heartbeat: false, watch: false });
    worker.ack(worker.receiveNow(1));
    worker.close();
    // biome-ignore lint/suspicious/noExplicitAny: suppressing the final sweep (a crash)
    (first as any).sweeping = true;
    await first.close();
    const reopened = await openMirror(root, bus); // the tmpfs bus is still there
    cleanups.push(() => reopened.close());
    expect(await reopened.restore()).toBe(0);
    expect(inboxIds(bus, "w1")).toEqual(["queued"]);
    await reopened.sweep(); // prunes the consumed message's entry
    expect(reopened.size).toBe(1);
    // And a host restart after that still restores what is waiting.
    const after = await hostRestart(root, bus, reopened);
    expect(after.restored).toBe(1);
    expect(inboxIds(after.bus, "w1")).toEqual(["queued"]);
  });

  it("restores after a reboot though the bus root kept its marker (a bus on disk): the boot id differs", async () => {
    const root = scratch();
    const bus = openBus(root);
    const first = await openMirror(root, bus);
    expect(await first.restore()).toBe(0);
    const marker = join(bus.dir, MIRROR_MARKER);
    const [token, bootId] = readFileSync(marker, "utf8").trim().split(" ");
    expect(bootId).toBe(readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim());
    bus.sendSync("s1", "w1", { id: "lost-in-power-loss", type: "t", payload: 1 });
    await first.mirrorAgents(["w1"]);
    // biome-ignore lint/suspicious/noExplicitAny: suppressing the final sweep (a crash)
    (first as any).sweeping = true;
    await first.close();
    // Power loss: the inbox file was not on the disk yet; the marker, written long before, was.
    rmSync(bus.layout.agent("w1").inbox, { recursive: true, force: true });
    writeFileSync(marker, `${token} 00000000-0000-0000-0000-000000000000\n`);
    const reopened = await openMirror(root, bus);
    cleanups.push(() => reopened.close());
    expect(await reopened.restore()).toBe(1);
    expect(inboxIds(bus, "w1")).toEqual(["lost-in-power-loss"]);
  });

  it("copies parked messages too, keeps them while parked, and puts them back into the inbox after a host restart", async () => {
    const root = scratch();
    const bus = openBus(root);
    const mirror = await openMirror(root, bus);
    bus.sendSync("s1", "w1", { id: "queued", type: "t", payload: 1 });
    const park = parkDirOf(bus, "w1");
    bus.parkForwarded(park, "s1", "w1", [
      { id: "parked-1", type: "t", payload: 2, seq: 7 },
      { id: "parked-2", type: "t", payload: 3, seq: 8 },
    ]);
    writeFileSync(join(park, ".being-written.json"), "partial"); // a park file not renamed yet
    await mirror.mirrorAgents(["w1"]);
    expect(mirror.size).toBe(2);
    await mirror.sweep(); // parked, not consumed: kept
    expect(mirror.size).toBe(2);
    const after = await hostRestart(root, bus, mirror);
    expect(after.restored).toBe(2);
    expect(inboxIds(after.bus, "w1")).toEqual(["queued", "parked-1", "parked-2"]);
  });

  it("copies a message its agent claimed before the round ran, so a host restart puts it back", async () => {
    const root = scratch();
    const bus = openBus(root);
    const mirror = await openMirror(root, bus);
    bus.sendSync("s1", "w1", { id: "claimed", type: "t", payload: 1 });
    bus.sendSync("s1", "w1", { id: "queued", type: "t", payload: 2 });
    // The agent claims one message (not acknowledged: it is working on it) before the round.
    const worker = bus.openMailbox("w1", { heartbeat: false, watch: false });
    expect(worker.receiveNow(1).map((delivery) => delivery.message.id)).toEqual(["claimed"]);
    cleanups.push(() => worker.close()); // the host goes down with the claim held
    await mirror.mirrorAgents(["w1"]);
    const after = await hostRestart(root, bus, mirror);
    expect(after.restored).toBe(2);
    expect(inboxIds(after.bus, "w1").sort()).toEqual(["claimed", "queued"]);
  });

  it("a round waits for the sweep write carrying files it skipped as already known", async () => {
    const root = scratch();
    const bus = openBus(root);
    const mirror = await openMirror(root, bus);
    cleanups.push(() => mirror.close());
    // biome-ignore lint/suspicious/noExplicitAny: holding back the mirror's LevelDB batch
    const db = (mirror as any).db;
    const batch = db.batch.bind(db);
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    db.batch = (ops: unknown, options: unknown) => held.then(() => batch(ops, options));
    bus.sendSync("s1", "w1", { id: "m1", type: "t", payload: 1 });
    const sweep = mirror.sweep(); // reads m1 and starts its write
    let roundDone = false;
    const round = mirror.mirrorAgents(["w1"]).then(() => {
      roundDone = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(roundDone).toBe(false); // m1 is not on disk yet: the round must not let it be acknowledged
    release();
    await Promise.all([sweep, round]);
    expect(roundDone).toBe(true);
  });

  it("copies again what a failed write carried", async () => {
    const root = scratch();
    const bus = openBus(root);
    const mirror = await openMirror(root, bus);
    // biome-ignore lint/suspicious/noExplicitAny: failing the mirror's next LevelDB batch
    const db = (mirror as any).db;
    const batch = db.batch.bind(db);
    db.batch = () => {
      db.batch = batch;
      return Promise.reject(new Error("EIO"));
    };
    bus.sendSync("s1", "w1", { id: "m1", type: "t", payload: 1 });
    await expect(mirror.mirrorAgents(["w1"])).rejects.toThrow("EIO");
    await mirror.mirrorAgents(["w1"]);
    const after = await hostRestart(root, bus, mirror);
    expect(after.restored).toBe(1);
    expect(inboxIds(after.bus, "w1")).toEqual(["m1"]);
  });
});
