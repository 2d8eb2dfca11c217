// The encryption key file (security.encryptionKeyFile) is read at start through
// readKeyFileBytes (src/security/at-rest.ts): only a regular file of mode 600/400 — a FIFO is
// opened without blocking and refused (before, the start waited in open() forever, deaf to
// SIGTERM), as are a directory and a device — with CFN_ERR_KEY_FILE naming the path.

import { execFile, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { isCfnError } from "../../src/errors.js";
import { KEY_FILE_BYTES_MAX, readKeyFileBytes } from "../../src/security/at-rest.js";
import { CLI, freePort } from "../node/harness.js";
import { scratchRoots } from "./helpers.js";

const scratch = scratchRoots();

function refusal(read: () => unknown): string {
  try {
    read();
  } catch (error) {
    expect(isCfnError(error, "CFN_ERR_KEY_FILE")).toBe(true);
    return (error as Error).message;
  }
  throw new Error("the key file was accepted");
}

/** `cfn node start` with `keyFile`, killed (SIGKILL: a blocked open ignores SIGTERM) after `ms`. */
async function startWithKeyFile(
  root: string,
  keyFile: string,
  ms: number,
): Promise<{ code: number | null; signal: string | null; stderr: string }> {
  const args = [
    CLI,
    "--bus-root",
    join(root, "bus"),
    "node",
    "start",
    "--id",
    "k1",
    "--cluster-id",
    "cfn-key-file",
    "--data-dir",
    join(root, "data"),
    "--peer-listen",
    `127.0.0.1:${await freePort()}`,
    "--api-listen",
    `127.0.0.1:${await freePort()}`,
  ];
  const env = {
    ...process.env,
    CFN_CLUSTER_TOKEN: "key-file-test-token-0123456789abcdef",
    CFN_SECURITY_ENCRYPTION_KEY_FILE: keyFile,
  };
  return new Promise((resolve) => {
    execFile(process.execPath, args, { env, timeout: ms, killSignal: "SIGKILL" }, (error, _stdout, stderr) =>
      resolve({
        code: error ? ((error.code as number | undefined) ?? null) : 0,
        signal: error?.signal ?? null,
        stderr,
      }),
    );
  });
}

describe("encryption key file", () => {
  it("refuses a FIFO at once, without waiting for a writer", () => {
    const root = scratch();
    const fifo = join(root, "records.key");
    execFileSync("mkfifo", ["-m", "600", fifo]);
    const started = performance.now();
    expect(refusal(() => readKeyFileBytes(fifo))).toMatch(/is a FIFO, not a regular file/);
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it("refuses a directory and a device, and a file too large to be a key", () => {
    const root = scratch();
    const dir = join(root, "keydir");
    mkdirSync(dir, { mode: 0o700 });
    expect(refusal(() => readKeyFileBytes(dir))).toMatch(/is a directory, not a regular file/);
    expect(refusal(() => readKeyFileBytes("/dev/zero"))).toMatch(/not a regular file/);
    const big = join(root, "big.key");
    writeFileSync(big, randomBytes(KEY_FILE_BYTES_MAX + 1), { mode: 0o600 });
    expect(refusal(() => readKeyFileBytes(big))).toMatch(/must hold 32 bytes.*holds 4097 bytes/);
    expect(refusal(() => readKeyFileBytes(join(root, "absent.key")))).toMatch(/cannot read/);
  });

  it("reads a regular file of mode 600, also through a symlink (a mounted secret); refuses mode 644", () => {
    const root = scratch();
    const key = randomBytes(32);
    const path = join(root, "records.key");
    writeFileSync(path, key, { mode: 0o600 });
    expect(readKeyFileBytes(path).equals(key)).toBe(true);
    const link = join(root, "link.key");
    symlinkSync(path, link);
    expect(readKeyFileBytes(link).equals(key)).toBe(true);
    chmodSync(path, 0o644);
    expect(refusal(() => readKeyFileBytes(path))).toMatch(/mode 644/);
  });

  it("a node start with a FIFO as its key file exits 2 with CFN_ERR_KEY_FILE instead of hanging", async () => {
    const root = scratch();
    const fifo = join(root, "records.key");
    execFileSync("mkfifo", ["-m", "600", fifo]);
    const result = await startWithKeyFile(root, fifo, 10_000);
    expect(result.signal, "the start hung and was killed").toBeNull();
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/CFN_ERR_KEY_FILE .*records\.key is a FIFO, not a regular file/);
  }, 30_000);
});
