// `npm run bench -- <suite> [options]`: runs one benchmark suite (bench/suites/<suite>.ts, which
// exports `run(args): Promise<SuiteResult>`) and prints its JSON summary as the last line.

import { readdirSync, readFileSync } from "node:fs";
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

/** A suite's usage: the opening comment of its file (its first lines say the command and options). */
function usageOf(suite: string): string {
  const lines: string[] = [];
  for (const line of readFileSync(join(suitesDir, `${suite}.js`), "utf8").split("\n")) {
    if (!line.startsWith("//")) break;
    lines.push(line.replace(/^\/\/ ?/, ""));
  }
  return lines.join("\n");
}

async function main(): Promise<void> {
  const [suite, ...args] = process.argv.slice(2);
  const suites = available();
  const help = suite === "--help" || suite === "-h" || args.includes("--help") || args.includes("-h");
  if (help && suite && suites.includes(suite)) {
    process.stdout.write(`${usageOf(suite)}\n`);
    process.exit(0);
  }
  if (help || !suite || !suites.includes(suite)) {
    const text = `usage: npm run bench -- <suite> [options] (npm run bench -- <suite> --help for its options)\nsuites:\n${suites
      .map(
        (name) =>
          `  ${usageOf(name)
            .split("\n")[0]
            .replace(/^`npm run bench -- /, "")
            .replace(/`:.*$/, "")}`,
      )
      .join("\n")}\n`;
    (help ? process.stdout : process.stderr).write(text);
    process.exit(help ? 0 : 2);
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
