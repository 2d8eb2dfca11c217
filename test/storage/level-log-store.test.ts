import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
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

  it("rejects an empty identity at open", async () => {
    await expect(openLevel(await newDir(), { clusterId: "", nodeId: "n1" })).rejects.toMatchObject({
      code: "CFN_ERR_CONFIG_INVALID",
    });
  });
});
