// Builds the lean C agent (examples/agents/lean-agent.c) with the machine's C compiler on first
// use, into dist/agents/lean-agent. Rebuilt when the source is newer. Without a compiler it
// returns undefined and callers fall back to the Node runtime (`cfn agent run --echo`).

import { spawnSync } from "node:child_process";
import { mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { LEAN_AGENT_BINARY, LEAN_AGENT_SOURCE } from "./paths.js";

let cached: { path: string | undefined; error?: string } | undefined;

/** Path of a ready lean-agent binary, or undefined (with the reason in leanAgentBuildError()). */
export function ensureLeanAgent(): string | undefined {
  if (cached) return cached.path;
  cached = build();
  return cached.path;
}

export function leanAgentBuildError(): string | undefined {
  return cached?.error;
}

function mtime(path: string): number | undefined {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

function build(): { path: string | undefined; error?: string } {
  const source = mtime(LEAN_AGENT_SOURCE);
  const binary = mtime(LEAN_AGENT_BINARY);
  if (source === undefined)
    return binary === undefined
      ? { path: undefined, error: `missing ${LEAN_AGENT_SOURCE}` }
      : { path: LEAN_AGENT_BINARY };
  if (binary !== undefined && binary >= source) return { path: LEAN_AGENT_BINARY };
  mkdirSync(dirname(LEAN_AGENT_BINARY), { recursive: true });
  // Several processes may build at once: each writes its own file, the rename is atomic.
  const tmp = `${LEAN_AGENT_BINARY}.${process.pid}.tmp`;
  let lastError = "no C compiler (cc, gcc, clang) found";
  for (const compiler of [process.env.CC, "cc", "gcc", "clang"].filter((name): name is string =>
    Boolean(name),
  )) {
    // Static first: fewer mappings make each fork of the group supervisor cheaper (~35 % here).
    for (const flags of [["-O2", "-static"], ["-O2"]]) {
      const result = spawnSync(compiler, [...flags, "-o", tmp, LEAN_AGENT_SOURCE], {
        encoding: "utf8",
        timeout: 60_000,
      });
      if (result.status === 0) {
        renameSync(tmp, LEAN_AGENT_BINARY);
        return { path: LEAN_AGENT_BINARY };
      }
      rmSync(tmp, { force: true });
      if (result.error && (result.error as NodeJS.ErrnoException).code === "ENOENT") break;
      lastError = `${compiler} failed: ${(result.stderr || String(result.error)).slice(0, 500)}`;
    }
  }
  return { path: undefined, error: lastError };
}
