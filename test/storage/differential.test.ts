// Differential property test: random sequences of saves (with suffix overwrites), compactions,
// snapshot installs and reopens, applied to the LevelDB adapter and to the memory twin; after
// every step both must load the same state (or both refuse the step).

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { LevelLogStore } from "../../src/storage/level-log-store.js";
import type { LoadedLog, LogStore } from "../../src/storage/log-store.js";
import { MemoryDataDir, MemoryLogStore } from "../../src/storage/memory-log-store.js";
import { entries, IDENTITY, snapshot } from "./compliance.js";

const root = await mkdtemp(join(tmpdir(), "cfn-diff-"));
afterAll(() => rm(root, { recursive: true, force: true }));
let runs = 0;

const step = fc.record({
  kind: fc.integer({ min: 0, max: 9 }),
  a: fc.nat(1000),
  b: fc.nat(1000),
  c: fc.nat(1000),
});
type Step = { kind: number; a: number; b: number; c: number };

async function outcome(run: () => Promise<void>): Promise<string> {
  try {
    await run();
    return "ok";
  } catch (error) {
    return (error as { code?: string }).code ?? "invariant";
  }
}

function boundsOf(loaded: LoadedLog) {
  return {
    snapshotIndex: loaded.meta.firstIndex - 1,
    lastIndex: loaded.meta.lastIndex,
    term: loaded.hardState.term,
  };
}

describe("LevelLogStore and MemoryLogStore agree", () => {
  it("on random sequences of saves, overwrites, compactions, snapshots and reopens", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 25 }), async (steps: Step[]) => {
        const path = join(root, `run-${runs++}`);
        const dir = new MemoryDataDir();
        const openBoth = async (): Promise<[LogStore, LogStore]> => [
          await LevelLogStore.open({
            path,
            identity: IDENTITY,
            logger: silentLogger,
            metrics: new Metrics(),
          }),
          await MemoryLogStore.open({
            dir,
            identity: IDENTITY,
            logger: silentLogger,
            metrics: new Metrics(),
          }),
        ];
        let stores = await openBoth();
        try {
          for (const { kind, a, b, c } of steps) {
            const { snapshotIndex, lastIndex, term } = boundsOf(await stores[1].load());
            let apply: (store: LogStore) => Promise<void>;
            if (kind <= 5) {
              const first = snapshotIndex + 1 + (a % (lastIndex - snapshotIndex + 1));
              const nextTerm = term + (c % 3 === 0 ? 1 : 0) || 1;
              const batch = entries(first, first + (b % 5) - 1, nextTerm);
              const hardState =
                c % 2 === 0 ? { term: nextTerm, vote: "n1", commit: Math.min(b, lastIndex) } : undefined;
              apply = (store) => store.save({ entries: batch, ...(hardState ? { hardState } : {}) });
            } else if (kind <= 7) {
              const index = snapshotIndex + (a % (lastIndex - snapshotIndex + 2));
              apply = (store) => store.compact(snapshot(index, Math.max(term, 1)));
            } else if (kind === 8) {
              const index = snapshotIndex + 1 + (a % 8);
              apply = (store) =>
                store.save({
                  snapshot: snapshot(index, term + 1),
                  entries: entries(index + 1, index + (b % 3), term + 1),
                });
            } else {
              await Promise.all(stores.map((store) => store.close()));
              stores = await openBoth();
              apply = async () => undefined;
            }
            const results = [await outcome(() => apply(stores[0])), await outcome(() => apply(stores[1]))];
            expect(results[0]).toBe(results[1]);
            expect(await stores[0].load()).toEqual(await stores[1].load());
          }
        } finally {
          await Promise.all(stores.map((store) => store.close()));
        }
      }),
      { numRuns: 30 },
    );
  });
});
