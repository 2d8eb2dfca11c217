// The machine's floor for "spawn 700 process agents until all ready": fork-anchor.c, built with the
// machine's C compiler like the lean agent, forks the same tree (one process, `parts` supervisors,
// the children) where each child only reports ready. Reported as context beside the spawn figure.

import { spawn, spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
/** The source sits beside this file in bench/ (and this file runs from dist/bench/). */
const SOURCE = join(HERE, "..", "..", "bench", "fork-anchor.c");
const BINARY = join(HERE, "fork-anchor");
/** Longest a run may take, ms. */
const FORK_ANCHOR_WAIT_MS_MAX = 60_000;

/** Path of the built anchor, or the reason it cannot be built. */
export function buildForkAnchor(): { path?: string; error?: string } {
  mkdirSync(dirname(BINARY), { recursive: true });
  for (const flags of [["-O2", "-static"], ["-O2"]]) {
    const result = spawnSync(process.env.CC ?? "cc", [...flags, "-o", BINARY, SOURCE], { encoding: "utf8" });
    if (result.status === 0) return { path: BINARY };
    if (result.error) return { error: String(result.error) };
  }
  return { error: "cc failed to build bench/fork-anchor.c" };
}

/** Ms from starting the tree until `count` children reported ready. */
export async function forkFloorMs(binary: string, count: number, parts: number): Promise<number> {
  const started = performance.now();
  const child = spawn(binary, [String(count), String(parts)], { stdio: ["ignore", "pipe", "inherit"] });
  try {
    return await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("fork anchor timed out")), FORK_ANCHOR_WAIT_MS_MAX);
      let ready = 0;
      createInterface({ input: child.stdout }).on("line", () => {
        if (++ready === count) {
          clearTimeout(timer);
          resolve(performance.now() - started);
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`fork anchor exited with ${code} after ${ready} of ${count}`));
      });
    });
  } finally {
    child.removeAllListeners("exit");
    child.kill("SIGTERM");
    await new Promise((resolve) => (child.exitCode === null ? child.once("exit", resolve) : resolve(null)));
  }
}
