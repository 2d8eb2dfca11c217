// Where the pieces of cfn live on disk, relative to the package root (src/repo-root.ts).

import { join } from "node:path";
import { REPO_ROOT } from "../repo-root.js";

export { REPO_ROOT };

/** The compiled CLI that spawned agents and coordinators run. */
export const CLI_MAIN = join(REPO_ROOT, "dist", "src", "cli", "main.js");
/** Source of the lean C agent. */
export const LEAN_AGENT_SOURCE = join(REPO_ROOT, "examples", "agents", "lean-agent.c");
/** The bash agent of the bus (examples/bash-agent.sh), owned by the bus. */
export const BASH_AGENT = join(REPO_ROOT, "examples", "bash-agent.sh");
/** Where the lean agent is compiled to. */
export const LEAN_AGENT_BINARY = join(REPO_ROOT, "dist", "agents", "lean-agent");
