// The bus in one process, on real files: send, receive order, batches, limits, bad input,
// redelivery, dead-letter, visibility timeout, shutdown drain, status and metrics.

import { execFileSync } from "node:child_process";
import {
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { LATENCY_SAMPLES_PENDING_MAX } from "../../src/bus/bus-metrics.js";
import { hostTag } from "../../src/bus/clock.js";
import { moveToDeadLetter } from "../../src/bus/dead-letter.js";
import { Bus, type Delivery, type Mailbox } from "../../src/bus/index.js";
import { dirFdsMailboxesMax, MAILBOX_DIR_FDS_MAX, mailboxDirFdsHeld } from "../../src/bus/mailbox.js";
import { type ErrorCode, isCfnError } from "../../src/errors.js";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { openTestBus, tempRoot } from "./helpers.js";

let root: string;
let cleanup: () => void;
const open: Mailbox[] = [];

beforeEach(() => {
  ({ root, cleanup } = tempRoot());
});

afterEach(() => {
  for (const mailbox of open.splice(0)) mailbox.close();
  cleanup();
});

function mailboxOf(bus: Bus, agent: string): Mailbox {
  const mailbox = bus.openMailbox(agent);
  open.push(mailbox);
  return mailbox;
}

function expectCode(action: () => unknown, code: ErrorCode): void {
  let caught: unknown;
  try {
    action();
  } catch (error) {
    caught = error;
  }
  expect(isCfnError(caught, code), `expected ${code}, got ${String(caught)}`).toBe(true);
}

function receiveAll(mailbox: Mailbox): Delivery[] {
  const all: Delivery[] = [];
  for (;;) {
    const batch = mailbox.receiveNow(100);
    if (batch.length === 0) return all;
    all.push(...batch);
  }
}

describe("send and receive", () => {
  it("delivers a message with its full envelope", async () => {
    const bus = openTestBus(root);
    const mailbox = mailboxOf(bus, "worker");
    const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const result = bus.sendSync("lead", "worker", {
      type: "task",
      payload: { n: 1 },
      headers: { traceparent },
    });
    const [delivery] = await mailbox.receive({ timeoutMs: 1000 });
    expect(delivery.message).toMatchObject({
      v: 1,
      id: result.ids[0],
      from: "lead",
      to: "worker",
      type: "task",
      priority: "normal",
      seq: 1,
      headers: { traceparent },
      payload: { n: 1 },
    });
    expect(delivery.deliveries).toBe(1);
    mailbox.ack(delivery);
    expect(bus.agentStatus("worker")).toMatchObject({ inboxDepth: 0, claimed: 0 });
  });

  it("creates directories 0700 under <root>/<name>/<shard>/<agent>", () => {
    const bus = openTestBus(root);
    bus.sendSync("a", "b", { type: "t" });
    const paths = bus.layout.agent("b");
    expect(paths.dir).toBe(join(root, "test", String(paths.shard), "b"));
    for (const dir of [paths.dir, paths.tmp, paths.inbox, paths.claimed, paths.dead]) {
      expect(statSync(dir).mode & 0o777).toBe(0o700);
    }
    expect(readFileSync(join(root, "test", "bus.conf"), "utf8")).toBe("version=1\nshards=16\n");
  });

  it("refuses a bus.conf it cannot read instead of falling back to its own shard count", () => {
    for (const text of ["shards=abc\n", "version=1\nshards=0\n", "version=2\nshards=16\n", ""]) {
      const dir = join(root, "badconf");
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      writeFileSync(join(dir, "bus.conf"), text);
      expectCode(() => openTestBus(root, { name: "badconf", shards: 7 }), "CFN_ERR_CONFIG_INVALID");
      rmSync(dir, { recursive: true });
    }
  });

  it("removes a crashed writer's temporary by its pid only when the UNIQ is a writer's <host>-<pid>-<hex>-<n>", () => {
    const bus = openTestBus(root);
    bus.sendSync("a", "w", { type: "t" });
    const { tmp } = bus.layout.agent("w");
    const deadPid = 4_000_000; // above any pid_max
    const ours = `1_0000000000000001_1_${hostTag()}-${deadPid}-0a1b2c3d-1_0.json`;
    const uuidShaped = `1_0000000000000001_1_12345678-1234-${deadPid}-8765-123456789012_0.json`;
    writeFileSync(join(tmp, ours), "{");
    writeFileSync(join(tmp, uuidShaped), "{");
    bus.openMailbox("w", { watch: false, heartbeat: false }).close();
    // The writer's own form names a dead pid: removed at once. A UUID is no pid: it ages out.
    expect(readdirSync(tmp).sort()).toEqual([uuidShaped]);
  });

  it("removes a bus.conf temporary an opener that crashed left behind, once it is old, not a fresh one", () => {
    openTestBus(root).close();
    const dir = join(root, "test");
    const old = join(dir, ".bus.conf.crashed-opener");
    const fresh = join(dir, ".bus.conf.opening-now");
    writeFileSync(old, "version=1\nshards=16\n");
    writeFileSync(fresh, "version=1\nshards=16\n");
    const longAgo = new Date(Date.now() - 10 * 60_000);
    utimesSync(old, longAgo, longAgo);
    openTestBus(root).close();
    expect(readdirSync(dir).filter((name) => name.startsWith(".bus.conf."))).toEqual([
      ".bus.conf.opening-now",
    ]);
  });

  it("refuses a bad configuration with CFN_ERR_CONFIG_INVALID naming the field, creating nothing", () => {
    const dir = join(root, "refused");
    for (const [config, field] of [
      [{ root: dir, name: ".." }, "bus.name"],
      [{ root: dir, shards: 0 }, "bus.shards"],
    ] as const) {
      let error: unknown;
      try {
        new Bus({ config });
      } catch (caught) {
        error = caught;
      }
      expect(isCfnError(error, "CFN_ERR_CONFIG_INVALID")).toBe(true);
      expect((error as Error).message).toContain(field);
    }
    expect(() => statSync(dir)).toThrow();
  });

  it("waits in receive until a message arrives", async () => {
    const bus = openTestBus(root);
    const mailbox = mailboxOf(bus, "worker");
    const pending = mailbox.receive({ timeoutMs: 5000 });
    setTimeout(() => bus.sendSync("lead", "worker", { type: "late" }), 30);
    const deliveries = await pending;
    expect(deliveries.map((d) => d.message.type)).toEqual(["late"]);
  });

  it("returns an empty list when the deadline passes", async () => {
    const bus = openTestBus(root);
    expect(await mailboxOf(bus, "worker").receive({ timeoutMs: 20 })).toEqual([]);
  });

  it("finds messages without fs.watch events (rescan safety net)", async () => {
    const bus = openTestBus(root, { rescanIntervalMs: 10 });
    const mailbox = bus.openMailbox("worker", { watch: false });
    open.push(mailbox);
    const pending = mailbox.receive({ timeoutMs: 5000 });
    setTimeout(() => bus.sendSync("lead", "worker", { type: "polled" }), 20);
    expect((await pending).map((d) => d.message.type)).toEqual(["polled"]);
  });

  it("orders by priority, then arrival, keeping per-sender order (property)", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            sender: fc.constantFrom("s1", "s2", "s3"),
            priority: fc.constantFrom("high" as const, "normal" as const, "low" as const),
          }),
          {
            minLength: 1,
            maxLength: 40,
          },
        ),
        (plan) => {
          const { root: caseRoot, cleanup: caseCleanup } = tempRoot();
          try {
            const bus = openTestBus(caseRoot);
            plan.forEach((step, index) => {
              bus.sendSync(step.sender, "worker", { type: "t", priority: step.priority, payload: index });
            });
            const mailbox = bus.openMailbox("worker", { watch: false, heartbeat: false });
            const got = receiveAll(mailbox).map((d) => d.message);
            mailbox.close();
            const rank = { high: 0, normal: 1, low: 2 };
            const expected = plan
              .map((step, index) => ({ ...step, index }))
              .sort((a, b) => rank[a.priority] - rank[b.priority] || a.index - b.index);
            expect(got.map((m) => m.payload)).toEqual(expected.map((step) => step.index));
          } finally {
            caseCleanup();
          }
        },
      ),
      { numRuns: 25 },
    );
  });

  it("keeps file names unique: 3,000 sends, 3,000 files", () => {
    const bus = openTestBus(root, { inboxDepthMax: 10_000 });
    const names = new Set<string>();
    for (let index = 0; index < 3000; index++) names.add(bus.sendSync("a", "b", { type: "t" }).file);
    expect(names.size).toBe(3000);
    expect(readdirSync(bus.layout.agent("b").inbox)).toHaveLength(3000);
  });
});

describe("batches", () => {
  it("writes one file per batch and delivers its messages in order", () => {
    const bus = openTestBus(root);
    const result = bus.sendBatchSync(
      "lead",
      "worker",
      Array.from({ length: 100 }, (_, n) => ({ type: "task", payload: n })),
    );
    expect(readdirSync(bus.layout.agent("worker").inbox)).toEqual([result.file]);
    expect(result.file.split("_")[2]).toBe("100");
    expect(bus.inboxDepth("worker")).toBe(100);
    const mailbox = mailboxOf(bus, "worker");
    const got = receiveAll(mailbox);
    expect(got.map((d) => d.message.payload)).toEqual(Array.from({ length: 100 }, (_, n) => n));
    expect(got.map((d) => d.message.id)).toEqual(result.ids);
    mailbox.ack(got.slice(0, 50));
    expect(readdirSync(bus.layout.agent("worker").claimed)).toHaveLength(1); // not all settled yet
    mailbox.ack(got.slice(50));
    expect(readdirSync(bus.layout.agent("worker").claimed)).toHaveLength(0);
  });

  it("redelivers only the nacked messages of a batch", () => {
    const bus = openTestBus(root);
    bus.sendBatchSync(
      "lead",
      "worker",
      [0, 1, 2, 3].map((n) => ({ type: "task", payload: n })),
    );
    const mailbox = mailboxOf(bus, "worker");
    const first = mailbox.receiveNow(4);
    mailbox.ack([first[0], first[2]]);
    mailbox.nack(first[1]);
    mailbox.nack(first[3]);
    const again = receiveAll(mailbox);
    expect(again.map((d) => d.message.payload)).toEqual([1, 3]);
    expect(again.every((d) => d.deliveries === 2)).toBe(true);
  });

  it("refuses a batch over batchMessagesMax and an empty batch", () => {
    const bus = openTestBus(root, { batchMessagesMax: 10 });
    expectCode(
      () =>
        bus.sendBatchSync(
          "a",
          "b",
          Array.from({ length: 11 }, () => ({ type: "t" })),
        ),
      "CFN_ERR_BATCH_TOO_LARGE",
    );
    expectCode(() => bus.sendBatchSync("a", "b", []), "CFN_ERR_INVALID_MESSAGE");
  });
});

describe("messages forwarded from another node", () => {
  it("keep the seq their sender's bus gave them and leave this bus's own sequence alone", () => {
    const bus = openTestBus(root);
    bus.sendSync("a", "b", { type: "t", payload: 1 }); // this bus's seq 1 for a
    bus.sendForwardedSync("a", "b", { type: "t", payload: 2, seq: 4711 });
    bus.sendForwardedBatchSync("a", "b", [
      { type: "t", payload: 3, seq: 4712 },
      { type: "t", payload: 4 }, // from an older node: this bus assigns one
    ]);
    bus.sendSync("a", "b", { type: "t", payload: 5 });
    const mailbox = bus.openMailbox("b", { heartbeat: false, watch: false });
    expect(receiveAll(mailbox).map((d) => [d.message.payload, d.message.seq])).toEqual([
      [1, 1],
      [2, 4711],
      [3, 4712],
      [4, 2],
      [5, 3],
    ]);
    expectCode(() => bus.sendForwardedSync("a", "b", { type: "t", seq: -1 }), "CFN_ERR_INVALID_MESSAGE");
    expectCode(() => bus.sendForwardedSync("a", "b", { type: "t", seq: 1.5 }), "CFN_ERR_INVALID_MESSAGE");
  });
});

describe("limits and bad input from callers", () => {
  it("refuses an oversized message with CFN_ERR_MESSAGE_TOO_LARGE and writes nothing", () => {
    const bus = openTestBus(root, { messageBytesMax: 1024 });
    expectCode(
      () => bus.sendSync("a", "b", { type: "t", payload: "x".repeat(2000) }),
      "CFN_ERR_MESSAGE_TOO_LARGE",
    );
    expectCode(
      () => bus.sendSync("a", "b", { type: "t", payload: "é".repeat(600) }),
      "CFN_ERR_MESSAGE_TOO_LARGE",
    );
    expect(bus.inboxDepth("b")).toBe(0);
  });

  it("refuses invalid agent ids and path traversal before touching the disk", () => {
    const bus = openTestBus(root);
    for (const id of ["../escape", "a/b", "..", "", "x".repeat(129)]) {
      expectCode(() => bus.sendSync("a", id, { type: "t" }), "CFN_ERR_INVALID_AGENT_ID");
      expectCode(() => bus.sendSync(id, "a", { type: "t" }), "CFN_ERR_INVALID_AGENT_ID");
      expectCode(() => bus.openMailbox(id), "CFN_ERR_INVALID_AGENT_ID");
    }
    expect(readdirSync(root)).toEqual(["test"]);
    expect(readdirSync(join(root, "test"))).toEqual(["bus.conf"]);
  });

  it("dead-letters a message past its cfn-expires-at as expired instead of delivering it", async () => {
    const metrics = new Metrics();
    const bus = openTestBus(root, {}, { metrics });
    bus.sendSync("a", "w", { id: "stale", type: "t", headers: { "cfn-expires-at": String(Date.now() - 1) } });
    bus.sendSync("a", "w", {
      id: "fresh",
      type: "t",
      headers: { "cfn-expires-at": String(Date.now() + 60_000) },
    });
    bus.sendSync("a", "w", { id: "plain", type: "t" });
    const mailbox = bus.openMailbox("w", { watch: false, heartbeat: false });
    const got = mailbox.receiveNow(10);
    expect(got.map((delivery) => delivery.message.id)).toEqual(["fresh", "plain"]);
    mailbox.ack(got);
    mailbox.close();
    const { dead } = bus.layout.agent("w");
    const reasons = readdirSync(dead).filter((name) => name.endsWith(".reason"));
    expect(reasons).toHaveLength(1);
    expect(JSON.parse(readFileSync(join(dead, reasons[0]), "utf8"))).toMatchObject({ cause: "expired" });
    const counted =
      (await metrics.registry.getSingleMetric("cfn_bus_dead_letters_total")?.get())?.values ?? [];
    expect(counted.find((value) => value.labels.reason === "expired")?.value).toBe(1);
  });

  it("dead-letters the expired messages of a batch as a file of their own and delivers the rest", async () => {
    const metrics = new Metrics();
    const bus = openTestBus(root, {}, { metrics });
    const past = { "cfn-expires-at": String(Date.now() - 1) };
    const future = { "cfn-expires-at": String(Date.now() + 60_000) };
    bus.sendBatchSync("a", "w", [
      { id: "stale-1", type: "t", headers: past },
      { id: "fresh", type: "t", headers: future },
      { id: "stale-2", type: "t", headers: past },
      { id: "plain", type: "t", headers: { "cfn-expires-at": "not-a-number" } },
    ]);
    bus.sendBatchSync("a", "w", [
      { id: "stale-3", type: "t", headers: past },
      { id: "stale-4", type: "t", headers: past },
    ]);
    const mailbox = bus.openMailbox("w", { watch: false, heartbeat: false });
    const got = mailbox.receiveNow(10);
    expect(got.map((delivery) => delivery.message.id)).toEqual(["fresh", "plain"]);
    mailbox.ack(got);
    const { dead, claimed, inbox } = bus.layout.agent("w");
    expect(readdirSync(claimed)).toEqual([]);
    expect(readdirSync(inbox)).toEqual([]);
    mailbox.close();
    const files = readdirSync(dead).filter((name) => !name.endsWith(".reason"));
    const ids = files.flatMap((name) => [
      ...readFileSync(join(dead, name), "utf8").matchAll(/"id":"([^"]+)"/g),
    ]);
    expect(ids.map((match) => match[1]).sort()).toEqual(["stale-1", "stale-2", "stale-3", "stale-4"]);
    for (const name of readdirSync(dead).filter((entry) => entry.endsWith(".reason")))
      expect(JSON.parse(readFileSync(join(dead, name), "utf8"))).toMatchObject({ cause: "expired" });
    expect(await metrics.value("cfn_bus_dead_letters_total", { reason: "expired" })).toBe(2);
  });

  it("refuses malformed messages from callers", () => {
    const bus = openTestBus(root);
    expectCode(() => bus.sendSync("a", "b", { type: "has space" }), "CFN_ERR_INVALID_MESSAGE");
    expectCode(
      () => bus.sendSync("a", "b", { type: "t", priority: "urgent" as never }),
      "CFN_ERR_INVALID_MESSAGE",
    );
    expectCode(
      () => bus.sendSync("a", "b", { type: "t", headers: { "bad header": "x" } }),
      "CFN_ERR_INVALID_MESSAGE",
    );
    expectCode(() => bus.sendSync("a", "b", { type: "t", payload: { big: 1n } }), "CFN_ERR_INVALID_MESSAGE");
    expectCode(
      () => bus.sendSync("a", "b", { type: "t", id: "no spaces allowed" }),
      "CFN_ERR_INVALID_MESSAGE",
    );
    // Headers are text that crosses nodes and exporters: no prototype slot, no lone surrogate.
    expectCode(
      () => bus.sendSync("a", "b", { type: "t", headers: JSON.parse('{"__proto__":"x"}') }),
      "CFN_ERR_INVALID_MESSAGE",
    );
    expectCode(
      () => bus.sendSync("a", "b", { type: "t", headers: { trace: "\ud800" } }),
      "CFN_ERR_INVALID_MESSAGE",
    );
    expect(bus.inboxDepth("b")).toBe(0);
    bus.sendSync("a", "b", { type: "t", headers: { emoji: "😀" } });
  });
});

describe("backpressure", () => {
  it("a 2,000-message burst into inboxDepthMax 1000: exactly 1000 accepted, 1000 refused, none lost or duplicated", async () => {
    const metrics = new Metrics();
    const bus = openTestBus(root, { inboxDepthMax: 1000 }, { metrics });
    const accepted: string[] = [];
    let refused = 0;
    for (let index = 0; index < 2000; index++) {
      try {
        accepted.push(bus.sendSync("burst", "worker", { type: "t", payload: index }).ids[0]);
      } catch (error) {
        if (!isCfnError(error, "CFN_ERR_INBOX_FULL")) throw error;
        refused++;
      }
    }
    expect(accepted).toHaveLength(1000);
    expect(refused).toBe(1000);
    expect(await metrics.value("cfn_bus_inbox_overflows_total")).toBe(1000);
    const mailbox = mailboxOf(bus, "worker");
    const got = receiveAll(mailbox).map((d) => d.message.id);
    expect(got).toEqual(accepted);
  });

  it("counts claimed messages and batch sizes in the depth", () => {
    const bus = openTestBus(root, { inboxDepthMax: 10, batchMessagesMax: 10 });
    bus.sendBatchSync(
      "a",
      "w",
      Array.from({ length: 8 }, () => ({ type: "t" })),
    );
    const mailbox = mailboxOf(bus, "w");
    mailbox.receiveNow(1); // the whole batch file is now claimed
    expect(bus.agentStatus("w")).toMatchObject({ inboxDepth: 0, claimed: 8 });
    expectCode(
      () =>
        bus.sendBatchSync(
          "a",
          "w",
          Array.from({ length: 3 }, () => ({ type: "t" })),
        ),
      "CFN_ERR_INBOX_FULL",
    );
    bus.sendBatchSync(
      "a",
      "w",
      Array.from({ length: 2 }, () => ({ type: "t" })),
    );
    expectCode(() => bus.sendSync("a", "w", { type: "t" }), "CFN_ERR_INBOX_FULL");
  });

  it("waits for room up to waitMs, then succeeds or refuses", async () => {
    const bus = openTestBus(root, { inboxDepthMax: 1 });
    bus.sendSync("a", "w", { type: "first" });
    await expect(bus.send("a", "w", { type: "second" }, { waitMs: 30 })).rejects.toMatchObject({
      code: "CFN_ERR_INBOX_FULL",
    });
    const mailbox = mailboxOf(bus, "w");
    setTimeout(() => mailbox.ack(mailbox.receiveNow(1)), 30);
    const result = await bus.send("a", "w", { type: "second" }, { waitMs: 5000 });
    expect(result.ids).toHaveLength(1);
    expect((await mailbox.receive({ timeoutMs: 1000 }))[0].message.type).toBe("second");
  });

  it("does not spend sequence numbers on refused sends", () => {
    const bus = openTestBus(root, { inboxDepthMax: 1 });
    bus.sendSync("a", "w", { type: "t" });
    expectCode(() => bus.sendSync("a", "w", { type: "t" }), "CFN_ERR_INBOX_FULL");
    const mailbox = mailboxOf(bus, "w");
    mailbox.ack(mailbox.receiveNow(1));
    bus.sendSync("a", "w", { type: "t" });
    expect(mailbox.receiveNow(1)[0].message.seq).toBe(2);
  });
});

describe("bad files in an inbox go to dead-letter; the receiver keeps serving", () => {
  const cases: [string, (inbox: string) => void, string][] = [
    [
      "malformed JSON",
      (inbox) => writeFileSync(join(inbox, "1_0000000000000001_1_bad-1_0.json"), "{not json"),
      "malformed",
    ],
    [
      "truncated message",
      (inbox) =>
        writeFileSync(
          join(inbox, "1_0000000000000002_1_bad-2_0.json"),
          '{"v":1,"id":"x","from":"a","to":"worker","type":"t",\n"headers":{},\n"payl',
        ),
      "malformed",
    ],
    [
      "oversized file",
      (inbox) => writeFileSync(join(inbox, "1_0000000000000003_1_bad-3_0.json"), `"${"x".repeat(5000)}"`),
      "oversized",
    ],
    ["foreign file name", (inbox) => writeFileSync(join(inbox, "README.txt"), "hello"), "foreign"],
    ["directory", (inbox) => mkdirSync(join(inbox, "subdir")), "foreign"],
    [
      "empty file",
      (inbox) => writeFileSync(join(inbox, "1_0000000000000004_1_bad-4_0.json"), ""),
      "malformed",
    ],
    [
      "message for another agent",
      (inbox) =>
        writeFileSync(
          join(inbox, "1_0000000000000005_1_bad-5_0.json"),
          '{"v":1,"id":"x","from":"a","to":"someone-else","type":"t","priority":"normal","seq":1,"ts":1,\n"headers":{},\n"payload":null}\n',
        ),
      "misaddressed",
    ],
    // Entries named like messages that are no regular files: never opened blocking (a FIFO froze
    // the receiver, and a node's proxy with it), never followed (a symlink made it read
    // another file with its rights), never a CFN_ERR_INTERNAL (a directory, a dangling link).
    [
      "FIFO named like a message",
      (inbox) => execFileSync("mkfifo", [join(inbox, "1_0000000000000007_1_fifo-1_0.json")]),
      "foreign",
    ],
    [
      "directory named like a message",
      (inbox) => mkdirSync(join(inbox, "1_0000000000000008_1_dir-1_0.json")),
      "foreign",
    ],
    [
      "symlink to a valid message elsewhere",
      (inbox) => {
        const elsewhere = join(inbox, "..", "elsewhere.json");
        writeFileSync(
          elsewhere,
          '{"v":1,"id":"smuggled","from":"a","to":"worker","type":"good","priority":"normal","seq":1,"ts":1,\n"headers":{},\n"payload":null}\n',
        );
        symlinkSync(elsewhere, join(inbox, "1_0000000000000009_1_sym-1_0.json"));
      },
      "foreign",
    ],
    [
      "dangling symlink",
      (inbox) => symlinkSync("/nonexistent/x", join(inbox, "1_0000000000000010_1_dangle-1_0.json")),
      "foreign",
    ],
    [
      // Decoding would turn the bytes into U+FFFD: a message other than the one written.
      "invalid UTF-8 in a payload",
      (inbox) =>
        writeFileSync(
          join(inbox, "1_0000000000000011_1_utf-1_0.json"),
          Buffer.concat([
            Buffer.from(
              '{"v":1,"id":"x","from":"a","to":"worker","type":"t","priority":"normal","seq":1,"ts":1,\n"headers":{},\n"payload":"',
            ),
            Buffer.from([0xc3, 0x28, 0xff]),
            Buffer.from('"}\n'),
          ]),
        ),
      "malformed",
    ],
    [
      "batch count mismatch",
      (inbox) => writeFileSync(join(inbox, "1_0000000000000006_5_bad-6_0.json"), '{"v":1,"batch":[\n]}\n'),
      "malformed",
    ],
  ];

  it.each(cases)("%s", async (_label, plant, cause) => {
    const metrics = new Metrics();
    const bus = openTestBus(root, { messageBytesMax: 1024 }, { metrics });
    const mailbox = mailboxOf(bus, "worker");
    plant(mailbox.paths.inbox);
    bus.sendSync("lead", "worker", { type: "good" });
    const deliveries = await mailbox.receive({ timeoutMs: 1000, max: 10 });
    expect(deliveries.map((d) => d.message.type)).toEqual(["good"]);
    const dead = readdirSync(mailbox.paths.dead).sort();
    expect(dead).toHaveLength(2);
    const reasonFile = dead.find((name) => name.endsWith(".reason"))!;
    const reason = JSON.parse(readFileSync(join(mailbox.paths.dead, reasonFile), "utf8"));
    expect(reason.cause).toBe(cause);
    expect(await metrics.value("cfn_bus_dead_letters_total", { reason: cause })).toBe(1);
    expect(bus.agentStatus("worker")?.deadLetters).toBe(1);
  });
});

it("a payload nested deeper than JSON_DEPTH_MAX is malformed, not a stack overflow later", async () => {
  const bus = openTestBus(root, { messageBytesMax: 1024 * 1024 });
  const mailbox = mailboxOf(bus, "worker");
  const deep = `${"[".repeat(200_000)}${"]".repeat(200_000)}`;
  writeFileSync(
    join(mailbox.paths.inbox, "1_0000000000000001_1_deep-1_0.json"),
    `{"v":1,"id":"deep","from":"a","to":"worker","type":"t","priority":"normal","seq":1,"ts":1,"headers":{},"payload":${deep}}`,
  );
  bus.sendSync("lead", "worker", { type: "good", payload: { nested: [[["fine"]]] } });
  const deliveries = await mailbox.receive({ timeoutMs: 1000, max: 10 });
  expect(deliveries.map((d) => d.message.type)).toEqual(["good"]);
  const reasonFile = readdirSync(mailbox.paths.dead).find((name) => name.endsWith(".reason"))!;
  const reason = JSON.parse(readFileSync(join(mailbox.paths.dead, reasonFile), "utf8"));
  expect(reason).toMatchObject({ cause: "malformed", reason: expect.stringContaining("nested deeper") });
});

it("a foreign name seen twice keeps both dead letters and both reasons", () => {
  const bus = openTestBus(root);
  const mailbox = mailboxOf(bus, "worker");
  writeFileSync(join(mailbox.paths.inbox, "notes.txt"), "one");
  mailbox.receiveNow(1);
  writeFileSync(join(mailbox.paths.inbox, "notes.txt"), "two");
  mailbox.receiveNow(1);
  const dead = readdirSync(mailbox.paths.dead);
  expect(dead).toHaveLength(4);
  expect(dead.filter((name) => name.endsWith(".reason"))).toHaveLength(2);
  expect(
    dead
      .filter((name) => !name.endsWith(".reason"))
      .map((name) => readFileSync(join(mailbox.paths.dead, name), "utf8"))
      .sort(),
  ).toEqual(["one", "two"]);
  expect(readdirSync(mailbox.paths.tmp)).toEqual([]);
});

describe("redelivery and dead-letter", () => {
  it("nack redelivers, and deliveriesMax moves the message to dead-letter with the reason", () => {
    const bus = openTestBus(root, { deliveriesMax: 3 });
    bus.sendSync("lead", "worker", { type: "poison" });
    const mailbox = mailboxOf(bus, "worker");
    for (let attempt = 1; attempt <= 3; attempt++) {
      const [delivery] = mailbox.receiveNow(1);
      expect(delivery.deliveries).toBe(attempt);
      mailbox.nack(delivery, { reason: `handler failed ${attempt}` });
    }
    expect(mailbox.receiveNow(1)).toEqual([]);
    const dead = readdirSync(mailbox.paths.dead);
    const reason = JSON.parse(
      readFileSync(join(mailbox.paths.dead, dead.find((n) => n.endsWith(".reason"))!), "utf8"),
    );
    expect(reason).toMatchObject({ cause: "deliveries_exhausted", deliveries: 3 });
    expect(reason.reason).toContain("handler failed 3");
    const message = JSON.parse(
      readFileSync(join(mailbox.paths.dead, dead.find((n) => !n.endsWith(".reason"))!), "utf8"),
    );
    expect(message.type).toBe("poison");
  });

  it("visibility timeout redelivers an unacknowledged claim", async () => {
    const bus = openTestBus(root, { visibilityTimeoutMs: 100, rescanIntervalMs: 10 });
    bus.sendSync("lead", "worker", { type: "slow" });
    const mailbox = mailboxOf(bus, "worker");
    const [first] = mailbox.receiveNow(1);
    const other = mailboxOf(bus, "worker"); // a second consumer of the same inbox
    expect(other.receiveNow(1)).toEqual([]);
    const [again] = await other.receive({ timeoutMs: 5000 });
    expect(again.message.id).toBe(first.message.id);
    expect(again.deliveries).toBe(2);
    other.ack(again);
    mailbox.ack(first); // late ack of a claim that moved on: harmless
    expect(bus.agentStatus("worker")).toMatchObject({ inboxDepth: 0, claimed: 0 });
  });

  it("a mailbox's own claim that outlives the visibility timeout is redelivered; the late ack is ignored", async () => {
    const bus = openTestBus(root, { visibilityTimeoutMs: 100, rescanIntervalMs: 10 });
    bus.sendSync("lead", "worker", { type: "forgotten" });
    const mailbox = mailboxOf(bus, "worker");
    const [first] = mailbox.receiveNow(1);
    const [again] = await mailbox.receive({ timeoutMs: 5000 });
    expect(again.message.id).toBe(first.message.id);
    expect(again.deliveries).toBe(2);
    mailbox.ack(first); // late: ignored, does not touch the new claim
    expect(bus.agentStatus("worker")).toMatchObject({ inboxDepth: 0, claimed: 1 });
    mailbox.ack(again);
    expect(bus.agentStatus("worker")).toMatchObject({ inboxDepth: 0, claimed: 0 });
  });

  it("double settlement is refused", () => {
    const bus = openTestBus(root);
    bus.sendSync("a", "w", { type: "t" });
    const mailbox = mailboxOf(bus, "w");
    const [delivery] = mailbox.receiveNow(1);
    mailbox.ack(delivery);
    expectCode(() => mailbox.ack(delivery), "CFN_ERR_INVALID_MESSAGE");
  });
});

describe("graceful shutdown", () => {
  it("drain processes every queued message, close hands back the rest, removeDirs cleans up", async () => {
    const bus = openTestBus(root);
    for (let index = 0; index < 50; index++) bus.sendSync("lead", "worker", { type: "t", payload: index });
    const mailbox = bus.openMailbox("worker");
    const held = mailbox.receiveNow(5); // handed out, not settled
    const seen: unknown[] = [];
    const acked = await mailbox.drain((message) => {
      seen.push(message.payload);
    });
    expect(acked).toBe(45);
    expect(seen).toEqual(Array.from({ length: 45 }, (_, n) => n + 5));
    mailbox.close({ removeDirs: true });
    // The 5 held messages were handed back (not lost), so the directory stays.
    expect(bus.agentStatus("worker")).toMatchObject({ inboxDepth: 5, claimed: 0 });
    const next = bus.openMailbox("worker");
    const back = receiveAll(next);
    expect(back.map((d) => d.message.payload)).toEqual(held.map((d) => d.message.payload));
    expect(back.every((d) => d.deliveries === 1)).toBe(true); // handing back does not count
    next.ack(back);
    next.close({ removeDirs: true });
    expect(bus.agentStatus("worker")).toBeUndefined();
    expect(bus.listAgents()).toEqual([]);
  });

  it("drain stops at its deadline between messages and hands back what it claimed but did not handle", async () => {
    const bus = openTestBus(root);
    for (let index = 0; index < 10; index++) bus.sendSync("lead", "worker", { type: "t", payload: index });
    const mailbox = bus.openMailbox("worker");
    const seen: unknown[] = [];
    const acked = await mailbox.drain(
      async (message) => {
        seen.push(message.payload);
        await new Promise((resolve) => setTimeout(resolve, 150));
      },
      { timeoutMs: 200 },
    );
    // The second message started before the deadline and finished; the rest were not started.
    expect(acked).toBe(2);
    expect(seen).toEqual([0, 1]);
    expect(bus.agentStatus("worker")).toMatchObject({ inboxDepth: 8, claimed: 0 });
    mailbox.close();
    const next = bus.openMailbox("worker");
    const back = receiveAll(next);
    expect(back.map((d) => d.message.payload)).toEqual([2, 3, 4, 5, 6, 7, 8, 9]);
    expect(back.every((d) => d.deliveries === 1)).toBe(true); // handed back, not counted
    next.ack(back);
    next.close({ removeDirs: true });
  });

  it("shutdown drains, hands back and removes the mailbox: every message is processed or still queued", async () => {
    const bus = openTestBus(root);
    for (let index = 0; index < 200; index++) bus.sendSync("lead", "worker", { type: "t", payload: index });
    const mailbox = bus.openMailbox("worker");
    const early = mailbox.receiveNow(10);
    mailbox.ack(early.slice(0, 5));
    const seen: number[] = early.slice(0, 5).map((d) => d.message.payload as number);
    let sentDuringDrain = 0;
    const result = await mailbox.shutdown((message) => {
      seen.push(message.payload as number);
      if (sentDuringDrain < 20)
        bus.sendSync("lead", "worker", { type: "t", payload: 200 + sentDuringDrain++ });
    });
    // The 5 held messages were handed back; everything else, including what raced in, processed.
    expect(result.processed).toBe(195 + 20 - 5);
    expect(result.remaining).toBe(5);
    const next = bus.openMailbox("worker");
    const back = receiveAll(next);
    next.ack(back);
    seen.push(...back.map((d) => d.message.payload as number));
    expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: 220 }, (_, n) => n));
    expect((await next.shutdown()).remaining).toBe(0);
    expect(bus.listAgents()).toEqual([]);
  });

  it("a send after the mailbox was removed recreates it", () => {
    const bus = openTestBus(root);
    bus.sendSync("lead", "worker", { type: "t" });
    const mailbox = bus.openMailbox("worker");
    mailbox.ack(mailbox.receiveNow(1));
    mailbox.close({ removeDirs: true });
    expect(bus.agentStatus("worker")).toBeUndefined();
    bus.sendSync("lead", "worker", { type: "after" });
    expect(bus.agentStatus("worker")?.inboxDepth).toBe(1);
  });

  it("a consumer keeps receiving after another consumer of the agent removed the directories", () => {
    const bus = openTestBus(root);
    const first = bus.openMailbox("worker", { watch: false, heartbeat: false });
    const second = mailboxOf(bus, "worker");
    first.close({ removeDirs: true }); // the inbox is empty: the directories go
    expect(bus.agentStatus("worker")).toBeUndefined();
    // The send creates them again; the second consumer's directory descriptors (where it holds
    // them) name the removed ones, so it must notice and claim from the new ones.
    bus.sendSync("lead", "worker", { type: "after" });
    const got = second.receiveNow(1);
    expect(got.map((d) => d.message.type)).toEqual(["after"]);
    second.ack(got);
    expect(bus.agentStatus("worker")).toMatchObject({ inboxDepth: 0, claimed: 0 });
  });

  it("a mailbox whose directories were deleted and created again under it keeps receiving", () => {
    const bus = openTestBus(root);
    const mailbox = mailboxOf(bus, "worker");
    bus.sendSync("lead", "worker", { type: "before" });
    mailbox.ack(mailbox.receiveNow(1));
    rmSync(join(mailbox.paths.dir), { recursive: true }); // e.g. an operator's rm -r
    for (let index = 0; index < 3; index++) bus.sendSync("lead", "worker", { type: "t", payload: index });
    const got = receiveAll(mailbox);
    expect(got.map((d) => d.message.payload)).toEqual([0, 1, 2]);
    mailbox.ack(got);
    expect(bus.agentStatus("worker")).toMatchObject({ inboxDepth: 0, claimed: 0 });
  });

  it.each([
    ["the helper's directory descriptors", true],
    ["node:fs paths", false],
  ])(
    "a waiting consumer keeps serving and is woken again after another consumer removed the directories (%s)",
    async (_, nativeIo) => {
      // A rescan interval longer than the waits: only the watch can wake the receiver in time.
      const bus = openTestBus(root, { rescanIntervalMs: 60_000, nativeIo });
      const waiting = mailboxOf(bus, "worker");
      const other = bus.openMailbox("worker", { watch: false, heartbeat: false });
      other.close({ removeDirs: true }); // the inbox is empty: the directories go
      // The removal's own events (a name "inbox") come while it waits: no throw, nothing to deliver.
      expect(await waiting.receive({ timeoutMs: 100 })).toEqual([]);
      expect(waiting.receiveNow(1)).toEqual([]); // its listing finds them gone and creates them again
      const pending = waiting.receive({ timeoutMs: 30_000 });
      await new Promise((resolve) => setTimeout(resolve, 20));
      bus.sendSync("lead", "worker", { type: "after" });
      const got = await pending;
      expect(got.map((d) => d.message.type)).toEqual(["after"]);
      waiting.ack(got);
      expect(readdirSync(waiting.paths.dead)).toEqual([]);
    },
  );

  it("dead-lettering a name whose agent directories are gone is a no-op, not an error", () => {
    const bus = openTestBus(root);
    const mailbox = bus.openMailbox("worker", { watch: false, heartbeat: false });
    const paths = mailbox.paths;
    mailbox.close();
    rmSync(paths.dir, { recursive: true }); // tmp/ with it: nowhere to write the reason
    const context = { paths, logger: silentLogger, metrics: new Metrics(), busMetrics: bus.busMetrics };
    const moved = moveToDeadLetter(context, join(paths.inbox, "inbox"), "inbox", "foreign", "x", 0, "u1");
    expect(moved).toBe(false);
  });

  it("an ack lands after another consumer's removal moved the claim into new directories", () => {
    const bus = openTestBus(root);
    const mailbox = mailboxOf(bus, "worker");
    bus.sendSync("lead", "worker", { type: "t" });
    const got = mailbox.receiveNow(1);
    expect(got).toHaveLength(1);
    // What removeDirsIfEmpty of another process does when a claim races in after its check
    // (PROTOCOL.md §10): the agent directory to trash, new directories, late files moved back.
    const paths = mailbox.paths;
    const trash = join(root, "trash-by-hand");
    renameSync(paths.dir, trash);
    bus.layout.ensureAgent(paths, true);
    for (const file of readdirSync(join(trash, "claimed")))
      renameSync(join(trash, "claimed", file), join(paths.claimed, file));
    rmSync(trash, { recursive: true });
    mailbox.ack(got);
    expect(readdirSync(paths.claimed)).toEqual([]); // not left to come back after the visibility timeout
  });

  it("a mailbox that fails to open holds no directory descriptors", () => {
    const bus = openTestBus(root);
    const paths = bus.layout.agent("worker");
    bus.layout.ensureAgent(paths, true);
    // dead/ is a file: creating the mailbox's directories fails (a claim that cannot be moved
    // back no longer fails the open: the sweep logs it and goes on).
    rmSync(paths.dead, { recursive: true });
    writeFileSync(paths.dead, "");
    const before = mailboxDirFdsHeld();
    for (let attempt = 0; attempt < 3; attempt++) expect(() => bus.openMailbox("worker")).toThrow();
    expect(mailboxDirFdsHeld()).toBe(before);
  });

  it("mailboxes take at most a quarter of the open-file limit in directory descriptors", () => {
    const limits = (soft: string) =>
      `Limit                     Soft Limit           Hard Limit           Units\nMax open files            ${soft}                 4096                 files\n`;
    expect(dirFdsMailboxesMax(limits("1024"))).toBe(128);
    expect(dirFdsMailboxesMax(limits("1048576"))).toBe(MAILBOX_DIR_FDS_MAX);
    expect(dirFdsMailboxesMax(limits("unlimited"))).toBe(MAILBOX_DIR_FDS_MAX);
    expect(dirFdsMailboxesMax("")).toBe(MAILBOX_DIR_FDS_MAX);
  });

  it("a mailbox holds its directory descriptors while open and releases them on close", () => {
    const bus = openTestBus(root);
    const before = mailboxDirFdsHeld();
    const mailboxes = ["w1", "w2", "w3"].map((agent) => bus.openMailbox(agent, { watch: false }));
    expect(mailboxDirFdsHeld()).toBe(before + (bus.io.native ? 3 : 0));
    for (const mailbox of mailboxes) mailbox.close();
    mailboxes[0].close(); // twice: released once
    expect(mailboxDirFdsHeld()).toBe(before);
  });

  it("a closed mailbox refuses receive with CFN_ERR_CLOSED", async () => {
    const bus = openTestBus(root);
    const mailbox = bus.openMailbox("worker");
    mailbox.close();
    await expect(mailbox.receive()).rejects.toMatchObject({ code: "CFN_ERR_CLOSED" });
    bus.close();
    expectCode(() => bus.sendSync("a", "b", { type: "t" }), "CFN_ERR_CLOSED");
  });
});

describe("status, heartbeats and metrics", () => {
  it("reports depth, claimed, dead letters and last-seen per agent", async () => {
    const metrics = new Metrics();
    const bus = openTestBus(root, { heartbeatIntervalMs: 100 }, { metrics });
    const mailbox = mailboxOf(bus, "worker");
    const before = bus.agentStatus("worker")!.lastSeenMs!;
    for (let index = 0; index < 3; index++) bus.sendSync("lead", "worker", { type: "t" });
    bus.sendSync("lead", "idle", { type: "t" });
    mailbox.receiveNow(1);
    writeFileSync(join(mailbox.paths.inbox, "junk"), "x");
    await new Promise((resolve) => setTimeout(resolve, 250));
    const status = bus.status();
    expect(status.agents.map((a) => a.agentId)).toEqual(["idle", "worker"]);
    const worker = status.agents.find((a) => a.agentId === "worker")!;
    expect(worker).toMatchObject({ inboxDepth: 3, claimed: 1, deadLetters: 0 });
    expect(worker.lastSeenMs!).toBeGreaterThan(before);
    expect(status.agents.find((a) => a.agentId === "idle")!.lastSeenMs).toBeNull();
    expect(await metrics.value("cfn_bus_messages_sent_total")).toBe(4);
    expect(await metrics.value("cfn_bus_messages_received_total")).toBe(1);
    expect(await metrics.value("cfn_bus_inbox_depth", { agent: "worker" })).toBe(4);
    const exposition = await metrics.exposition();
    expect(exposition).toContain("cfn_bus_send_to_receive_seconds_count 1");
  });

  it("hands hot-path counts and latency samples to prom-client on every read, shared by the buses of a registry", async () => {
    const metrics = new Metrics();
    const first = openTestBus(root, {}, { metrics });
    const second = openTestBus(root, {}, { metrics });
    expect(second.busMetrics).toBe(first.busMetrics);
    first.sendSync("a", "b", { type: "t" });
    second.sendSync("a", "b", { type: "t" });
    expect(await metrics.value("cfn_bus_messages_sent_total")).toBe(2);
    second.sendSync("a", "b", { type: "t" });
    expect(await metrics.value("cfn_bus_messages_sent_total")).toBe(3);
    // More samples than the buffer holds: the overflow goes to the histogram, nothing is lost.
    const samples = LATENCY_SAMPLES_PENDING_MAX + 300;
    for (let index = 0; index < samples; index++) first.busMetrics.observeLatency(0.0002);
    const exposition = await metrics.exposition();
    expect(exposition).toContain(`cfn_bus_send_to_receive_seconds_count ${samples}`);
    expect(exposition).toContain(`cfn_bus_send_to_receive_seconds_bucket{le="0.00025"} ${samples}`);
    expect(exposition).toContain('cfn_bus_send_to_receive_seconds_bucket{le="0.0001"} 0');
  });

  it("writes dead letters and overflows to the JSONL stream", async () => {
    const jsonlPath = join(root, "metrics.jsonl");
    const bus = openTestBus(root, { inboxDepthMax: 1 }, { metrics: new Metrics({ jsonlPath }) });
    bus.sendSync("a", "w", { type: "t" });
    expectCode(() => bus.sendSync("a", "w", { type: "t" }), "CFN_ERR_INBOX_FULL");
    const lines = readFileSync(jsonlPath, "utf8")
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    expect(lines[0]).toMatchObject({
      name: "cfn_bus_inbox_overflows_total",
      value: 1,
      labels: { agent: "w" },
    });
  });
});
