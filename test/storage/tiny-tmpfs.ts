// A small tmpfs of its own for tests of a full disk (ENOSPC): real file systems, not mocks.
// Mounting needs root on Linux (CI runs as root); elsewhere the tests say why they do not run.

import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Why a tmpfs cannot be mounted here, or undefined when it can (checked once, by mounting one). */
export function tinyTmpfsUnavailable(): string | undefined {
  if (process.platform !== "linux" || process.getuid?.() !== 0)
    return "needs root on Linux to mount a small tmpfs";
  const dir = mkdtempSync(join(tmpdir(), "cfn-full-probe-"));
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", dir], { stdio: "pipe" });
    execFileSync("umount", [dir], { stdio: "pipe" });
    return undefined;
  } catch (error) {
    return `mount -t tmpfs failed: ${String(error)}`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Mounts a tmpfs of `size` (e.g. "2m") at `dir` (created); returns the unmount. */
export function mountTinyTmpfs(dir: string, size: string): () => void {
  mkdirSync(dir, { recursive: true });
  execFileSync("mount", ["-t", "tmpfs", "-o", `size=${size},mode=0700`, "tmpfs", dir], { stdio: "pipe" });
  return () => {
    try {
      execFileSync("umount", ["-l", dir], { stdio: "pipe" });
    } catch {
      // already gone
    }
  };
}
