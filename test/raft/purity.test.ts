// The Raft core must stay free of I/O, clocks and ambient randomness (ARCHITECTURE.md): the
// same code runs in the daemon and in the seeded simulator.

import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const dir = join(import.meta.dirname, "../../src/raft");
const forbidden: [RegExp, string][] = [
  [/from\s+["']node:/, "a node:* import"],
  [/\bDate\.now\b|\bnew Date\b/, "the wall clock"],
  [/\bMath\.random\b/, "ambient randomness"],
  [/\bset(Timeout|Interval|Immediate)\b/, "timers"],
  [/\bBuffer\b/, "Buffer (use Uint8Array)"],
  [/\bprocess\./, "process"],
  [/from\s+["']\.\.\/(?!errors\.js)/, "an import from another layer (only ../errors.js is allowed)"],
];

describe("raft core purity", () => {
  const files = readdirSync(dir).filter((f) => f.endsWith(".ts"));
  it("has source files", () => expect(files.length).toBeGreaterThan(10));
  for (const file of files) {
    it(`${file} uses no I/O, clock, ambient randomness or upper layer`, () => {
      // Comments may mention these words; check code only.
      const code = readFileSync(join(dir, file), "utf8")
        .replace(/\/\*[\s\S]*?\*\//g, "")
        .replace(/\/\/.*$/gm, "");
      const found = forbidden.filter(([pattern]) => pattern.test(code)).map(([, what]) => what);
      expect(found).toEqual([]);
    });
  }
});
