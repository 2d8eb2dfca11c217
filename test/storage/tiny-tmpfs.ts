// A small tmpfs of its own for tests of a full disk (ENOSPC, no inodes): real file systems, not
// mocks. Mounting needs root on Linux, as .ci/run has; elsewhere these tests fail saying so.

import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, mkdirSync, openSync, writeSync } from "node:fs";
import { join } from "node:path";

/** Mounts a tmpfs with `options` (e.g. "size=2m") at `dir` (created); returns the unmount. */
export function mountTinyTmpfs(dir: string, options: string): () => void {
  mkdirSync(dir, { recursive: true });
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `${options},mode=0700`, "tmpfs", dir], { stdio: "pipe" });
  } catch (error) {
    const reason = String((error as { stderr?: Buffer }).stderr ?? error).trim();
    throw new Error(
      `cannot mount a tmpfs at ${dir} (${reason}): the full-disk tests need root on Linux, as .ci/run has`,
    );
  }
  return () => {
    try {
      execFileSync("umount", ["-l", dir], { stdio: "pipe" });
    } catch {
      // already gone
    }
  };
}

/** Fills the file system of `dir` until no block is left (inodes remain); returns the filler's path. */
export function fillSpace(dir: string): string {
  const path = join(dir, `fill-${randomBytes(4).toString("hex")}`);
  const fd = openSync(path, "w");
  const chunk = Buffer.alloc(4096, 1);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOSPC") throw error;
  } finally {
    closeSync(fd);
  }
  return path;
}
