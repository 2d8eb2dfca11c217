// The swarm registry: one JSON file per swarm under <bus dir>/swarms/<swarm>.json with its
// topology, processes, agents (id, team, pid and its start time, runtime) and coordinators, so that `cfn swarm
// status` and `cfn swarm stop` work from another shell. Written atomically (temp + rename).
// The bus ignores this directory: agent directories live in numeric shard directories only.

import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TopologySpec } from "./topology.js";

export type AgentRuntime = "lean" | "node" | "command" | "pooled" | "bash";

export interface AgentRecord {
  id: string;
  team: string;
  pid: number;
  /**
   * Start time of the pid's process when it was spawned (clock ticks since boot; Linux), so that a
   * reused pid is not taken for the agent. Absent in records of older versions: pid alone then.
   */
  processStart?: number;
  runtime: AgentRuntime;
  /** Wakes on SIGUSR2 (lean agents). */
  doorbell?: boolean;
}

/** Message dialect of a worker: cfn's (`cfn.task` → `cfn.result` with `re`), or the bash agent's. */
export function dialectOf(runtime: AgentRuntime): "cfn" | "bash" {
  return runtime === "bash" ? "bash" : "cfn";
}

export interface ProcessRecord {
  pid: number;
  /** "lean-group": a supervisor of forked lean agents; "agent": one agent; "pooled-host": many. */
  kind: "lean-group" | "agent" | "pooled-host" | "coordinator";
  agents: number;
  /** As AgentRecord.processStart. */
  processStart?: number;
}

export interface SwarmRecord {
  swarm: string;
  createdAtMs: number;
  topology: TopologySpec;
  description: string;
  runtime: AgentRuntime;
  busDir: string;
  master: string;
  processes: ProcessRecord[];
  agents: AgentRecord[];
  /** Command each agent wraps (runtime "command"). */
  command?: string[];
  /** Set when the swarm was registered with a cluster node (`cfn swarm spawn --cluster`). */
  cluster?: { api: string; nodeId: string };
}

export function swarmsDir(busDir: string): string {
  return join(busDir, "swarms");
}

export function writeSwarmRecord(busDir: string, record: SwarmRecord): void {
  const dir = swarmsDir(busDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `.${record.swarm}.${process.pid}.tmp`);
  writeFileSync(tmp, `${JSON.stringify(record)}\n`, { mode: 0o600 });
  renameSync(tmp, join(dir, `${record.swarm}.json`));
}

export function readSwarmRecord(busDir: string, swarm: string): SwarmRecord | undefined {
  try {
    return JSON.parse(readFileSync(join(swarmsDir(busDir), `${swarm}.json`), "utf8")) as SwarmRecord;
  } catch {
    return undefined;
  }
}

export function listSwarms(busDir: string): string[] {
  try {
    return readdirSync(swarmsDir(busDir))
      .filter((name) => name.endsWith(".json") && !name.startsWith("."))
      .map((name) => name.slice(0, -5))
      .sort();
  } catch {
    return [];
  }
}

export function removeSwarmRecord(busDir: string, swarm: string): void {
  rmSync(join(swarmsDir(busDir), `${swarm}.json`), { force: true });
}
