// `npm run chaos -- <scenario|all> [--backend netns|containers|processes] [--rounds N] [--seed S]
//                  [--size N] [--out DIR] [--short]`
// Runs chaos scenarios (chaos/scenarios.ts) for as long as asked, prints a summary per run and
// writes each run's report (JSON + text) under --out. Exit status 0 when every run passed, 1 when
// one failed, 2 on bad arguments or a backend that cannot run here.

import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { BACKENDS, type BackendName, backendUnavailableReason, localBackend } from "./backends.js";
import { formatSummary, writeReport } from "./report.js";
import { runChaos } from "./runner.js";
import { LONG_TIMING, SCENARIOS, SHORT_TIMING, scenarioNamed } from "./scenarios.js";

const USAGE = `usage: npm run chaos -- <${SCENARIOS.map((s) => s.name).join("|")}|all> [--backend ${BACKENDS.join("|")}] [--rounds N] [--seed S] [--size N] [--out DIR] [--short]`;

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    args: process.argv.slice(2),
    allowPositionals: true,
    options: {
      backend: { type: "string" },
      rounds: { type: "string", default: "10" },
      seed: { type: "string" },
      size: { type: "string", default: "3" },
      out: { type: "string", default: join(tmpdir(), "cfn-chaos-reports") },
      short: { type: "boolean", default: false },
      verbose: { type: "boolean", default: false },
    },
  });
  const name = positionals[0];
  const backend = (values.backend ?? localBackend()) as BackendName;
  const rounds = Number(values.rounds);
  const size = Number(values.size);
  if (!name || !BACKENDS.includes(backend) || !(rounds >= 1) || !(size >= 3) || positionals.length > 1) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const unavailable = backendUnavailableReason(backend);
  if (unavailable) {
    process.stderr.write(`cfn chaos: backend ${backend} cannot run here: ${unavailable}\n`);
    return 2;
  }
  const scenarios = name === "all" ? SCENARIOS : [scenarioNamed(name)];
  let failed = 0;
  for (const scenario of scenarios) {
    const report = await runChaos({
      scenario,
      backend,
      rounds,
      size,
      seed: values.seed === undefined ? undefined : Number(values.seed),
      timing: values.short ? SHORT_TIMING : LONG_TIMING,
      log: values.verbose ? (line) => process.stderr.write(`  ${line}\n`) : undefined,
    });
    const path = writeReport(report, values.out);
    process.stdout.write(`${formatSummary(report)}\n  report: ${path}\n`);
    if (!report.ok) failed++;
  }
  return failed === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`cfn chaos: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(2);
  },
);
