// Spawns agent processes and waits until each has opened its mailbox (it sends `cfn.agent.ready`
// to the spawner's mailbox). Runtimes (docs/COORDINATION.md, "Agent runtimes"):
//   lean     the C lean agent; one small supervisor process per group forks one process per agent
//   node     `cfn agent run --echo`: one Node process per agent (fallback without a C compiler)
//   command  `cfn agent run -- <command>`: one Node process per agent wrapping any CLI
//   pooled   `cfn agent host`: many logical agents (each its own mailbox) per Node process
//   bash     examples/bash-agent.sh (the bus's agent in bash, coreutils only): an echo worker

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { cpus } from "node:os";
import { createInterface } from "node:readline";
import type { Bus } from "../bus/index.js";
import { CfnError, isCfnError } from "../errors.js";
import { type Logger, silentLogger } from "../obs/logger.js";
import { ensureLeanAgent, leanAgentBuildError } from "./lean-agent-binary.js";
import { isProcessAlive, type ProcessIdentity, processStartOf } from "./liveness.js";
import { BASH_AGENT, CLI_MAIN } from "./paths.js";
import { MESSAGE, type ReadyPayload } from "./protocol.js";
import type { AgentRecord, AgentRuntime, ProcessRecord } from "./registry.js";

/** Lean agents per supervisor (supervisors fork their agents in parallel with each other). */
export const LEAN_GROUP_SIZE_DEFAULT = 100;
/** Supervisors forked by one lean group process (`--fanout`; the C agent accepts 1..64). */
export const LEAN_FANOUT_MAX = 64;
/** Logical agents per pooled host process. */
export const POOLED_HOST_SIZE_DEFAULT = 2500;
/** Node processes started at once. */
export const NODE_SPAWN_CONCURRENCY_DEFAULT = 8;
/** Longest sleep of the spawner between two looks at readiness (and at an abort), ms. */
const SPAWN_POLL_MS = 100;

export interface LeanOptions {
  /** Simulated work per task, ms (default 0). */
  workMs?: number;
  /** Safety-net rescan interval, ms (default 200). */
  rescanMs?: number;
  heartbeatMs?: number;
}

export interface SpawnOptions {
  bus: Bus;
  agents: Array<{ id: string; team: string }>;
  runtime: AgentRuntime;
  /** The wrapped command (runtime "command"; optional for "pooled", which echoes without one). */
  command?: string[];
  /** Mailbox the agents report ready to. */
  readyTo: string;
  groupSize?: number;
  concurrency?: number;
  lean?: LeanOptions;
  /** Agents outlive this process (cfn swarm spawn); default false. */
  detached?: boolean;
  /** Most time to wait for every agent to be ready, ms (default 60,000). */
  timeoutMs?: number;
  /** Extra arguments for `cfn agent run` / `cfn agent host` (e.g. --task-timeout-ms). */
  agentArgs?: string[];
  onReady?: (ready: number, total: number) => void;
  /**
   * Aborting it (SIGINT/SIGTERM of `cfn swarm spawn`) stops the spawn: no further agent starts,
   * everything started so far is stopped, and spawnAgents throws CFN_ERR_CLOSED.
   */
  signal?: AbortSignal;
  logger?: Logger;
}

/** Longest wait, after an abort or a failure, for processes still being launched to appear, ms. */
export const LAUNCH_SETTLE_MS_MAX = 5000;

export interface SpawnResult {
  agents: AgentRecord[];
  processes: ProcessRecord[];
  /** Child handles (non-detached), for supervision. */
  children: ChildProcess[];
  runtime: AgentRuntime;
  /** Time from the first spawn to the last ready message, ms. */
  readyMs: number;
}

/** Picks the runtime to use: lean when asked for and buildable, else node. */
export function resolveRuntime(requested: AgentRuntime, logger: Logger = silentLogger): AgentRuntime {
  if (requested !== "lean") return requested;
  if (ensureLeanAgent()) return "lean";
  logger.warn("lean agent unavailable, falling back to the node runtime", { reason: leanAgentBuildError() });
  return "node";
}

export async function spawnAgents(options: SpawnOptions): Promise<SpawnResult> {
  const logger = (options.logger ?? silentLogger).child("spawner");
  const runtime = resolveRuntime(options.runtime, logger);
  const mailbox = options.bus.openMailbox(options.readyTo);
  const total = options.agents.length;
  const expected = new Map(options.agents.map((agent) => [agent.id, agent.team]));
  const pids = new Map<string, number>();
  const ready = new Set<string>();
  const processes: ProcessRecord[] = [];
  const children: ChildProcess[] = [];
  const failures: string[] = [];
  const startedAt = performance.now();
  const timeoutMs = options.timeoutMs ?? 60_000;
  const deadline = Date.now() + timeoutMs;

  const onExit = (child: ChildProcess, what: string) => {
    child.once("exit", (code, signal) => {
      if (ready.size < total && (code !== 0 || signal))
        failures.push(`${what} exited early (${signal ?? `code ${code}`})`);
    });
  };

  // Lean agents report ready on their supervisor's stdout (one pipe line each): the loop below
  // then only waits, woken by the last report, instead of reading one bus message per agent.
  let wakeSpawner: (() => void) | undefined;
  const launching = (async () => {
    switch (runtime) {
      case "lean":
        await spawnLeanGroups(options, pids, processes, children, onExit, (agent, pid) => {
          if (!expected.has(agent) || ready.has(agent)) return;
          ready.add(agent);
          pids.set(agent, pid);
          options.onReady?.(ready.size, total);
          if (ready.size >= total) wakeSpawner?.();
        });
        break;
      case "bash":
        spawnBashAgents(options, pids, processes, children, onExit);
        break;
      case "node":
      case "command":
        await spawnNodeAgents(
          options,
          runtime,
          pids,
          processes,
          children,
          onExit,
          () => Date.now() > deadline || failures.length > 0 || options.signal?.aborted === true,
        );
        break;
      case "pooled":
        spawnPooledHosts(options, pids, processes, children, onExit);
        break;
    }
  })();
  let launchError: unknown;
  launching.catch((error) => {
    launchError = error;
  });
  const onAbort = () => wakeSpawner?.();
  options.signal?.addEventListener("abort", onAbort);

  try {
    while (ready.size < total) {
      if (options.signal?.aborted)
        throw new CfnError(
          "CFN_ERR_CLOSED",
          `spawn interrupted with ${ready.size} of ${total} agents ready`,
          {
            ready: ready.size,
          },
        );
      if (launchError) throw launchError;
      if (failures.length > 0)
        throw new CfnError("CFN_ERR_TIMEOUT", `agents failed to start: ${failures.slice(0, 5).join("; ")}`, {
          failures,
        });
      const remainingMs = deadline - Date.now();
      if (remainingMs <= 0) {
        const missing = [...expected.keys()].filter((id) => !ready.has(id));
        throw new CfnError(
          "CFN_ERR_TIMEOUT",
          `${missing.length} of ${total} agents not ready after ${timeoutMs} ms (e.g. ${missing.slice(0, 5).join(", ")})`,
          {
            missing: missing.length,
          },
        );
      }
      if (runtime === "lean") {
        await new Promise<void>((resolve) => {
          wakeSpawner = resolve;
          setTimeout(resolve, Math.min(remainingMs, SPAWN_POLL_MS));
        });
        wakeSpawner = undefined;
        continue;
      }
      const deliveries = await mailbox.receive({
        timeoutMs: Math.min(remainingMs, runtime === "bash" ? 20 : SPAWN_POLL_MS),
        max: 4096,
      });
      let changed = false;
      if (runtime === "bash") changed = markBashAgentsReady(options.bus, expected, ready);
      for (const delivery of deliveries) {
        if (delivery.message.type === MESSAGE.ready) {
          const payload = delivery.message.payload as ReadyPayload;
          if (expected.has(payload?.agent) && !ready.has(payload.agent)) {
            ready.add(payload.agent);
            if (Number.isInteger(payload.pid)) pids.set(payload.agent, payload.pid);
            changed = true;
          }
        }
      }
      mailbox.ack(deliveries);
      if (changed) options.onReady?.(ready.size, total);
    }
    await launching;
  } catch (error) {
    await stopLaunched(launching, processes, pids);
    throw error;
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
    mailbox.close();
  }
  const readyMs = performance.now() - startedAt;
  // Every process is ready (alive) now: its start time pins the pid to it in the registry, so a
  // stop or a status later does not take a reused pid for it. One /proc read per distinct pid.
  const startOf = processStartsOf([...processes.map((record) => record.pid), ...pids.values()]);
  for (const record of processes) {
    const processStart = startOf.get(record.pid);
    if (processStart !== undefined) record.processStart = processStart;
  }
  const agents: AgentRecord[] = options.agents.map((agent) => {
    const pid = pids.get(agent.id) ?? 0;
    const processStart = startOf.get(pid);
    return {
      id: agent.id,
      team: agent.team,
      pid,
      ...(processStart === undefined ? {} : { processStart }),
      runtime,
      ...(runtime === "lean" ? { doorbell: true } : {}),
    };
  });
  if (options.detached) for (const child of children) child.unref();
  return { agents, processes, children, runtime, readyMs };
}

/** The start time of each distinct pid (those off Linux or gone are left out). */
function processStartsOf(pids: number[]): Map<number, number> {
  const starts = new Map<number, number>();
  for (const pid of new Set(pids)) {
    const start = pid > 0 ? processStartOf(pid) : undefined;
    if (start !== undefined) starts.set(pid, start);
  }
  return starts;
}

/**
 * Stops what a failed or interrupted spawn started: the processes known now, then — once the
 * launch has settled (bounded by LAUNCH_SETTLE_MS_MAX) — those that appeared meanwhile.
 */
async function stopLaunched(
  launching: Promise<void>,
  processes: ProcessRecord[],
  pids: Map<string, number>,
): Promise<void> {
  await killProcesses(processes, 2000, [...pids.values()]);
  let settleTimer: NodeJS.Timeout | undefined;
  await Promise.race([
    launching.catch(() => {}),
    new Promise((resolve) => {
      settleTimer = setTimeout(resolve, LAUNCH_SETTLE_MS_MAX);
    }),
  ]);
  clearTimeout(settleTimer);
  await killProcesses(processes, 2000, [...pids.values()]);
}

function spawnLeanGroups(
  options: SpawnOptions,
  pids: Map<string, number>,
  processes: ProcessRecord[],
  children: ChildProcess[],
  onExit: (child: ChildProcess, what: string) => void,
  onAgentReady: (agent: string, pid: number) => void,
): Promise<void> {
  const binary = ensureLeanAgent() as string;
  // At least two groups per CPU so that the supervisors fork in parallel, at most 100 agents each.
  const groupSize =
    options.groupSize ??
    Math.max(1, Math.min(LEAN_GROUP_SIZE_DEFAULT, Math.ceil(options.agents.length / (2 * cpus().length))));
  const lean = options.lean ?? {};
  const args = ["group", "--bus-dir", options.bus.dir, "--ready-pipe", "1"];
  if (lean.workMs) args.push("--work-ms", String(lean.workMs));
  if (lean.rescanMs) args.push("--rescan-ms", String(lean.rescanMs));
  if (lean.heartbeatMs) args.push("--heartbeat-ms", String(lean.heartbeatMs));
  args.push(
    "--visibility-ms",
    String(options.bus.config.visibilityTimeoutMs),
    "--deliveries-max",
    String(options.bus.config.deliveriesMax),
  );
  // One lean process per LEAN_FANOUT_MAX supervisors: it forks its supervisors (--fanout), which
  // fork the agents in parallel. Node's spawn of its own large process costs ~10–20 ms of kernel
  // time on a VM (page tables), a fork of the small lean process well under 1 ms.
  const perProcess = groupSize * LEAN_FANOUT_MAX;
  const groups: Array<Promise<void>> = [];
  for (let start = 0; start < options.agents.length; start += perProcess) {
    const slice = options.agents.slice(start, start + perProcess);
    const fanout = Math.ceil(slice.length / groupSize);
    const child = spawn(binary, [...args, "--fanout", String(fanout)], {
      stdio: ["pipe", "pipe", stderrOf(options)],
      detached: options.detached ?? false,
    });
    children.push(child);
    onExit(child, `lean group ${start / perProcess}`);
    const record: ProcessRecord = { pid: child.pid ?? 0, kind: "lean-group", agents: slice.length };
    processes.push(record);
    child.stdin?.end(`${slice.map((agent) => agent.id).join("\n")}\n`);
    groups.push(
      new Promise((resolve) => {
        // Every supervisor reports "end <n>"; the process has launched once they sum to its slice.
        let launched = 0;
        const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
        lines.on("line", (line) => {
          const [first, second, third] = line.split(" ");
          if (first === "ready") onAgentReady(second, Number(third));
          else if (first === "end") {
            launched += Number(second);
            if (launched >= slice.length) resolve();
          } else if (second) pids.set(first, Number(second));
        });
        lines.on("close", () => resolve());
      }),
    );
  }
  return Promise.all(groups).then(() => undefined);
}

async function spawnNodeAgents(
  options: SpawnOptions,
  runtime: "node" | "command",
  pids: Map<string, number>,
  processes: ProcessRecord[],
  children: ChildProcess[],
  onExit: (child: ChildProcess, what: string) => void,
  aborted: () => boolean,
): Promise<void> {
  if (runtime === "command" && (!options.command || options.command.length === 0)) {
    throw new CfnError("CFN_ERR_CONFIG_INVALID", "runtime command needs a command after --");
  }
  const concurrency = Math.max(1, options.concurrency ?? NODE_SPAWN_CONCURRENCY_DEFAULT);
  let next = 0;
  const base = busArgs(options.bus);
  const startOne = (agent: { id: string; team: string }) =>
    new Promise<void>((resolve) => {
      const args = [
        CLI_MAIN,
        ...base,
        "agent",
        "run",
        "--id",
        agent.id,
        "--team",
        agent.team,
        "--ready-to",
        options.readyTo,
        ...(options.agentArgs ?? []),
      ];
      if (runtime === "node") args.push("--echo");
      else args.push("--", ...(options.command as string[]));
      const child = spawn(process.execPath, args, {
        stdio: ["ignore", "ignore", stderrOf(options)],
        detached: options.detached ?? false,
      });
      children.push(child);
      onExit(child, `agent ${agent.id}`);
      processes.push({ pid: child.pid ?? 0, kind: "agent", agents: 1 });
      if (child.pid) pids.set(agent.id, child.pid);
      child.once("spawn", () => resolve());
      child.once("error", () => resolve());
    });
  const workers = Array.from({ length: concurrency }, async () => {
    while (next < options.agents.length && !aborted()) {
      const agent = options.agents[next++];
      await startOne(agent);
    }
  });
  await Promise.all(workers);
}

function spawnPooledHosts(
  options: SpawnOptions,
  pids: Map<string, number>,
  processes: ProcessRecord[],
  children: ChildProcess[],
  onExit: (child: ChildProcess, what: string) => void,
): void {
  const size = options.groupSize ?? POOLED_HOST_SIZE_DEFAULT;
  const base = busArgs(options.bus);
  for (let start = 0; start < options.agents.length; start += size) {
    const slice = options.agents.slice(start, start + size);
    const args = [
      CLI_MAIN,
      ...base,
      "agent",
      "host",
      "--ready-to",
      options.readyTo,
      "--ids-stdin",
      ...(options.agentArgs ?? []),
    ];
    if (options.command && options.command.length > 0) args.push("--", ...options.command);
    else args.push("--echo");
    const child = spawn(process.execPath, args, {
      stdio: ["pipe", "ignore", stderrOf(options)],
      detached: options.detached ?? false,
    });
    children.push(child);
    onExit(child, `pooled host ${start / size}`);
    processes.push({ pid: child.pid ?? 0, kind: "pooled-host", agents: slice.length });
    for (const agent of slice) if (child.pid) pids.set(agent.id, child.pid);
    child.stdin?.end(`${slice.map((agent) => `${agent.id} ${agent.team}`).join("\n")}\n`);
  }
}

/** The bash agent sends no ready message: it is ready once it has touched its heartbeat. */
function markBashAgentsReady(bus: Bus, expected: Map<string, string>, ready: Set<string>): boolean {
  let changed = false;
  for (const id of expected.keys()) {
    if (ready.has(id)) continue;
    if (existsSync(bus.layout.agent(id).heartbeat)) {
      ready.add(id);
      changed = true;
    }
  }
  return changed;
}

function spawnBashAgents(
  options: SpawnOptions,
  pids: Map<string, number>,
  processes: ProcessRecord[],
  children: ChildProcess[],
  onExit: (child: ChildProcess, what: string) => void,
): void {
  for (const agent of options.agents) {
    const args = [BASH_AGENT, "run", "--bus", options.bus.dir, "--agent", agent.id];
    const child = spawn("bash", args, {
      stdio: ["ignore", "ignore", stderrOf(options)],
      detached: options.detached ?? false,
    });
    children.push(child);
    onExit(child, `bash agent ${agent.id}`);
    processes.push({ pid: child.pid ?? 0, kind: "agent", agents: 1 });
    if (child.pid) pids.set(agent.id, child.pid);
  }
}

/** Detached agents must not hold the spawner's stderr open after it exits. */
function stderrOf(options: SpawnOptions): "ignore" | "inherit" {
  return options.detached ? "ignore" : "inherit";
}

/** Global CLI flags that point a child `cfn` at the same bus. */
export function busArgs(bus: Bus): string[] {
  return ["--bus-root", bus.config.root, "--bus", bus.config.name, "--log-level", "warn"];
}

/**
 * Graceful stop: SIGTERM to every process (supervisors forward it; agents drain), wait up to
 * `timeoutMs` for them to exit, then SIGKILL what is left. Returns how many had to be killed.
 * A process given with its start time is signalled only while its pid still has that start time:
 * a pid that is gone or now belongs to another process (reused) counts as stopped, never signalled.
 * (The check and the signal are two system calls apart; Node offers no pidfd to close that gap.)
 */
export async function killProcesses(
  processes: ProcessIdentity[],
  timeoutMs: number,
  agentProcesses: Array<number | ProcessIdentity> = [],
): Promise<{ stopped: number; killed: number }> {
  const targets = new Map<number, ProcessIdentity>();
  for (const target of [...processes, ...agentProcesses]) {
    const identity = typeof target === "number" ? { pid: target } : target;
    if (identity.pid <= 0) continue;
    const known = targets.get(identity.pid);
    if (!known || (known.processStart === undefined && identity.processStart !== undefined))
      targets.set(identity.pid, identity);
  }
  const isOurs = (target: ProcessIdentity) => isProcessAlive(target.pid, target.processStart);
  let alive = [...targets.values()].filter(isOurs);
  for (const target of alive) signal(target.pid, "SIGTERM");
  const deadline = Date.now() + timeoutMs;
  alive = alive.filter(isOurs);
  while (alive.length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    alive = alive.filter(isOurs);
  }
  // An agent runs each command in a process group of its own (so that it can end the command's
  // whole tree): killed, it cannot, and the command would run on, reparented. Its children's
  // groups go with it (one scan of /proc for all of them, before any is killed).
  const groups = alive.length > 0 ? childGroupsOf(alive.map((target) => target.pid)) : new Map();
  for (const target of alive) {
    signal(target.pid, "SIGKILL");
    for (const group of groups.get(target.pid) ?? []) signal(-group, "SIGKILL");
  }
  return { stopped: targets.size - alive.length, killed: alive.length };
}

/**
 * For each of `pids`, the process groups led by its children that are not in its own group
 * (Linux: /proc; none elsewhere), from one scan of at most CHILD_SCAN_PROCESSES_MAX entries.
 */
export function childGroupsOf(pids: number[]): Map<number, number[]> {
  const groups = new Map<number, number[]>();
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return groups;
  }
  const parents = new Map(pids.map((pid) => [pid, processGroupOf(pid)]));
  let read = 0;
  for (const entry of entries) {
    if (!/^[0-9]+$/.test(entry)) continue;
    if (++read > CHILD_SCAN_PROCESSES_MAX) break;
    const pid = Number(entry);
    const stat = procStat(pid);
    if (!stat || !parents.has(stat.ppid) || stat.pgrp !== pid || stat.pgrp === parents.get(stat.ppid))
      continue;
    const list = groups.get(stat.ppid) ?? [];
    list.push(pid);
    groups.set(stat.ppid, list);
  }
  return groups;
}

/** /proc entries childGroupsOf reads at most (a host's processes, bounded). */
export const CHILD_SCAN_PROCESSES_MAX = 100_000;

function processGroupOf(pid: number): number | undefined {
  return procStat(pid)?.pgrp;
}

/** ppid and pgrp of `pid` from /proc/<pid>/stat (the command name may hold spaces and parens). */
function procStat(pid: number): { ppid: number; pgrp: number } | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const ppid = Number(fields[1]);
  const pgrp = Number(fields[2]);
  return Number.isInteger(ppid) && Number.isInteger(pgrp) ? { ppid, pgrp } : undefined;
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch (error) {
    if (!isCfnError(error) && (error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
  }
}
