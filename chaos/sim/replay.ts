// Replays one simulation seed from the command line, printing every event and the result:
//   npm run build && node dist/chaos/sim/replay.js <seed> [--quiet]
// The same seed always prints the same trace (the simulator is deterministic).

import process from "node:process";
import { configForSeed, describeConfig } from "./config.js";
import { runSimulation } from "./simulation.js";

function main(argv: string[]): number {
  const seed = Number(argv[0]);
  if (!Number.isSafeInteger(seed) || seed < 0) {
    process.stderr.write("usage: node dist/chaos/sim/replay.js <seed> [--quiet]\n");
    return 2;
  }
  const quiet = argv.includes("--quiet");
  const config = configForSeed(seed);
  process.stdout.write(`seed ${seed}: ${describeConfig(config)}\n`);
  const result = runSimulation(config, quiet ? {} : { onTrace: (line) => process.stdout.write(`${line}\n`) });
  process.stdout.write(
    `${JSON.stringify({ seed, ok: result.ok, traceHash: result.traceHash, stats: result.stats })}\n`,
  );
  if (!result.ok) process.stdout.write(`${result.report}\n`);
  return result.ok ? 0 : 1;
}

process.exitCode = main(process.argv.slice(2));
