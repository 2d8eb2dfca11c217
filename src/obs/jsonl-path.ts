// Whether a path can hold the JSONL metrics stream (metrics.jsonlPath). The config schema runs this
// check, so `cfn config validate` and every command's start refuse a bad path with
// CFN_ERR_CONFIG_INVALID, and Metrics runs it again before it opens a stream it was handed.
// It looks at the file system as it is now: a path that passes may still fail to write later
// (a full disk, a removed directory), which Metrics.emit counts and logs instead of throwing.

import { accessSync, constants, realpathSync, type Stats, statSync } from "node:fs";
import { dirname, resolve } from "node:path";

/**
 * Kernel pseudo file systems: not a place for a log, and node's recursive mkdir loops forever
 * under /proc (it keeps retrying ENOENT), which is how `cfn send` once spun at 70 % CPU.
 */
export const JSONL_PSEUDO_FILESYSTEM_ROOTS = ["/proc", "/sys"] as const;

/** Why `path` cannot hold the JSONL stream; undefined when it can (file and parents may be missing). */
export function jsonlPathProblem(path: string): string | undefined {
  if (path.includes("\0")) return "must not contain a NUL byte";
  if (/[/\\]$/.test(path)) return `${path} names a directory; name a file, e.g. ${path}metrics.jsonl`;
  const target = resolve(path);
  const existing = statIfPresent(target);
  if (typeof existing === "string") return existing;
  if (existing) {
    if (existing.isDirectory())
      return `${target} is a directory; name a file in it, e.g. ${target}/metrics.jsonl`;
    // Pipes and terminals (/dev/stdout, /dev/stderr) are fine; /proc and /sys files look regular.
    const pseudo = existing.isFile() ? pseudoRootOf(target) : undefined;
    if (pseudo) return onPseudoFilesystem(target, pseudo);
    if (!isWritable(target)) return `${target} is not writable`;
    return undefined;
  }
  // The file does not exist yet: its nearest existing ancestor must be a writable directory.
  let ancestor = dirname(target);
  for (;;) {
    const info = statIfPresent(ancestor);
    if (typeof info === "string") return info;
    if (info) {
      if (!info.isDirectory()) return `${ancestor} is not a directory, so ${target} cannot be created`;
      break;
    }
    ancestor = dirname(ancestor);
  }
  const pseudo = pseudoRootOf(ancestor) ?? pseudoRootOf(target);
  if (pseudo) return onPseudoFilesystem(target, pseudo);
  if (!isWritable(ancestor)) return `${ancestor} is not writable, so ${target} cannot be created`;
  return undefined;
}

function onPseudoFilesystem(target: string, root: string): string {
  return `${target} is under ${root}, a kernel pseudo file system; name a file on a real one`;
}

/** The stat of `path`, undefined when it (or a parent) does not exist, or a problem. */
function statIfPresent(path: string): Stats | undefined | string {
  try {
    return statSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    return `${path} cannot be read (${code ?? String(error)})`;
  }
}

/** The pseudo file system root `path` lies under, literally or once symlinks are resolved. */
function pseudoRootOf(path: string): string | undefined {
  let real = path;
  try {
    real = realpathSync(path);
  } catch {
    // A dangling link or a pipe (/dev/stdout of a shell pipeline): judge the literal path.
  }
  return JSONL_PSEUDO_FILESYSTEM_ROOTS.find((root) =>
    [path, real].some((candidate) => candidate === root || candidate.startsWith(`${root}/`)),
  );
}

function isWritable(path: string): boolean {
  try {
    accessSync(path, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}
