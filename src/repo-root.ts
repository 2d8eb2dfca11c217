// The package root, found from this module's location so that the same code works compiled
// (dist/src) and from source under vitest (src).

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
