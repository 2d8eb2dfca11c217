// Where the pieces of cfn live on disk, found from this module's location so that the same code
// works compiled (dist/src/coordination) and from source under vitest (src/coordination).

import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

function findRepoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let depth = 0; depth < 6; depth++) {
    if (existsSync(join(dir, "package.json"))) return dir;
    dir = dirname(dir);
  }
  throw new Error("invariant violated: cannot find the cfn package root");
}

/** The package root (holds package.json). */
export const REPO_ROOT = findRepoRoot();
/** The compiled CLI that spawned agents and coordinators run. */
export const CLI_MAIN = join(REPO_ROOT, "dist", "src", "cli", "main.js");
/** Source of the lean C agent. */
export const LEAN_AGENT_SOURCE = join(REPO_ROOT, "examples", "agents", "lean-agent.c");
/** The bash agent of the bus (examples/bash-agent.sh), owned by the bus. */
export const BASH_AGENT = join(REPO_ROOT, "examples", "bash-agent.sh");
/** Where the lean agent is compiled to. */
export const LEAN_AGENT_BINARY = join(REPO_ROOT, "dist", "agents", "lean-agent");
