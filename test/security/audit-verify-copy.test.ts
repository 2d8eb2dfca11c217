// `cfn audit verify --data-dir` only reads the data dir: it verifies a copy of the audit log
// (opening a LevelDB writes LOCK, LOG, a new write-ahead log), so a read-only mount verifies and
// no byte or mtime of the original changes. A log a running node holds is refused
// (CFN_ERR_DATA_DIR_LOCKED, pointing at the node's API). The compiled CLI; the mounts need root.

import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { CLI_PATH } from "../../cluster/node-launcher.js";
import type { ClusterNode } from "../../src/node/node.js";
import { tempRoot } from "../bus/helpers.js";
import { CLUSTER_TOKEN, call, startSecureNode } from "./helpers.js";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function verify(dataDir: string): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [CLI_PATH, "audit", "verify", "--data-dir", dataDir, "--json"], {
    encoding: "utf8",
  });
}

/** Every file of `dir` with its bytes and mtime. */
function snapshot(dir: string): Record<string, { bytes: string; mtimeMs: number }> {
  const files: Record<string, { bytes: string; mtimeMs: number }> = {};
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    files[name] = { bytes: readFileSync(path).toString("base64"), mtimeMs: statSync(path).mtimeMs };
  }
  return files;
}

describe("cfn audit verify --data-dir", () => {
  it("refuses a running node's log, then verifies a stopped one on a read-only mount without changing a byte or an mtime", async () => {
    const temp = tempRoot();
    cleanups.push(temp.cleanup);
    let node: ClusterNode | undefined = await startSecureNode({ root: temp.root });
    cleanups.push(() => node?.shutdown("test").then(() => undefined));
    for (let i = 0; i < 5; i++)
      expect(
        (await call(node, "POST", "/v1/agents", CLUSTER_TOKEN, { agent: `a${i}`, team: null })).status,
      ).toBe(200);
    const dataDir = join(temp.root, "data");

    const live = verify(dataDir);
    expect(live.status, live.stderr).toBe(1);
    expect(live.stderr).toContain('"code":"CFN_ERR_DATA_DIR_LOCKED"');
    expect(live.stderr).toContain(`process ${process.pid}`);
    expect(live.stderr).toContain("cfn audit verify --api");

    await node.shutdown("test");
    node = undefined;
    const readOnly = join(temp.root, "ro");
    mkdirSync(readOnly);
    execFileSync("mount", ["--bind", dataDir, readOnly]);
    cleanups.push(() => {
      execFileSync("umount", ["-l", readOnly]);
    });
    execFileSync("mount", ["-o", "remount,ro,bind", readOnly]);
    const before = snapshot(join(dataDir, "audit"));
    expect(Object.keys(before)).toContain("LOCK");

    const report = verify(readOnly);
    expect(report.status, report.stderr).toBe(0);
    expect(JSON.parse(report.stdout)).toMatchObject({ ok: true, firstSeq: 1 });
    expect(JSON.parse(report.stdout).entries).toBeGreaterThanOrEqual(5);
    expect(snapshot(join(dataDir, "audit"))).toEqual(before);
    // The same on the writable data dir: nothing written there either.
    expect(verify(dataDir).status).toBe(0);
    expect(snapshot(join(dataDir, "audit"))).toEqual(before);
  });
});
