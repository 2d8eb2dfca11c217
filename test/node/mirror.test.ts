// The inbox mirror of message persistence (src/node/mirror.ts): what a durability round copies
// before the receiving node acknowledges, and what a whole-host restart (tmpfs emptied) restores.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { ClassicLevel } from "classic-level";
import { describe, expect, it } from "vitest";
import { Bus } from "../../src/bus/index.js";
import { parkDirOf } from "../../src/node/delivery/park.js";
import { InboxMirror, MIRROR_MARKER } from "../../src/node/mirror.js";
import { createLogger, silentLogger } from "../../src/obs/logger.js";
import { RecordCipher } from "../../src/security/record-cipher.js";
import { metricOf, perTestScratch, TestCluster, waitFor } from "./harness.js";

const { scratch, cleanups } = perTestScratch("cfn-mirror-");

function openBus(root: string): Bus {
  const bus = new Bus({ config: { root: join(root, "bus"), name: "default" } });
  cleanups.push(() => bus.close());
  return bus;
}

function openMirror(
  root: string,
  bus: Bus,
  extra: { codec?: RecordCipher; logger?: typeof silentLogger } = {},
): Promise<InboxMirror> {
  return InboxMirror.open({
    bus,
    path: join(root, "mirror"),
    logger: extra.logger ?? silentLogger,
    flushIntervalMs: 60_000,
    shouldMirror: () => true,
    codec: extra.codec,
  });
}

/** A scratch root on tmpfs (/dev/shm), as a bus is: big files and FIFOs live in memory there. */
function shmScratch(): string {
  const root = mkdtempSync("/dev/shm/cfn-mirror-");
  cleanups.push(() => rmSync(root, { recursive: true, force: true }));
  return root;
}

/** A queued file name of `agent`'s inbox (P_T_N_UNIQ_D.json) for `count` messages. */
function queuedName(unique: string, count = 1): string {
  return `1_${String(Date.now() * 1000).padStart(16, "0")}_${count}_${unique}_0.json`;
}

/** The text of one bus message to `to`, with a payload of `payloadBytes` bytes. */
function messageText(id: string, to: string, payloadBytes = 10): string {
  return JSON.stringify({
    v: 1,
    id,
    from: "s1",
    to,
    type: "t",
    priority: "normal",
    ts: Date.now(),
    seq: 1,
    headers: {},
    payload: "p".repeat(payloadBytes),
  });
}

/** Log lines of a logger, parsed. */
function capturingLogger(): { logger: typeof silentLogger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger("test", { level: "debug", write: (line) => lines.push(JSON.parse(line)) });
  return { logger, lines };
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

  it("skips a FIFO in an inbox without blocking: counted and logged once, the other messages mirrored", async () => {
    const root = shmScratch();
    const bus = openBus(root);
    const { logger, lines } = capturingLogger();
    const mirror = await openMirror(root, bus, { logger });
    cleanups.push(() => mirror.close());
    bus.sendSync("s1", "w1", { id: "real", type: "t", payload: 1 });
    const fifo = join(bus.layout.agent("w1").inbox, queuedName("fifo-m"));
    execFileSync("mkfifo", [fifo]);
    // Code that opens the FIFO blocking waits for a writer: this one comes after 2 s and writes a
    // message, so the old mirror returned (late, with the FIFO's text mirrored) rather than hang.
    const writer: ChildProcess = spawn(
      "sh",
      ["-c", 'sleep 2; printf "%s" "$0" > "$1"', messageText("fifo-text", "w1"), fifo],
      {
        stdio: "ignore",
      },
    );
    cleanups.push(() => {
      if (writer.exitCode === null && writer.pid !== undefined) writer.kill("SIGKILL");
    });
    const started = performance.now();
    await mirror.sweep();
    await mirror.mirrorAgents(["w1"]);
    await mirror.sweep();
    expect(performance.now() - started).toBeLessThan(1000);
    expect(mirror.size).toBe(1); // "real" only
    expect(await bus.metrics.value("cfn_node_mirror_skipped_files_total", { reason: "not_regular" })).toBe(1);
    const skips = lines.filter((line) => String(line.msg).startsWith("inbox entry not mirrored"));
    expect(skips).toHaveLength(1);
    expect(skips[0]).toMatchObject({ agent: "w1", reason: expect.stringContaining("not a regular file") });
  }, 10_000);

  it("never follows a symlinked inbox entry: not mirrored, not restored after a host restart", async () => {
    const root = shmScratch();
    const bus = openBus(root);
    const mirror = await openMirror(root, bus);
    bus.sendSync("s1", "w1", { id: "real", type: "t", payload: 1 });
    const outside = join(root, "outside.json");
    writeFileSync(outside, messageText("planted", "w1"));
    const inbox = bus.layout.agent("w1").inbox;
    symlinkSync(outside, join(inbox, queuedName("link-a")));
    symlinkSync("/etc/hostname", join(inbox, queuedName("link-b")));
    await mirror.mirrorAgents(["w1"]);
    await mirror.sweep();
    expect(mirror.size).toBe(1);
    expect(await bus.metrics.value("cfn_node_mirror_skipped_files_total", { reason: "not_regular" })).toBe(2);
    const after = await hostRestart(root, bus, mirror);
    expect(after.restored).toBe(1);
    expect(readdirSync(after.bus.layout.agent("w1").inbox)).toHaveLength(1);
    expect(inboxIds(after.bus, "w1")).toEqual(["real"]);
  });

  it("bounds what it reads by the bus's limit for the file's name: an oversized single file is skipped, a batch up to its bound mirrored", async () => {
    const root = shmScratch();
    const bus = openBus(root); // messageBytesMax 1 MiB
    const { messageBytesMax } = bus.config;
    const mirror = await openMirror(root, bus);
    const paths = bus.layout.agent("w1");
    bus.layout.ensureAgent(paths, true);
    const put = (name: string, text: string) => {
      writeFileSync(join(paths.tmp, name), text);
      renameSync(join(paths.tmp, name), join(paths.inbox, name));
    };
    // 300 MB in the report; 40 MB shows it here: never read, never stored.
    put(queuedName("huge-a"), "y".repeat(40 * 1024 * 1024));
    put(queuedName("huge-b"), messageText("just-over", "w1", messageBytesMax));
    // A batch of 3 may be up to 3 × (messageBytesMax + 64) bytes: this one, 2.5 MiB, is mirrored.
    const batch = JSON.stringify({
      v: 1,
      batch: ["b1", "b2", "b3"].map((id) => JSON.parse(messageText(id, "w1", 850 * 1024))),
    });
    expect(batch.length).toBeGreaterThan(2 * messageBytesMax);
    put(queuedName("batch-c", 3), batch);
    await mirror.mirrorAgents(["w1"]);
    await mirror.sweep();
    expect(mirror.size).toBe(1);
    expect(await bus.metrics.value("cfn_node_mirror_skipped_files_total", { reason: "oversized" })).toBe(2);
    // biome-ignore lint/suspicious/noExplicitAny: the mirror's LevelDB, to see what is stored
    const db = (mirror as any).db as ClassicLevel<string, string>;
    let storedBytes = 0;
    for await (const value of db.values({ gte: "m!", lt: "m!\xff" })) storedBytes += value.length;
    expect(storedBytes).toBe(batch.length);
    const after = await hostRestart(root, bus, mirror);
    expect(after.restored).toBe(1);
    expect(inboxIds(after.bus, "w1")).toEqual(["b1", "b2", "b3"]);
  });

  it("does not mirror a file that is not UTF-8: restoring decoded text would deliver other bytes", async () => {
    const root = shmScratch();
    const bus = openBus(root);
    const mirror = await openMirror(root, bus);
    const paths = bus.layout.agent("w1");
    bus.layout.ensureAgent(paths, true);
    const name = queuedName("latin-1");
    const bytes = Buffer.from(messageText("latin", "w1"));
    bytes[bytes.indexOf('"payload":"') + 11] = 0xe9; // "é" in Latin-1: no UTF-8
    writeFileSync(join(paths.tmp, name), bytes);
    renameSync(join(paths.tmp, name), join(paths.inbox, name));
    bus.sendSync("s1", "w1", { id: "real", type: "t" });
    await mirror.mirrorAgents(["w1"]);
    await mirror.sweep();
    expect(mirror.size).toBe(1);
    expect(await bus.metrics.value("cfn_node_mirror_skipped_files_total", { reason: "not_utf8" })).toBe(1);
    const after = await hostRestart(root, bus, mirror);
    expect(after.restored).toBe(1);
    expect(inboxIds(after.bus, "w1")).toEqual(["real"]);
  });

  it("counts the mirrored messages a restore dead-letters as undecryptable", async () => {
    const root = shmScratch();
    const codec = new RecordCipher(randomBytes(32));
    const bus = openBus(root);
    const mirror = await openMirror(root, bus, { codec });
    bus.sendSync("s1", "w1", { id: "kept", type: "t", payload: 1 });
    bus.sendSync("s1", "w1", { id: "altered", type: "t", payload: 2 });
    await mirror.mirrorAgents(["w1"]);
    // biome-ignore lint/suspicious/noExplicitAny: suppressing the final sweep (a crash)
    (mirror as any).sweeping = true;
    await mirror.close();
    bus.close();
    rmSync(join(root, "bus"), { recursive: true, force: true }); // the host restarts: tmpfs emptied
    // One record altered on disk: a flipped byte of its ciphertext fails the tag.
    const db = new ClassicLevel<string, string>(join(root, "mirror"), { valueEncoding: "utf8" });
    await db.open();
    const records = await db.iterator({ gte: "m!", lt: "m!\xff" }).all();
    const [key, value] = records[records.length - 1];
    const parts = value.split(".");
    const last = parts[parts.length - 1];
    parts[parts.length - 1] = `${last[0] === "A" ? "B" : "A"}${last.slice(1)}`;
    await db.put(key, parts.join("."));
    await db.close();
    const fresh = openBus(root);
    const reopened = await openMirror(root, fresh, { codec });
    cleanups.push(() => reopened.close());
    expect(await reopened.restore()).toBe(1);
    expect(inboxIds(fresh, "w1")).toEqual(["kept"]);
    const reasons = readdirSync(fresh.layout.agent("w1").dead).filter((name) => name.endsWith(".reason"));
    expect(reasons).toHaveLength(1);
    expect(await fresh.metrics.value("cfn_node_mirror_undecryptable_messages_total")).toBe(1);
  });
});

describe("inbox mirror on a --persistence node", () => {
  it("keeps serving with a FIFO and a symlink in a local inbox: the sweep skips them, counted once each", async () => {
    const cluster = await TestCluster.create(1, "cfn-mirror-node-");
    cleanups.push(() => cluster.stop());
    const [n1] = cluster.nodes;
    await cluster.startAll(["--persistence"]);
    const bus = n1.bus();
    cleanups.push(() => bus.close());
    bus.sendSync("s1", "w1", { id: "real", type: "t", payload: 1 });
    const inbox = bus.layout.agent("w1").inbox;
    execFileSync("mkfifo", [join(inbox, queuedName("fifo-m"))]);
    const outside = join(cluster.root, "outside.json");
    writeFileSync(outside, messageText("planted", "w1"));
    symlinkSync(outside, join(inbox, queuedName("link-a")));
    // Sweeps run every 50 ms; one that opened the FIFO blocking would freeze the node for good.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const ready = await fetch(`${n1.api}/readyz`, { signal: AbortSignal.timeout(3000) }).catch(
      (error: Error) => error,
    );
    expect(ready instanceof Error ? `no answer: ${ready.message}` : ready.status).toBe(200);
    await waitFor(
      "both skips counted",
      async () => (await metricOf(n1, "cfn_node_mirror_skipped_files_total")) >= 2,
    );
    await new Promise((resolve) => setTimeout(resolve, 200)); // more sweeps: still counted once each
    expect(await metricOf(n1, "cfn_node_mirror_skipped_files_total", { reason: "not_regular" })).toBe(2);
  }, 30_000);
});
