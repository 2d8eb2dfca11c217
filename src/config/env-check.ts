// Finds CFN_* environment variables that nothing reads: a misspelt setting
// (CFN_BUS_INBOX_DEPT_MAX) would otherwise do nothing, silently. Pure: the caller decides whether
// a finding is a warning (every command) or a problem (`cfn config validate`).

import { environmentName, settingPaths } from "./load.js";

/**
 * CFN_* variables read outside the configuration schema, each by the code named beside it. A new
 * `process.env.CFN_…` read belongs here too, or every command warns about it.
 */
export const NON_SETTING_VARIABLES: ReadonlyArray<string> = [
  // Clients and the configuration loader (src/cli, src/config, docs/CONFIGURATION.md).
  "CFN_CONFIG",
  "CFN_API_TOKEN",
  "CFN_CLUSTER_TOKEN",
  "CFN_NODE_API",
  "CFN_TOPOLOGY",
  // Set by command agents for the command they run (src/coordination/agent-runner.ts): a `cfn`
  // the command starts inherits them.
  "CFN_AGENT_ID",
  "CFN_TEAM",
  "CFN_BUS_DIR",
  "CFN_MESSAGE_TYPE",
  "CFN_MESSAGE_ID",
  "CFN_FROM",
  "CFN_PRIORITY",
  "CFN_TASK_ID",
  "CFN_ROUND_ID",
  "CFN_ATTEMPT",
  // The build of the bus's C helper (src/native/bus-io-build.ts) and the Raft host's trace.
  "CFN_NODE_HEADERS",
  "CFN_RAFT_TRACE",
  // The key-value node and the local cluster launcher (cluster/).
  "CFN_PEERS",
  "CFN_CLIENT_ADDRS",
  "CFN_DATA_DIR",
  "CFN_CLUSTER_ID",
  "CFN_LISTEN_HOST",
  "CFN_KEEP_CLUSTER",
  // Test and simulation harnesses (test/, chaos/).
  "CFN_REWRITE",
  "CFN_SIM_SEED",
  "CFN_SIM_SEEDS",
  "CFN_SIM_FIRST",
  "CFN_RAFT_DEBUG",
  "CFN_RAFT_SEEDS",
  "CFN_RAFT_FIRST_SEED",
];

/** A CFN_* variable nothing reads, with the known name it is closest to (when one is close). */
export interface UnknownVariable {
  name: string;
  closest?: string;
}

/** Every CFN_* name cfn reads: one per setting, and the others above. */
export function knownVariables(): Set<string> {
  const names = new Set(NON_SETTING_VARIABLES);
  for (const { path } of settingPaths()) names.add(environmentName(path));
  return names;
}

/** Most edits between a misspelt name and the known name it is taken to mean. */
const SUGGESTION_EDITS_MAX = 3;

/** The CFN_* variables of `env` that no setting and no other code of cfn reads, sorted by name. */
export function unknownVariables(env: NodeJS.ProcessEnv, known = knownVariables()): UnknownVariable[] {
  return Object.keys(env)
    .filter((name) => name.startsWith("CFN_") && env[name] !== undefined && !known.has(name))
    .sort()
    .map((name) => {
      const closest = closestName(name, known);
      return closest === undefined ? { name } : { name, closest };
    });
}

/** One line per unknown variable, as the warnings and `cfn config validate` print it. */
export function describeUnknownVariable(variable: UnknownVariable): string {
  const hint = variable.closest ? ` (did you mean ${variable.closest}?)` : "";
  return `${variable.name} is not a cfn setting or variable${hint}; it is ignored`;
}

function closestName(name: string, known: Set<string>): string | undefined {
  let best: string | undefined;
  let bestEdits = SUGGESTION_EDITS_MAX + 1;
  for (const candidate of known) {
    const edits = editDistance(name, candidate, bestEdits);
    if (edits < bestEdits) {
      best = candidate;
      bestEdits = edits;
    }
  }
  return best;
}

/** Levenshtein distance, or `limit` as soon as it is sure to reach it. */
function editDistance(a: string, b: string, limit: number): number {
  if (Math.abs(a.length - b.length) >= limit) return limit;
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    let rowMin = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost);
      rowMin = Math.min(rowMin, current[j]);
    }
    if (rowMin >= limit) return limit;
    previous = current;
  }
  return Math.min(previous[b.length], limit);
}
