import { describe, expect, it } from "vitest";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { MemoryDataDir, MemoryLogStore } from "../../src/storage/memory-log-store.js";
import { entries, entry, IDENTITY, logStoreCompliance } from "./compliance.js";

const openMemory = (dir: MemoryDataDir, identity = IDENTITY) =>
  MemoryLogStore.open({ dir, identity, logger: silentLogger, metrics: new Metrics() });

logStoreCompliance<MemoryDataDir>("memory twin", {
  newLocation: () => new MemoryDataDir("test"),
  open: openMemory,
});

describe("MemoryLogStore crash model", () => {
  it("crash() keeps every acknowledged save", async () => {
    const dir = new MemoryDataDir();
    const store = await openMemory(dir);
    await store.save({ hardState: { term: 2, vote: "n1", commit: 1 }, entries: entries(1, 3, 2) });
    const revived = store.crash();
    const loaded = await revived.load();
    expect(loaded.hardState).toEqual({ term: 2, vote: "n1", commit: 1 });
    expect(loaded.entries).toEqual(entries(1, 3, 2));
    await revived.close();
  });

  it("crash() drops writes that were not yet synced, and they reject", async () => {
    const dir = new MemoryDataDir();
    const store = await openMemory(dir);
    await store.save({ entries: entries(1, 2, 1) });
    store.pauseSync();
    const unsynced = store.save({ hardState: { term: 5, vote: "n1", commit: 0 }, entries: entries(3, 4, 1) });
    const revived = store.crash();
    await expect(unsynced).rejects.toMatchObject({ code: "CFN_ERR_CLOSED" });
    const loaded = await revived.load();
    expect(loaded.entries).toEqual(entries(1, 2, 1));
    expect(loaded.hardState.term).toBe(0);
    await expect(store.save({ entries: [entry(3, 1)] })).rejects.toMatchObject({ code: "CFN_ERR_CLOSED" });
    await revived.close();
  });

  it("paused writes become durable, in order, on resumeSync()", async () => {
    const dir = new MemoryDataDir();
    const store = await openMemory(dir);
    store.pauseSync();
    const first = store.save({ entries: entries(1, 2, 1) });
    const second = store.save({ entries: entries(2, 3, 2) });
    store.resumeSync();
    await Promise.all([first, second]);
    expect((await store.crash().load()).entries).toEqual([entry(1, 1), ...entries(2, 3, 2)]);
  });

  it("injected write failures reject with CFN_ERR_STORAGE and change nothing", async () => {
    const metrics = new Metrics();
    const store = await MemoryLogStore.open({
      dir: new MemoryDataDir(),
      identity: IDENTITY,
      logger: silentLogger,
      metrics,
    });
    store.injectWriteFailures(1);
    await expect(store.save({ entries: entries(1, 1, 1) })).rejects.toMatchObject({
      code: "CFN_ERR_STORAGE",
    });
    await store.save({ entries: entries(1, 1, 2) });
    expect((await store.load()).entries).toEqual([entry(1, 2)]);
    expect(await metrics.value("cfn_storage_write_failures_total")).toBe(1);
    await store.close();
  });
});
