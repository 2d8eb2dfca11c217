// CFN_* variables nothing reads: found, named with their closest known variable, and the allow
// list of non-setting variables kept in step with the code that reads them.

import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { describeUnknownVariable, knownVariables, unknownVariables } from "../src/config/env-check.js";

const REPO = join(import.meta.dirname, "..");

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return name === "node_modules" ? [] : sourceFiles(path);
    return /\.(ts|js|sh)$/.test(name) ? [path] : [];
  });
}

describe("unknown CFN_* variables", () => {
  it("names a misspelt setting and the setting it is closest to", () => {
    const unknown = unknownVariables({
      CFN_BUS_INBOX_DEPT_MAX: "5",
      CFN_BUS_INBOX_DEPTH_MAX: "5",
      CFN_API_TOKEN: "t",
      CFN_TOPOLOGY: "flat:3",
      CFN_WHOLLY_UNRELATED_THING: "1",
      HOME: "/root",
    });
    expect(unknown).toEqual([
      { name: "CFN_BUS_INBOX_DEPT_MAX", closest: "CFN_BUS_INBOX_DEPTH_MAX" },
      { name: "CFN_WHOLLY_UNRELATED_THING" },
    ]);
    expect(describeUnknownVariable(unknown[0])).toBe(
      "CFN_BUS_INBOX_DEPT_MAX is not a cfn setting or variable (did you mean CFN_BUS_INBOX_DEPTH_MAX?); it is ignored",
    );
  });

  it("knows every CFN_* variable the code reads (src, bench, chaos, cluster, test)", () => {
    const known = knownVariables();
    const read = new Set<string>();
    const pattern = /env(?:\.|\[["'])(CFN_[A-Z0-9_]+)|envInt\(["'](CFN_[A-Z0-9_]+)/g;
    for (const dir of ["src", "bench", "chaos", "cluster", "test"]) {
      for (const file of sourceFiles(join(REPO, dir))) {
        for (const match of readFileSync(file, "utf8").matchAll(pattern)) read.add(match[1] ?? match[2]);
      }
    }
    // Names a test sets only to prove they are absent or unknown.
    for (const name of ["CFN_TEST_UNSET_TOKEN", "CFN_BUS_INBOX_DEPT_MAX"]) read.delete(name);
    expect(read.size).toBeGreaterThan(20);
    expect([...read].filter((name) => !known.has(name))).toEqual([]);
  });
});
