// Where a topology comes from, in order: --topology-file, --topology (short spec), CFN_TOPOLOGY
// (a file path or a short spec), then the sizes given (agents/teams: hybrid, or flat for 1 team).
// The I/O shell around the pure parser in topology.ts.

import { existsSync, readFileSync } from "node:fs";
import { CfnError } from "../errors.js";
import {
  chooseTopology,
  hybridOf,
  parseTopologyString,
  parseTopologyText,
  type TopologySpec,
} from "./topology.js";

export interface TopologySourceOptions {
  file?: string;
  spec?: string;
  agents?: number;
  teams?: number;
  env?: NodeJS.ProcessEnv;
}

export function resolveTopology(options: TopologySourceOptions): TopologySpec {
  if (options.file) return readTopologyFile(options.file);
  if (options.spec)
    return parseTopologyString(options.spec, { agents: options.agents, teams: options.teams });
  const fromEnv = (options.env ?? process.env).CFN_TOPOLOGY?.trim();
  if (fromEnv) {
    if (/\.(ya?ml|json)$/i.test(fromEnv) || existsSync(fromEnv)) return readTopologyFile(fromEnv);
    return parseTopologyString(fromEnv, { agents: options.agents, teams: options.teams });
  }
  const agents = options.agents ?? 100;
  if (options.teams === undefined) return chooseTopology(agents, 1);
  return options.teams === 1 ? { kind: "flat", workers: agents } : hybridOf(agents, options.teams);
}

export function readTopologyFile(file: string): TopologySpec {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw new CfnError(
      "CFN_ERR_TOPOLOGY_INVALID",
      `cannot read topology file ${file}: ${(error as Error).message}`,
      { file },
    );
  }
  return parseTopologyText(text, file);
}
