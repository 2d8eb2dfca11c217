// A LevelDB write that fails (a full disk) must be the last one the handle takes: LevelDB can
// leave a torn record in its log, take later writes "successfully" and drop them at the next
// open. src/storage/level-open.ts fences the handle; this fills a real tmpfs to check it.

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { CfnError } from "../../src/errors.js";
import { closeLevel, onStorageFailure, openLevel } from "../../src/storage/level-open.js";
import { mountTinyTmpfs } from "./tiny-tmpfs.js";

const unmounts: (() => void)[] = [];
afterEach(() => {
  for (const unmount of unmounts.splice(0).reverse()) unmount();
});

describe("LevelDB writes on a full disk", () => {
  it("the first failed write fences the handle; every write it reported done survives a reopen", async () => {
    const root = mkdtempSync(join(tmpdir(), "cfn-full-"));
    // Cleanups run newest first: unmount, then remove the mount point.
    unmounts.push(() => rmSync(root, { recursive: true, force: true }), mountTinyTmpfs(root, "size=2m"));
    const fs = { dir: root };
    const path = join(fs.dir, "db");
    mkdirSync(path);
    const failures: CfnError[] = [];
    const unsubscribe = onStorageFailure((error) => failures.push(error));
    let { db } = await openLevel(path, "test db", "utf8");
    const value = "x".repeat(3000);
    const written: string[] = [];
    const writeNext = async (key: string) => {
      await db.batch([{ type: "put", key, value }], { sync: true });
      written.push(key);
    };
    for (let i = 0; i < 20; i++) await writeNext(`a${String(i).padStart(5, "0")}`);
    // The disk fills up: a filler takes (almost) everything that is left.
    const filler = join(fs.dir, "filler");
    try {
      writeFileSync(filler, Buffer.alloc(4 * 1024 * 1024));
    } catch {
      // ENOSPC once it is full: what it wrote stays
    }
    let failed: unknown;
    for (let i = 0; i < 2000 && failed === undefined; i++) {
      await writeNext(`b${String(i).padStart(5, "0")}`).catch((error: unknown) => {
        failed = error;
      });
    }
    expect(failed).toBeInstanceOf(CfnError);
    expect((failed as CfnError).code).toBe("CFN_ERR_STORAGE");
    expect(failures).toHaveLength(1);
    expect((failures[0].details as { path: string }).path).toBe(path);
    // Room again: the handle still refuses (a write now could land after a torn record).
    rmSync(filler);
    for (let i = 0; i < 20; i++) {
      const late = await writeNext(`c${String(i).padStart(5, "0")}`).then(
        () => undefined,
        (error: unknown) => error,
      );
      expect((late as CfnError)?.code).toBe("CFN_ERR_STORAGE");
    }
    expect(failures).toHaveLength(1);
    await closeLevel(db, path);
    // A new open takes writes again and holds everything that was reported written.
    ({ db } = await openLevel(path, "test db", "utf8"));
    const present = new Set<string>();
    for await (const key of db.keys()) present.add(key);
    expect(written.filter((key) => !present.has(key))).toEqual([]);
    await db.put("after", "1", { sync: true });
    expect(await db.get("after")).toBe("1");
    await closeLevel(db, path);
    unsubscribe();
  });
});
