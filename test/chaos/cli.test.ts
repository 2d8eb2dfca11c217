// `npm run chaos` argument handling: the compiled CLI in a child process. Help and bad options
// answer with the usage line and an exit status, never a stack trace; no scenario runs.

import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const cli = join(import.meta.dirname, "..", "..", "dist", "chaos", "cli.js");
const chaos = (args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: "utf8" });

describe("chaos CLI arguments", () => {
  it("prints its usage for --help and -h and exits 0", () => {
    for (const flag of ["--help", "-h"]) {
      const result = chaos([flag]);
      expect(result.status).toBe(0);
      expect(result.stdout).toMatch(/^usage: npm run chaos -- <kill-leader\|/);
      expect(result.stdout).toContain("node-kill-leader");
      expect(result.stderr).toBe("");
    }
  });

  it("rejects an unknown option with the reason and the usage, exit 2", () => {
    const result = chaos(["kill-leader", "--rounds-per-second", "3"]);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain("Unknown option '--rounds-per-second'");
    expect(result.stderr).toContain("usage: npm run chaos");
    expect(result.stderr).not.toMatch(/\n\s+at /); // no stack trace
  });

  it("rejects a missing or unknown scenario, a bad backend, rounds or size with the reason and the usage, exit 2", () => {
    for (const [args, reason] of [
      [[], "no scenario given"],
      [["bogus"], 'no scenario "bogus"; known: '],
      [["kill-leader", "--backend", "vms"], "--backend vms"],
      [["kill-leader", "--rounds", "abc"], "--rounds abc"],
      [["kill-leader", "--size", "2"], "--size 2"],
    ] as const) {
      const result = chaos([...args]);
      expect(result.status).toBe(2);
      expect(result.stderr).toContain(`cfn chaos: ${reason}`);
      expect(result.stderr).toContain("usage: npm run chaos");
      expect(result.stderr).not.toContain("    at "); // no stack trace
    }
    expect(chaos(["bogus"]).stderr).toContain("node-kill-leader");
  });
});
