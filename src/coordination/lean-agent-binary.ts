// Builds the lean C agent (examples/agents/lean-agent.c) with the machine's C compiler on first
// use, into dist/agents/lean-agent. Rebuilt when the source is newer. Without a compiler it
// returns undefined and callers fall back to the Node runtime (`cfn agent run --echo`).

import { buildC } from "../native/c-build.js";
import { LEAN_AGENT_BINARY, LEAN_AGENT_SOURCE } from "./paths.js";

let cached: { path: string | undefined; error?: string } | undefined;

/** Path of a ready lean-agent binary, or undefined (with the reason in leanAgentBuildError()). */
export function ensureLeanAgent(): string | undefined {
  if (cached) return cached.path;
  const result = buildC({
    source: LEAN_AGENT_SOURCE,
    output: LEAN_AGENT_BINARY,
    // Static first: fewer mappings make each fork of the group supervisor cheaper (~35 % here).
    flagSets: [["-O2", "-static"], ["-O2"]],
  });
  cached = result.ok ? { path: result.path } : { path: undefined, error: result.reason };
  return cached.path;
}

export function leanAgentBuildError(): string | undefined {
  return cached?.error;
}
