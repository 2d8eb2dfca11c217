// A small tmpfs of its own for tests of a full disk (ENOSPC, no inodes): real file systems, not
// mocks. Mounting needs root on Linux, as .ci/run has; elsewhere these tests fail saying so.

import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";

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
