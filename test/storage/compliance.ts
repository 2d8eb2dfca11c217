// One compliance suite for every LogStore adapter (STYLE.md item 2). Each adapter's test file
// calls logStoreCompliance() with a harness that knows how to make and open a location.

import { afterEach, describe, expect, it } from "vitest";
import { isCfnError } from "../../src/errors.js";
import { type Entry, EntryType, type HardState, type Snapshot } from "../../src/raft/types.js";
import type { LogStore, StoreIdentity } from "../../src/storage/log-store.js";

export interface LogStoreHarness<Location> {
  /** A fresh, empty location (a temp dir, a MemoryDataDir). */
  newLocation(): Promise<Location> | Location;
  open(location: Location, identity: StoreIdentity): Promise<LogStore>;
}

export const IDENTITY: StoreIdentity = { clusterId: "cluster-a", nodeId: "n1" };

export function entry(index: number, term: number, text = `e${index}t${term}`): Entry {
  return { index, term, type: EntryType.Normal, data: new TextEncoder().encode(text) };
}

export function entries(from: number, to: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) out.push(entry(i, term));
  return out;
}

export function snapshot(index: number, term: number, bytes = 64): Snapshot {
  return {
    metadata: {
      index,
      term,
      conf: {
        voters: ["n1", "n2", "n3"],
        learners: ["n4"],
        votersOutgoing: [],
        learnersNext: [],
        autoLeave: false,
      },
    },
    data: Uint8Array.from({ length: bytes }, (_, i) => (i * 7 + index) % 256),
  };
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isCfnError(error), `expected a CfnError ${code}, got ${String(error)}`).toBe(true);
  expect((error as { code: string }).code).toBe(code);
}

export function logStoreCompliance<Location>(name: string, harness: LogStoreHarness<Location>): void {
  describe(`LogStore compliance: ${name}`, () => {
    const opened: LogStore[] = [];
    const open = async (location: Location, identity = IDENTITY): Promise<LogStore> => {
      const store = await harness.open(location, identity);
      opened.push(store);
      return store;
    };
    const reopen = async (store: LogStore, location: Location): Promise<LogStore> => {
      await store.close();
      return open(location);
    };

    afterEach(async () => {
      for (const store of opened.splice(0)) await store.close();
    });

    it("an empty store loads the zero hard state and no entries", async () => {
      const store = await open(await harness.newLocation());
      const loaded = await store.load();
      expect(loaded.hardState).toEqual({ term: 0, vote: "", commit: 0 });
      expect(loaded.snapshot).toBeUndefined();
      expect(loaded.entries).toEqual([]);
      expect(loaded.meta).toMatchObject({
        clusterId: "cluster-a",
        nodeId: "n1",
        firstIndex: 1,
        lastIndex: 0,
      });
    });

    it("round-trips hard state and entries, before and after reopen", async () => {
      const location = await harness.newLocation();
      let store = await open(location);
      const hardState: HardState = { term: 3, vote: "n2", commit: 2 };
      const written = [...entries(1, 3, 1), { ...entry(4, 3), type: EntryType.ConfChange }];
      written.push({ index: 5, term: 3, type: EntryType.Normal, data: new Uint8Array(0) });
      await store.save({ hardState, entries: written });
      const beforeReopen = await store.load();
      store = await reopen(store, location);
      for (const loaded of [beforeReopen, await store.load()]) {
        expect(loaded.hardState).toEqual(hardState);
        expect(loaded.entries).toEqual(written);
        expect(loaded.entries[0].data).toBeInstanceOf(Uint8Array);
        expect(loaded.meta).toMatchObject({ firstIndex: 1, lastIndex: 5 });
      }
    });

    it("appends over several batches and keeps the latest hard state", async () => {
      const location = await harness.newLocation();
      let store = await open(location);
      await store.save({ hardState: { term: 1, vote: "n1", commit: 0 }, entries: entries(1, 2, 1) });
      await store.save({ entries: entries(3, 4, 1) });
      await store.save({ hardState: { term: 1, vote: "n1", commit: 4 }, entries: [] });
      store = await reopen(store, location);
      const loaded = await store.load();
      expect(loaded.hardState).toEqual({ term: 1, vote: "n1", commit: 4 });
      expect(loaded.entries.map((e) => e.index)).toEqual([1, 2, 3, 4]);
    });

    it("overwrites a conflicting suffix: entries from the first new index on are replaced", async () => {
      const location = await harness.newLocation();
      let store = await open(location);
      await store.save({ entries: entries(1, 6, 1) });
      await store.save({ entries: entries(3, 4, 2) });
      const expected = [...entries(1, 2, 1), ...entries(3, 4, 2)];
      expect((await store.load()).entries).toEqual(expected);
      store = await reopen(store, location);
      const loaded = await store.load();
      expect(loaded.entries).toEqual(expected);
      expect(loaded.meta.lastIndex).toBe(4);
      // Appending after the overwritten tail continues from the new last index.
      await store.save({ entries: entries(5, 5, 2) });
      expect((await store.load()).entries.map((e) => [e.index, e.term])).toEqual([
        [1, 1],
        [2, 1],
        [3, 2],
        [4, 2],
        [5, 2],
      ]);
    });

    it("overwrites a suffix that is longer than the new entries, down to one entry", async () => {
      const store = await open(await harness.newLocation());
      await store.save({ entries: entries(1, 10, 1) });
      await store.save({ entries: [entry(2, 5)] });
      expect((await store.load()).entries).toEqual([entry(1, 1), entry(2, 5)]);
    });

    it("compacts: stores the snapshot and drops entries up to its index", async () => {
      const location = await harness.newLocation();
      let store = await open(location);
      await store.save({ hardState: { term: 2, vote: "n1", commit: 10 }, entries: entries(1, 10, 2) });
      const snap = snapshot(6, 2);
      await store.compact(snap);
      const beforeReopen = await store.load();
      store = await reopen(store, location);
      for (const loaded of [beforeReopen, await store.load()]) {
        expect(loaded.snapshot).toEqual(snap);
        expect(loaded.entries).toEqual(entries(7, 10, 2));
        expect(loaded.meta).toMatchObject({ firstIndex: 7, lastIndex: 10 });
        expect(loaded.hardState.commit).toBe(10);
      }
      await store.save({ entries: entries(11, 12, 2) });
      expect((await store.load()).entries.map((e) => e.index)).toEqual([7, 8, 9, 10, 11, 12]);
    });

    it("refuses a compaction to a snapshot that is not newer than the stored one", async () => {
      const store = await open(await harness.newLocation());
      await store.save({ entries: entries(1, 10, 1) });
      await store.compact(snapshot(5, 1));
      await expectCode(store.compact(snapshot(5, 1)), "CFN_ERR_COMPACTED");
      await expectCode(store.compact(snapshot(3, 1)), "CFN_ERR_COMPACTED");
      const loaded = await store.load();
      expect(loaded.snapshot?.metadata.index).toBe(5);
      expect(loaded.entries.map((e) => e.index)).toEqual([6, 7, 8, 9, 10]);
    });

    it("compacts past the last entry: the log restarts after the snapshot", async () => {
      const location = await harness.newLocation();
      let store = await open(location);
      await store.save({ entries: entries(1, 3, 1) });
      await store.compact(snapshot(8, 2));
      store = await reopen(store, location);
      let loaded = await store.load();
      expect(loaded.entries).toEqual([]);
      expect(loaded.meta).toMatchObject({ firstIndex: 9, lastIndex: 8 });
      await store.save({ entries: entries(9, 9, 2) });
      loaded = await store.load();
      expect(loaded.entries).toEqual([entry(9, 2)]);
    });

    it("a snapshot in save replaces the log, and following entries are appended after it", async () => {
      const location = await harness.newLocation();
      let store = await open(location);
      await store.save({ hardState: { term: 1, vote: "n1", commit: 3 }, entries: entries(1, 12, 1) });
      const snap = snapshot(8, 3, 5000);
      const hardState = { term: 3, vote: "", commit: 8 };
      await store.save({ hardState, snapshot: snap, entries: entries(9, 10, 3) });
      const beforeReopen = await store.load();
      store = await reopen(store, location);
      for (const loaded of [beforeReopen, await store.load()]) {
        expect(loaded.hardState).toEqual(hardState);
        expect(loaded.snapshot).toEqual(snap);
        expect(loaded.entries).toEqual(entries(9, 10, 3));
        expect(loaded.meta).toMatchObject({ firstIndex: 9, lastIndex: 10 });
      }
    });

    it("rejects a batch that would leave a gap or append below the snapshot, changing nothing", async () => {
      const store = await open(await harness.newLocation());
      await store.save({ entries: entries(1, 3, 1) });
      await expect(store.save({ entries: entries(5, 6, 1) })).rejects.toThrow(/gap/);
      await store.compact(snapshot(2, 1));
      await expect(
        store.save({ hardState: { term: 9, vote: "", commit: 0 }, entries: [entry(2, 1)] }),
      ).rejects.toThrow(/snapshot/);
      const loaded = await store.load();
      expect(loaded.entries).toEqual([entry(3, 1)]);
      expect(loaded.hardState.term).toBe(0);
    });

    it("keeps saves in call order when the caller does not wait between them", async () => {
      const location = await harness.newLocation();
      let store = await open(location);
      const saves: Promise<void>[] = [];
      for (let i = 1; i <= 20; i++)
        saves.push(store.save({ hardState: { term: 1, vote: "", commit: i - 1 }, entries: [entry(i, 1)] }));
      saves.push(store.save({ entries: entries(15, 16, 2) }));
      await Promise.all(saves);
      store = await reopen(store, location);
      const loaded = await store.load();
      expect(loaded.entries.map((e) => e.index)).toEqual([...Array(16).keys()].map((i) => i + 1));
      expect(loaded.entries[15].term).toBe(2);
      expect(loaded.hardState.commit).toBe(19);
    });

    it("writes the identity at first open and refuses another cluster's or node's data dir", async () => {
      const location = await harness.newLocation();
      const store = await open(location);
      await store.save({ entries: entries(1, 1, 1) });
      await store.close();
      await expectCode(
        harness.open(location, { clusterId: "cluster-a", nodeId: "n2" }),
        "CFN_ERR_DATA_DIR_FOREIGN",
      );
      await expectCode(
        harness.open(location, { clusterId: "cluster-b", nodeId: "n1" }),
        "CFN_ERR_DATA_DIR_FOREIGN",
      );
      const again = await open(location);
      expect((await again.load()).entries).toEqual([entry(1, 1)]);
    });

    it("names both identities in the foreign data dir error", async () => {
      const location = await harness.newLocation();
      await (await open(location)).close();
      const error = await harness
        .open(location, { clusterId: "cluster-z", nodeId: "n9" })
        .catch((e: unknown) => e);
      expect(String((error as Error).message)).toMatch(/cluster-a.*n1.*cluster-z.*n9/);
    });

    it("refuses a second open of a location that is open, and allows it after close", async () => {
      const location = await harness.newLocation();
      const store = await open(location);
      await expectCode(harness.open(location, IDENTITY), "CFN_ERR_DATA_DIR_LOCKED");
      await store.close();
      const again = await open(location);
      expect((await again.load()).meta.nodeId).toBe("n1");
    });

    it("a closed store refuses work with CFN_ERR_CLOSED; close is idempotent", async () => {
      const store = await open(await harness.newLocation());
      await store.close();
      await store.close();
      await expectCode(store.save({ entries: [entry(1, 1)] }), "CFN_ERR_CLOSED");
      await expectCode(store.load(), "CFN_ERR_CLOSED");
      await expectCode(store.compact(snapshot(1, 1)), "CFN_ERR_CLOSED");
    });

    it("does not alias caller buffers: mutating after save changes nothing stored", async () => {
      const store = await open(await harness.newLocation());
      const written = entry(1, 1, "original");
      await store.save({ entries: [written] });
      written.data[0] = 0;
      const loaded = await store.load();
      expect(new TextDecoder().decode(loaded.entries[0].data)).toBe("original");
      loaded.entries[0].data[0] = 0;
      expect(new TextDecoder().decode((await store.load()).entries[0].data)).toBe("original");
    });
  });
}
