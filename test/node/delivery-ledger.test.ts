// The receiving side's delivery ledger (src/node/delivery/ledger.ts): what a restart reads back
// after a process crash — the last commit, the chain of intents after it, a torn last line.

import { appendFileSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { DeliveryLedger } from "../../src/node/delivery/ledger.js";
import { scratchDir } from "./harness.js";

let root: string | undefined;

afterEach(() => {
  if (root) rmSync(root, { recursive: true, force: true });
  root = undefined;
});

const target = (n: number) => ({ to: "w1", id: `m-${n}` });

describe("delivery ledger", () => {
  it("keeps the intents past a commit appended after them (a durability round's commit)", () => {
    root = scratchDir("cfn-ledger-");
    const dir = join(root, "in");
    for (const fileBytesMax of [1 << 20, 64]) {
      const sub = join(dir, String(fileBytesMax));
      const ledger = DeliveryLedger.open({ dir: sub, sync: false, fileBytesMax });
      ledger.appendIntent("n1", { stream: "s", first: 1, last: 2, targets: [target(1), target(2)] });
      // The round took cursor 2; frames 3–5 were written while it ran; then its commit.
      ledger.appendIntent("n1", {
        stream: "s",
        first: 3,
        last: 5,
        targets: [target(3), target(4), target(5)],
      });
      ledger.commit("n1", { stream: "s", seq: 2 });
      const expected = { stream: "s", first: 3, last: 5, targets: [target(3), target(4), target(5)] };
      expect(ledger.intent("n1")).toEqual(expected);
      // A crash before the next commit (64 bytes: the commit compacted the file).
      const reopened = DeliveryLedger.open({ dir: sub, sync: false, fileBytesMax });
      expect(reopened.cursor("n1")).toEqual({ stream: "s", seq: 2 });
      expect(reopened.intent("n1")).toEqual(expected);
      // A commit inside the chain trims it.
      reopened.commit("n1", { stream: "s", seq: 4 });
      expect(reopened.intent("n1")).toEqual({ stream: "s", first: 5, last: 5, targets: [target(5)] });
      expect(DeliveryLedger.open({ dir: sub, sync: false, fileBytesMax }).intent("n1")).toEqual({
        stream: "s",
        first: 5,
        last: 5,
        targets: [target(5)],
      });
    }
  });

  it("reads back the last commit and the intents after it as one chain", () => {
    root = scratchDir("cfn-ledger-");
    const dir = join(root, "in");
    const ledger = DeliveryLedger.open({ dir, sync: false, fileBytesMax: 1 << 20 });
    ledger.appendIntent("n1", { stream: "s", first: 1, last: 2, targets: [target(1), target(2)] });
    ledger.commit("n1", { stream: "s", seq: 2 });
    ledger.appendIntent("n1", { stream: "s", first: 3, last: 3, targets: [target(3)] });
    ledger.appendIntent("n1", { stream: "s", first: 4, last: 5, targets: [target(4), target(5)] });
    ledger.appendIntent("n/2", { stream: "t", first: 1, last: 1, targets: [target(9)] });
    ledger.commit("n/2", { stream: "t", seq: 1 });
    // No close: a process crash leaves what write(2) put in the page cache.
    const reopened = DeliveryLedger.open({ dir, sync: false, fileBytesMax: 1 << 20 });
    expect(reopened.cursor("n1")).toEqual({ stream: "s", seq: 2 });
    expect(reopened.intent("n1")).toEqual({
      stream: "s",
      first: 3,
      last: 5,
      targets: [target(3), target(4), target(5)],
    });
    expect(reopened.cursor("n/2")).toEqual({ stream: "t", seq: 1 });
    expect(reopened.intentSenders()).toEqual(["n1"]);
    ledger.close();
    reopened.close();
  });

  it("ignores a torn last line and keeps appending after it on a line of its own", () => {
    root = scratchDir("cfn-ledger-");
    const dir = join(root, "in");
    const ledger = DeliveryLedger.open({ dir, sync: false, fileBytesMax: 1 << 20 });
    ledger.commit("n1", { stream: "s", seq: 7 });
    ledger.close();
    appendFileSync(join(dir, "n1.log"), '{"i":{"stream":"s","first":8,"la');
    const reopened = DeliveryLedger.open({ dir, sync: false, fileBytesMax: 1 << 20 });
    expect(reopened.cursor("n1")).toEqual({ stream: "s", seq: 7 });
    expect(reopened.intent("n1")).toBeUndefined();
    reopened.commit("n1", { stream: "s", seq: 9 });
    reopened.close();
    const again = DeliveryLedger.open({ dir, sync: false, fileBytesMax: 1 << 20 });
    expect(again.cursor("n1")).toEqual({ stream: "s", seq: 9 });
    again.close();
  });

  it("compacts a file past fileBytesMax to its last commit", () => {
    root = scratchDir("cfn-ledger-");
    const dir = join(root, "in");
    const ledger = DeliveryLedger.open({ dir, sync: true, fileBytesMax: 4096 });
    for (let seq = 1; seq <= 500; seq++) {
      ledger.appendIntent("n1", { stream: "s", first: seq, last: seq, targets: [target(seq)] });
      ledger.commit("n1", { stream: "s", seq });
    }
    expect(statSync(join(dir, "n1.log")).size).toBeLessThanOrEqual(4096);
    ledger.appendIntent("n1", { stream: "s", first: 501, last: 501, targets: [target(501)] });
    ledger.close();
    const reopened = DeliveryLedger.open({ dir, sync: true, fileBytesMax: 4096 });
    expect(reopened.cursor("n1")).toEqual({ stream: "s", seq: 500 });
    expect(reopened.intent("n1")?.targets).toEqual([target(501)]);
    expect(readFileSync(join(dir, "n1.log"), "utf8").split("\n").filter(Boolean).length).toBeLessThan(100);
    reopened.close();
  });

  it("reads back the written mark past the cursor, drops it once a commit covers it, keeps it through compaction", () => {
    root = scratchDir("cfn-ledger-");
    const dir = join(root, "in");
    const ledger = DeliveryLedger.open({ dir, sync: false, fileBytesMax: 1024 });
    ledger.appendIntent("n1", { stream: "s", first: 1, last: 3, targets: [1, 2, 3].map(target) });
    ledger.markWritten("n1", { stream: "s", seq: 3 });
    ledger.close();
    let reopened = DeliveryLedger.open({ dir, sync: false, fileBytesMax: 1024 });
    expect(reopened.writtenMark("n1")).toEqual({ stream: "s", seq: 3 });
    reopened.commit("n1", { stream: "s", seq: 3 });
    expect(reopened.writtenMark("n1")).toBeUndefined();
    // A mark past the commit that compacts the file (a round's commit behind later writes).
    for (let seq = 4; seq <= 60; seq++) {
      reopened.appendIntent("n1", { stream: "s", first: seq, last: seq, targets: [target(seq)] });
      reopened.markWritten("n1", { stream: "s", seq });
      reopened.commit("n1", { stream: "s", seq: seq - 1 });
    }
    reopened.close();
    expect(statSync(join(dir, "n1.log")).size).toBeLessThanOrEqual(1024);
    reopened = DeliveryLedger.open({ dir, sync: false, fileBytesMax: 1024 });
    expect(reopened.cursor("n1")).toEqual({ stream: "s", seq: 59 });
    expect(reopened.writtenMark("n1")).toEqual({ stream: "s", seq: 60 });
    expect(reopened.intent("n1")?.targets).toEqual([target(60)]);
    reopened.close();
  });
});
