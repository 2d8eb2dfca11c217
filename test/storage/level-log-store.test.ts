import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ClassicLevel } from "classic-level";
import { afterAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import {
  decodeIdentity,
  encodeEntry,
  encodeHardState,
  encodeIdentity,
  entryKey,
  HARD_STATE_KEY,
  IDENTITY_KEY,
} from "../../src/storage/codec.js";
import { LevelLogStore } from "../../src/storage/level-log-store.js";
import { entries, IDENTITY, logStoreCompliance } from "./compliance.js";

const tempDirs: string[] = [];
async function newDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "cfn-level-"));
  tempDirs.push(dir);
  return join(dir, "data");
}
afterAll(async () => {
  for (const dir of tempDirs) await rm(dir, { recursive: true, force: true });
});

const openLevel = (path: string, identity = IDENTITY, metrics = new Metrics()) =>
  LevelLogStore.open({ path, identity, logger: silentLogger, metrics });

logStoreCompliance<string>("LevelDB adapter", {
  newLocation: newDir,
  open: (path, identity) => openLevel(path, identity),
});

describe("LevelLogStore", () => {
  it("treats two spellings of one path as the same data dir", async () => {
    const path = await newDir();
    const store = await openLevel(path);
    await expect(openLevel(`${path}/../data`)).rejects.toMatchObject({ code: "CFN_ERR_DATA_DIR_LOCKED" });
    await store.close();
  });

  it("counts synced batches and written entries", async () => {
    const metrics = new Metrics();
    const store = await openLevel(await newDir(), IDENTITY, metrics);
    await store.save({ hardState: { term: 1, vote: "n1", commit: 0 }, entries: entries(1, 4, 1) });
    await store.save({ entries: entries(5, 5, 1) });
    expect(await metrics.value("cfn_storage_batches_total", { adapter: "leveldb" })).toBe(2);
    expect(await metrics.value("cfn_storage_entries_written_total", { adapter: "leveldb" })).toBe(5);
    await store.close();
  });

  it("migrates a format-1 data dir (one key per entry) to entry blocks at open, keeping the log", async () => {
    const path = await newDir();
    const raw = new ClassicLevel<string, Uint8Array>(path, { keyEncoding: "utf8", valueEncoding: "view" });
    await raw.open({ createIfMissing: true });
    await raw.put(IDENTITY_KEY, encodeIdentity({ ...IDENTITY, formatVersion: 1 }));
    await raw.put(HARD_STATE_KEY, encodeHardState({ term: 2, vote: "n1", commit: 3 }));
    for (const entry of [...entries(1, 3, 1), ...entries(4, 5, 2)])
      await raw.put(entryKey(entry.index), encodeEntry(entry));
    await raw.close();

    const store = await openLevel(path);
    const loaded = await store.load();
    expect(loaded.meta.formatVersion).toBe(2);
    expect(loaded.hardState).toEqual({ term: 2, vote: "n1", commit: 3 });
    expect(loaded.entries).toEqual([...entries(1, 3, 1), ...entries(4, 5, 2)]);
    await store.save({ entries: entries(5, 6, 3) }); // overwrites entry 5 inside the migrated block
    await store.close();

    const after = new ClassicLevel<string, Uint8Array>(path, { keyEncoding: "utf8", valueEncoding: "view" });
    await after.open();
    const identityBytes = await after.get(IDENTITY_KEY);
    expect(identityBytes && decodeIdentity(identityBytes).formatVersion).toBe(2);
    expect(await after.keys({ gte: "e/", lt: "e0" }).all()).toEqual([]);
    await after.close();
    const reopened = await openLevel(path);
    expect((await reopened.load()).entries).toEqual([
      ...entries(1, 3, 1),
      ...entries(4, 4, 2),
      ...entries(5, 6, 3),
    ]);
    await reopened.close();
  });

  it("rejects an empty identity at open", async () => {
    await expect(openLevel(await newDir(), { clusterId: "", nodeId: "n1" })).rejects.toMatchObject({
      code: "CFN_ERR_CONFIG_INVALID",
    });
  });
});
