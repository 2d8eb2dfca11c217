// `npm run bench -- <suite> [options]`: runs one benchmark suite (bench/suites/<suite>.ts, which
// exports `run(args): Promise<SuiteResult>`) and prints its JSON summary as the last line.

import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { report, type SuiteResult } from "./lib.js";

const suitesDir = join(dirname(fileURLToPath(import.meta.url)), "suites");

function available(): string[] {
  return readdirSync(suitesDir)
    .filter((file) => file.endsWith(".js"))
    .map((file) => file.replace(/\.js$/, ""))
    .sort();
}

async function main(): Promise<void> {
  const [suite, ...args] = process.argv.slice(2);
  const suites = available();
  if (!suite || !suites.includes(suite)) {
    process.stderr.write(`usage: npm run bench -- <suite> [options]\nsuites: ${suites.join(", ")}\n`);
    process.exit(2);
  }
  const module = (await import(pathToFileURL(join(suitesDir, `${suite}.js`)).href)) as {
    run: (args: string[]) => Promise<SuiteResult>;
  };
  const result = await module.run(args);
  report(result);
  process.exit(0);
}

main().catch((error) => {
  process.stderr.write(`bench failed: ${(error as Error).stack ?? error}\n`);
  process.exit(1);
});
