// Compiles a C file with the machine's C compiler into an output file, unless the output is
// already newer than the source. Used for the lean C agent and for the bus's Node-API helper.
// Several processes may build at once: each compiles into its own temporary file and the rename
// is atomic. Never throws: a failure comes back as the reason, and callers fall back.

import { spawnSync } from "node:child_process";
import { mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { dirname } from "node:path";

export type CBuildResult = { ok: true; path: string; built: boolean } | { ok: false; reason: string };

export interface CBuildOptions {
  source: string;
  output: string;
  /** Flag sets to try in order with each compiler (e.g. static linking first, then dynamic). */
  flagSets: string[][];
  /** Longest one compiler run may take, ms. */
  timeoutMs?: number;
}

/** Longest one compiler run may take by default, ms. */
export const C_BUILD_TIMEOUT_MS = 60_000;

function mtime(path: string): number | undefined {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

/** The compilers tried, in order: $CC, then cc, gcc and clang. */
export function cCompilers(): string[] {
  return [process.env.CC, "cc", "gcc", "clang"].filter((name): name is string => Boolean(name));
}

export function buildC(options: CBuildOptions): CBuildResult {
  const source = mtime(options.source);
  const output = mtime(options.output);
  if (source === undefined)
    return output === undefined
      ? { ok: false, reason: `missing ${options.source}` }
      : { ok: true, path: options.output, built: false };
  if (output !== undefined && output >= source) return { ok: true, path: options.output, built: false };
  mkdirSync(dirname(options.output), { recursive: true });
  const tmp = `${options.output}.${process.pid}.tmp`;
  let lastError = "no C compiler (cc, gcc, clang) found";
  for (const compiler of cCompilers()) {
    for (const flags of options.flagSets) {
      const result = spawnSync(compiler, [...flags, "-o", tmp, options.source], {
        encoding: "utf8",
        timeout: options.timeoutMs ?? C_BUILD_TIMEOUT_MS,
      });
      if (result.status === 0) {
        renameSync(tmp, options.output);
        return { ok: true, path: options.output, built: true };
      }
      rmSync(tmp, { force: true });
      if (result.error && (result.error as NodeJS.ErrnoException).code === "ENOENT") break;
      lastError = `${compiler} failed: ${(result.stderr || String(result.error)).slice(0, 500)}`;
    }
  }
  return { ok: false, reason: lastError };
}
