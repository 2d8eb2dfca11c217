// The delivery ledger on a disk that fills up (src/node/delivery/ledger.ts): the first write that
// fails is a CFN_ERR_STORAGE naming the file, told once to onFailure, and the ledger's last —
// nothing is appended after a torn record — and a reopen once there is room holds every commit
// that was reported written and ignores the torn tail. A real, full tmpfs (needs root).

import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { type CfnError, isCfnError } from "../../src/errors.js";
import { DeliveryLedger } from "../../src/node/delivery/ledger.js";
import { fillSpace, mountTinyTmpfs } from "../storage/tiny-tmpfs.js";
import { scratchDir } from "./harness.js";

let root: string | undefined;
let unmount: (() => void) | undefined;

afterEach(() => {
  unmount?.();
  if (root) rmSync(root, { recursive: true, force: true });
  root = undefined;
  unmount = undefined;
});

const targets = (first: number, last: number) =>
  Array.from({ length: last - first + 1 }, (_, i) => ({ to: "w1", id: `m-${first + i}-${"x".repeat(60)}` }));

describe("delivery ledger on a full disk", () => {
  it("refuses every write after the first failed one, tells onFailure once, and reopens with every reported commit", async () => {
    root = scratchDir("cfn-ledger-full-");
    const mount = join(root, "disk");
    unmount = mountTinyTmpfs(mount, "size=256k");
    const dir = join(mount, "delivery-in");
    const failures: CfnError[] = [];
    const ledger = DeliveryLedger.open({
      dir,
      sync: true,
      fileBytesMax: 1 << 30,
      onFailure: (error) => failures.push(error),
    });
    ledger.commit("n1", { stream: "s", seq: 0 });
    const filler = fillSpace(mount);
    // Intents of ~40 targets (~3 KiB a line) straddle pages: the last write is most likely torn.
    let committed = 0;
    let thrown: unknown;
    for (let seq = 1; seq < 10_000 && thrown === undefined; seq += 40) {
      try {
        ledger.appendIntent("n1", {
          stream: "s",
          first: seq,
          last: seq + 39,
          targets: targets(seq, seq + 39),
        });
        ledger.commit("n1", { stream: "s", seq: seq + 39 });
        committed = seq + 39;
      } catch (error) {
        thrown = error;
      }
    }
    expect(isCfnError(thrown, "CFN_ERR_STORAGE"), String(thrown)).toBe(true);
    const failure = thrown as CfnError;
    expect(failure.message).toContain(join(dir, "n1.log"));
    expect(failure.message).toContain("no space left on device");
    expect((failure.details as { path?: string }).path).toBe(join(dir, "n1.log"));
    expect(failures).toEqual([failure]);
    expect(ledger.isOpen).toBe(false);
    expect(ledger.failed).toBe(failure);
    // Room again: the ledger still takes nothing (a torn record must not be followed by more).
    rmSync(filler);
    const before = readFileSync(join(dir, "n1.log"));
    expect(() => ledger.commit("n1", { stream: "s", seq: committed + 1 })).toThrow(failure);
    expect(() =>
      ledger.appendIntent("n2", { stream: "t", first: 1, last: 1, targets: targets(1, 1) }),
    ).toThrow(failure);
    await expect(ledger.sync()).rejects.toBe(failure);
    expect(readFileSync(join(dir, "n1.log"))).toEqual(before);
    expect(failures).toHaveLength(1);
    ledger.close();
    // A restart: every commit reported written is there; the failed record is not.
    const reopened = DeliveryLedger.open({ dir, sync: true, fileBytesMax: 1 << 30 });
    expect(reopened.cursor("n1")).toEqual({ stream: "s", seq: committed });
    const chain = reopened.intent("n1");
    // The failed append was an intent (nothing written under it) or the commit after a whole one.
    if (chain) expect(chain.first).toBe(committed + 1);
    reopened.appendIntent("n1", {
      stream: "s",
      first: committed + 1,
      last: committed + 1,
      targets: targets(1, 1),
    });
    reopened.commit("n1", { stream: "s", seq: committed + 1 });
    reopened.close();
    const again = DeliveryLedger.open({ dir, sync: true, fileBytesMax: 1 << 30 });
    expect(again.cursor("n1")).toEqual({ stream: "s", seq: committed + 1 });
    expect(again.intent("n1")).toBeUndefined();
    again.close();
  });

  it("opens a file with a torn tail without writing to it (a full disk still opens)", () => {
    root = scratchDir("cfn-ledger-full-");
    const mount = join(root, "disk");
    unmount = mountTinyTmpfs(mount, "size=64k");
    const dir = join(mount, "delivery-in");
    const ledger = DeliveryLedger.open({ dir, sync: false, fileBytesMax: 1 << 20 });
    ledger.commit("n1", { stream: "s", seq: 7 });
    ledger.close();
    // The torn tail a write that failed part way leaves, then a disk with no block left.
    const path = join(dir, "n1.log");
    const torn = `${readFileSync(path, "utf8")}{"c":{"stream":"s","se`;
    rmSync(path);
    writeFileSync(path, torn);
    const filler = fillSpace(mount);
    const reopened = DeliveryLedger.open({ dir, sync: false, fileBytesMax: 1 << 20 });
    expect(reopened.cursor("n1")).toEqual({ stream: "s", seq: 7 });
    expect(readFileSync(path, "utf8")).toBe(torn);
    reopened.close();
    rmSync(filler);
  });
});
