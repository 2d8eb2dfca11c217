// The bus across real processes (compiled example agent from dist/; build with `npx tsc -p .`):
// concurrent senders and competing receivers lose nothing, duplicate nothing and keep per-sender
// order; a crashed consumer's claims come back; the 2,000 burst from another process is exact.

import { existsSync } from "node:fs";
import fc from "fast-check";
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { isCfnError } from "../../src/errors.js";
import { jsonLines, NODE_AGENT, nodeAgent, openTestBus, tempRoot } from "./helpers.js";

let root: string;
let cleanup: () => void;

beforeAll(() => {
  if (!existsSync(NODE_AGENT)) throw new Error(`${NODE_AGENT} is missing: run npx tsc -p . first`);
});

beforeEach(() => {
  ({ root, cleanup } = tempRoot());
});

afterEach(() => cleanup());

const common = () => ["--root", root, "--name", "test"];

interface Received {
  id: string;
  from: string;
  seq: number;
  payload: { n: number };
}

/** The messages a recv child printed; its closing {"done":n} line proves the output is complete. */
function received(stdout: string): Received[] {
  const lines = jsonLines(stdout);
  const messages = lines.filter((line) => line.id !== undefined) as Received[];
  expect(lines.at(-1), "recv output ends with its done line").toEqual({ done: messages.length });
  return messages;
}

/** After the senders finished: one low-priority "stop" per receiver, queued behind every message. */
function stopReceivers(busRoot: string, name: string, agent: string, receivers: number): void {
  const bus = openTestBus(busRoot, { name, inboxDepthMax: 100_000 });
  for (let index = 0; index < receivers; index++)
    bus.sendSync("test", agent, { type: "stop", priority: "low" });
}

/** Every receiver saw each sender's messages in increasing seq order. */
function expectPerSenderOrder(perReceiver: Received[][]): void {
  for (const messages of perReceiver) {
    const last = new Map<string, number>();
    for (const message of messages) {
      expect(message.seq, `order of ${message.from}`).toBeGreaterThan(last.get(message.from) ?? 0);
      last.set(message.from, message.seq);
    }
  }
}

describe("multiple processes", () => {
  it("3 senders × 2 receivers: nothing lost, nothing duplicated, per-sender order kept", async () => {
    const perSender = 600;
    const senders = ["s1", "s2", "s3"].map((from, index) =>
      nodeAgent([
        "send",
        ...common(),
        "--from",
        from,
        "--to",
        "worker",
        "--count",
        String(perSender),
        "--batch",
        String(index + 1),
        "--depth-max",
        "100000",
      ]),
    );
    const receivers = [0, 1].map(() =>
      nodeAgent([
        "recv",
        ...common(),
        "--agent",
        "worker",
        "--idle-ms",
        "20000",
        "--max",
        "7",
        "--depth-max",
        "100000",
      ]),
    );
    const sent = await Promise.all(senders);
    stopReceivers(root, "test", "worker", 2);
    const got = await Promise.all(receivers);
    for (const result of [...sent, ...got]) expect(result.code, result.stderr).toBe(0);
    const sentIds = sent.flatMap((result) => jsonLines(result.stdout)[0].ids as string[]);
    expect(sentIds).toHaveLength(3 * perSender);
    const perReceiver = got.map((result) => received(result.stdout));
    const all = perReceiver.flat();
    expect(all).toHaveLength(sentIds.length);
    expect(new Set(all.map((m) => m.id)).size).toBe(all.length);
    expect(new Set(all.map((m) => m.id))).toEqual(new Set(sentIds));
    expectPerSenderOrder(perReceiver);
  });

  it("property: random sender/receiver counts and batch sizes deliver exactly once", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 1, max: 3 }),
        fc.array(fc.integer({ min: 1, max: 20 }), { minLength: 3, maxLength: 3 }),
        async (senderCount, receiverCount, batches) => {
          const { root: caseRoot, cleanup: caseCleanup } = tempRoot();
          try {
            const args = ["--root", caseRoot, "--name", "p", "--depth-max", "100000"];
            const receivers = Array.from({ length: receiverCount }, () =>
              nodeAgent(["recv", ...args, "--agent", "w", "--idle-ms", "20000"]),
            );
            const senders = Array.from({ length: senderCount }, (_, index) =>
              nodeAgent([
                "send",
                ...args,
                "--from",
                `s${index}`,
                "--to",
                "w",
                "--count",
                "100",
                "--batch",
                String(batches[index]),
              ]),
            );
            const sent = (await Promise.all(senders)).flatMap((r) => jsonLines(r.stdout)[0].ids as string[]);
            stopReceivers(caseRoot, "p", "w", receiverCount);
            const perReceiver = (await Promise.all(receivers)).map((r) => received(r.stdout));
            const ids = perReceiver.flat().map((m) => m.id);
            expect(ids.length).toBe(sent.length);
            expect(new Set(ids)).toEqual(new Set(sent));
            expectPerSenderOrder(perReceiver);
          } finally {
            caseCleanup();
          }
        },
      ),
      { numRuns: 3 },
    );
  });

  it("the 2,000 burst from another process: exactly 1000 accepted and 1000 refused", async () => {
    const result = await nodeAgent([
      "send",
      ...common(),
      "--from",
      "burst",
      "--to",
      "worker",
      "--count",
      "2000",
      "--depth-max",
      "1000",
    ]);
    expect(result.code, result.stderr).toBe(0);
    const summary = jsonLines(result.stdout)[0];
    expect(summary.sent).toBe(1000);
    expect(summary.refused).toBe(1000);
    const bus = openTestBus(root);
    const mailbox = bus.openMailbox("worker");
    const ids: string[] = [];
    for (;;) {
      const batch = mailbox.receiveNow(200);
      if (batch.length === 0) break;
      ids.push(...batch.map((d) => d.message.id));
      mailbox.ack(batch);
    }
    mailbox.close();
    expect(ids).toEqual(summary.ids);
  });

  it("concurrent senders stay within the documented bound inboxDepthMax + (k − 1) · 64", async () => {
    const depthMax = 300;
    const senders = ["a", "b", "c"].map((from) =>
      nodeAgent([
        "send",
        ...common(),
        "--from",
        from,
        "--to",
        "worker",
        "--count",
        "400",
        "--depth-max",
        String(depthMax),
      ]),
    );
    const results = (await Promise.all(senders)).map((r) => jsonLines(r.stdout)[0]);
    const accepted = results.reduce((sum, r) => sum + r.sent, 0);
    expect(accepted + results.reduce((sum, r) => sum + r.refused, 0)).toBe(1200);
    const bus = openTestBus(root, { inboxDepthMax: depthMax });
    expect(bus.inboxDepth("worker")).toBe(accepted);
    expect(accepted).toBeGreaterThanOrEqual(depthMax);
    expect(accepted).toBeLessThanOrEqual(depthMax + 2 * 64);
    expect(() => bus.sendSync("late", "worker", { type: "t" })).toThrow(/holds/);
  });

  it("a consumer killed with SIGKILL: its claims are recovered when the mailbox is opened again", async () => {
    const bus = openTestBus(root, { visibilityTimeoutMs: 60_000 });
    const ids = Array.from(
      { length: 10 },
      (_, n) => bus.sendSync("lead", "worker", { type: "task", payload: n }).ids[0],
    );
    const crash = await nodeAgent([
      "claim-and-crash",
      ...common(),
      "--agent",
      "worker",
      "--count",
      "4",
      "--visibility-ms",
      "60000",
    ]);
    expect(crash.code).toBeNull(); // killed by a signal
    const claimed = jsonLines(crash.stdout)[0];
    expect(claimed.claimed).toBe(4);
    expect(bus.agentStatus("worker")).toMatchObject({ inboxDepth: 6, claimed: 4 });
    const mailbox = bus.openMailbox("worker"); // recovery on open: the claimant is dead
    const got: string[] = [];
    const deliveries = mailbox.receiveNow(100);
    for (const delivery of deliveries) got.push(delivery.message.id);
    mailbox.ack(deliveries);
    mailbox.close();
    expect(got.sort()).toEqual([...ids].sort());
    const redelivered = deliveries.filter((d) => d.deliveries === 2).map((d) => d.message.id);
    expect(redelivered.sort()).toEqual([...claimed.ids].sort());
  });

  it("refuses sends to a full inbox from another process with CFN_ERR_INBOX_FULL", async () => {
    const bus = openTestBus(root, { inboxDepthMax: 5 });
    for (let index = 0; index < 5; index++) bus.sendSync("a", "worker", { type: "t" });
    const result = await nodeAgent([
      "send",
      ...common(),
      "--from",
      "b",
      "--to",
      "worker",
      "--count",
      "3",
      "--depth-max",
      "5",
    ]);
    expect(jsonLines(result.stdout)[0]).toMatchObject({ sent: 0, refused: 3 });
    let caught: unknown;
    try {
      bus.sendSync("a", "worker", { type: "t" });
    } catch (error) {
      caught = error;
    }
    expect(isCfnError(caught, "CFN_ERR_INBOX_FULL")).toBe(true);
  });
});
