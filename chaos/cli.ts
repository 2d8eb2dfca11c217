// `npm run chaos -- <scenario|node-kill-leader|node-partition-leader|all> [--backend netns|containers|processes]
//                  [--rounds N] [--seed S] [--size N] [--out DIR] [--short] [--persistence] [--verbose] [--help]`
// --persistence starts the node scenarios' nodes with inboxes mirrored to disk.
// Runs chaos scenarios (chaos/scenarios.ts) for as long as asked, prints a summary per run and
// writes each run's report (JSON + text) under --out. Exit status 0 when every run passed, 1 when
// one failed, 2 on bad arguments or a backend that cannot run here.

import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import {
  BACKEND_FAULTS,
  BACKENDS,
  type BackendName,
  backendUnavailableReason,
  localBackend,
} from "./backends.js";
import {
  formatNodeMessagesSummary,
  NODE_SCENARIOS,
  type NodeFault,
  runNodeMessagesChaos,
} from "./node-messages.js";
import { formatSummary, writeReport } from "./report.js";
import { runChaos } from "./runner.js";
import { LONG_TIMING, SCENARIOS, type Scenario, SHORT_TIMING, scenarioNamed } from "./scenarios.js";

/** The cfn node daemon's scenarios (chaos/node-messages.ts): cross-node messages, leader killed or cut off. */
const USAGE = `usage: npm run chaos -- <${[...SCENARIOS.map((s) => s.name), ...Object.values(NODE_SCENARIOS)].join("|")}|all> [--backend ${BACKENDS.join("|")}] [--rounds N] [--seed S] [--size N] [--out DIR] [--short] [--persistence] [--verbose] [--help]`;

function parseCommandLine(args: string[]) {
  return parseArgs({
    args,
    allowPositionals: true,
    options: {
      backend: { type: "string" },
      rounds: { type: "string", default: "10" },
      seed: { type: "string" },
      size: { type: "string", default: "3" },
      out: { type: "string", default: join(tmpdir(), "cfn-chaos-reports") },
      short: { type: "boolean", default: false },
      persistence: { type: "boolean", default: false },
      verbose: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
}

async function main(): Promise<number> {
  let parsed: ReturnType<typeof parseCommandLine>;
  try {
    parsed = parseCommandLine(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`cfn chaos: ${(error as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const name = positionals[0];
  const backend = (values.backend ?? localBackend()) as BackendName;
  const rounds = Number(values.rounds);
  const size = Number(values.size);
  const known = [...SCENARIOS.map((s) => s.name), ...Object.values(NODE_SCENARIOS), "all"];
  const problem = !name
    ? "no scenario given"
    : positionals.length > 1
      ? `one scenario at a time (got ${positionals.join(", ")})`
      : !known.includes(name)
        ? `no scenario "${name}"; known: ${known.join(", ")}`
        : !BACKENDS.includes(backend)
          ? `--backend ${backend}: one of ${BACKENDS.join(", ")}`
          : !(Number.isInteger(rounds) && rounds >= 1)
            ? `--rounds ${values.rounds}: a whole number ≥ 1`
            : !(Number.isInteger(size) && size >= 3)
              ? `--size ${values.size}: a whole number ≥ 3 (a cluster needs a majority left when one node fails)`
              : undefined;
  if (problem) {
    process.stderr.write(`cfn chaos: ${problem}\n${USAGE}\n`);
    return 2;
  }
  const unavailable = backendUnavailableReason(backend);
  if (unavailable) {
    process.stderr.write(`cfn chaos: backend ${backend} cannot run here: ${unavailable}\n`);
    return 2;
  }
  const timing = values.short ? SHORT_TIMING : LONG_TIMING;
  let failed = 0;
  const nodeFaults = (Object.keys(NODE_SCENARIOS) as NodeFault[]).filter(
    (fault) => name === "all" || NODE_SCENARIOS[fault] === name,
  );
  for (const fault of nodeFaults) {
    const scenarioName = NODE_SCENARIOS[fault];
    if (backend === "containers" || (fault === "partition" && backend !== "netns")) {
      const where = fault === "partition" ? "netns" : "netns or processes";
      process.stderr.write(`cfn chaos: ${scenarioName} runs on ${where} only\n`);
      if (name === scenarioName) return 2;
      continue;
    }
    const report = await runNodeMessagesChaos({
      backend: backend as "netns" | "processes",
      rounds,
      timing,
      persistence: values.persistence,
      fault,
    });
    const summary = formatNodeMessagesSummary(report);
    process.stdout.write(`${summary}\n  report: ${writeReport(report, summary, values.out)}\n`);
    if (!report.ok) failed++;
  }
  if (name !== "all" && nodeFaults.length > 0) return failed === 0 ? 0 : 1;
  const supported = (scenario: Scenario) =>
    scenario.needs.every((fault) => BACKEND_FAULTS[backend].has(fault));
  const scenarios = name === "all" ? SCENARIOS.filter(supported) : [scenarioNamed(name)];
  for (const scenario of SCENARIOS.filter((s) => name === "all" && !supported(s)))
    process.stderr.write(
      `cfn chaos: ${scenario.name} skipped: the ${backend} backend cannot inject ${scenario.needs.join(", ")}\n`,
    );
  for (const scenario of scenarios) {
    const report = await runChaos({
      scenario,
      backend,
      rounds,
      size,
      seed: values.seed === undefined ? undefined : Number(values.seed),
      timing,
      log: values.verbose ? (line) => process.stderr.write(`  ${line}\n`) : undefined,
    });
    const summary = formatSummary(report);
    process.stdout.write(`${summary}\n  report: ${writeReport(report, summary, values.out)}\n`);
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
