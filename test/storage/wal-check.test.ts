// A damaged LevelDB write-ahead log refuses the open instead of LevelDB's silent drop of the damaged
// blocks; a torn tail (a crash, a failed write) is LevelDB's to drop; salvaging keeps a copy.

import {
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ClassicLevel } from "classic-level";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isCfnError } from "../../src/errors.js";
import { closeLevel, openLevel, setDamagedLogPolicy } from "../../src/storage/level-open.js";
import { checkLogs, crc32c } from "../../src/storage/wal-check.js";

const KEYS = 2000;
let root: string;

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "cfn-wal-check-"));
});
afterEach(() => {
  setDamagedLogPolicy({ salvage: false });
  rmSync(root, { recursive: true, force: true });
});

/** A LevelDB whose KEYS writes are all still in its write-ahead log (LevelDB closes without a flush). */
async function writtenDb(name: string): Promise<{ dir: string; log: string }> {
  const dir = join(root, name);
  const db = new ClassicLevel<string, string>(dir, { valueEncoding: "utf8" });
  await db.open();
  for (let i = 0; i < KEYS; i++)
    await db.put(`k${String(i).padStart(6, "0")}`, "v".repeat(200), { sync: i % 500 === 0 });
  await db.close();
  const logs = readdirSync(dir).filter((file) => file.endsWith(".log"));
  expect(logs).toHaveLength(1);
  return { dir, log: join(dir, logs[0]) };
}

function flipByte(path: string, offset: number): void {
  const bytes = readFileSync(path);
  bytes[offset] ^= 0xff;
  writeFileSync(path, bytes);
}

async function keysIn(dir: string): Promise<number> {
  const db = new ClassicLevel<string, string>(dir, { valueEncoding: "utf8" });
  await db.open();
  let count = 0;
  for await (const _ of db.keys()) count++;
  await db.close();
  return count;
}

describe("write-ahead log check", () => {
  it("computes CRC-32C (Castagnoli) as LevelDB does", () => {
    expect(crc32c(Buffer.from("123456789"))).toBe(0xe3069283); // the standard check value
    expect(crc32c(Buffer.alloc(32))).toBe(0x8a9136aa); // RFC 3720 B.4: 32 bytes of zeros
  });

  it("finds nothing wrong in a whole log, and the open keeps every write", async () => {
    const { dir } = await writtenDb("whole");
    expect(checkLogs(dir)).toEqual([]);
    const { db, path } = await openLevel(dir, "test db", "utf8");
    await closeLevel(db, path);
    expect(await keysIn(dir)).toBe(KEYS);
  });

  it("refuses a log damaged in the middle and leaves its bytes as they were", async () => {
    const { dir, log } = await writtenDb("damaged");
    flipByte(log, Math.floor(statSync(log).size / 2));
    const before = readFileSync(log);
    const damage = checkLogs(dir);
    expect(damage).toHaveLength(1);
    expect(damage[0].intactAfter).toBeGreaterThan(0);
    const refused = await openLevel(dir, "test db", "utf8").catch((error: unknown) => error);
    expect(isCfnError(refused) && refused.code).toBe("CFN_ERR_STORAGE");
    expect((refused as Error).message).toMatch(
      /write-ahead log is damaged \(\d+\.log: (checksum mismatch|bad record length) at byte \d+/,
    );
    expect(readFileSync(log).equals(before)).toBe(true); // LevelDB never saw it: nothing dropped yet
    // What the refusal prevents: LevelDB opens the same log and silently loses writes.
    expect(await keysIn(dir)).toBeLessThan(KEYS);
  });

  it("lets LevelDB drop a torn tail: a damaged or cut last record was never reported written", async () => {
    const torn = await writtenDb("torn");
    flipByte(torn.log, statSync(torn.log).size - 5);
    expect(checkLogs(torn.dir)).toEqual([]);
    const cut = await writtenDb("cut");
    truncateSync(cut.log, statSync(cut.log).size - 100);
    expect(checkLogs(cut.dir)).toEqual([]);
    for (const dir of [torn.dir, cut.dir]) {
      const { db, path } = await openLevel(dir, "test db", "utf8");
      await closeLevel(db, path);
      expect(await keysIn(dir)).toBe(KEYS - 1);
    }
  });

  it("salvaging opens a damaged log, reports it and keeps a copy of the damaged file", async () => {
    const { dir, log } = await writtenDb("salvaged");
    flipByte(log, Math.floor(statSync(log).size / 2));
    const damagedBytes = readFileSync(log);
    const reports: Record<string, unknown>[] = [];
    setDamagedLogPolicy({ salvage: true, report: (_message, details) => reports.push(details) });
    const { db, path } = await openLevel(dir, "test db", "utf8");
    await closeLevel(db, path);
    expect(reports).toHaveLength(1);
    const copies = reports[0].copies as string[];
    expect(copies).toHaveLength(1);
    expect(readFileSync(join(dir, copies[0])).equals(damagedBytes)).toBe(true);
    const kept = await keysIn(dir);
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThan(KEYS);
  });
});
