// `npm run bench -- raft [--runs 3] [--clients 128] [--seconds 5] [--latency-samples 400]
//                        [--kills 10] [--soak-seconds 60] [--no-etcd]`
//
// The Raft figures of GitHub issue 3, measured on 3 real kv-node processes on this machine
// (cluster/local.ts: WebSocket transport on 127.0.0.1, LevelDB with fsync, default RaftHost
// timing), with client load from a separate process (this file forked as a worker):
//
//   1. throughput: committed 256-byte puts per second with `--clients` concurrent client sessions
//   2. commit latency at light load: one client, sequential puts, p50
//   3. failover: leader kill -9 → the next committed write, p50 and p99 over `--kills` kills
//   4. spurious leader changes during a full-load soak of `--soak-seconds`
//
// Anchor: etcd (Debian's etcd-server) with 3 members on loopback, measured in the same run with
// the same kind of load when `etcd` and `etcdctl` are on PATH; skipped with a reason otherwise.

import { type ChildProcess, fork } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { type EtcdLoadResult, etcdLatency, etcdLoad, measureEtcdAnchor } from "../../cluster/etcd-local.js";
import { KvClusterClient, KvUnknownOutcomeError } from "../../cluster/kv-client.js";
import { LocalCluster } from "../../cluster/local.js";
import { DEFAULT_RAFT_HOST_CONFIG } from "../../src/node/raft-host-config.js";
import { atLeast, atMost, exactly, type Figure, percentile, round, type SuiteResult, stats } from "../lib.js";

const SELF = fileURLToPath(import.meta.url);
const WORKER_FLAG = "--raft-bench-worker";
const PAYLOAD_BYTES = 256;

interface Options {
  runs: number;
  clients: number;
  seconds: number;
  latencySamples: number;
  kills: number;
  soakSeconds: number;
  etcd: boolean;
}

type WorkerRequest =
  | {
      kind: "load";
      urls: Record<string, string>;
      token: string;
      clients: number;
      seconds: number;
      warmupSeconds: number;
      tag: string;
    }
  | { kind: "latency"; urls: Record<string, string>; token: string; samples: number; tag: string }
  | { kind: "etcd-load"; urls: string[]; clients: number; seconds: number }
  | { kind: "etcd-latency"; urls: string[]; samples: number };

interface LoadResult {
  acked: number;
  seconds: number;
  unknown: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
}

interface LatencyResult {
  samplesMs: number[];
}

function parseOptions(args: string[]): Options {
  const options: Options = {
    runs: 3,
    clients: 128,
    seconds: 5,
    latencySamples: 400,
    kills: 10,
    soakSeconds: 60,
    etcd: true,
  };
  for (let i = 0; i < args.length; i++) {
    const value = Number(args[i + 1]);
    switch (args[i]) {
      case "--runs":
        options.runs = value;
        i++;
        break;
      case "--clients":
        options.clients = value;
        i++;
        break;
      case "--seconds":
        options.seconds = value;
        i++;
        break;
      case "--latency-samples":
        options.latencySamples = value;
        i++;
        break;
      case "--kills":
        options.kills = value;
        i++;
        break;
      case "--soak-seconds":
        options.soakSeconds = value;
        i++;
        break;
      case "--no-etcd":
        options.etcd = false;
        break;
      default:
        throw new Error(`unknown option ${args[i]}`);
    }
  }
  return options;
}

/** Linux PSI: share of time some task waited for a CPU (other work on the machine skews every
 *  figure here; the bench records it so a reader can tell a quiet run from a busy one). */
function cpuPressure(): string | undefined {
  try {
    return readFileSync("/proc/pressure/cpu", "utf8").split("\n")[0];
  } catch {
    return undefined;
  }
}

/** CPU seconds (user + system) used so far by the running node processes (Linux /proc). */
function nodesCpuSeconds(cluster: LocalCluster): number | undefined {
  try {
    let total = 0;
    for (const node of cluster.nodes) {
      const pid = node.process?.pid;
      if (pid === undefined) continue;
      const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
      total += (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, clock ticks
    }
    return total;
  } catch {
    return undefined;
  }
}

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

// ---- worker side (a separate process generating client load) -----------------------------------

async function workerMain(request: WorkerRequest): Promise<LoadResult | LatencyResult | EtcdLoadResult> {
  if (request.kind === "etcd-load")
    return etcdLoad(request.urls, request.clients, request.seconds, PAYLOAD_BYTES);
  if (request.kind === "etcd-latency")
    return { samplesMs: await etcdLatency(request.urls, request.samples, PAYLOAD_BYTES) };
  const client = new KvClusterClient({
    urls: request.urls,
    clusterToken: request.token,
    requestTimeoutMs: 10_000,
  });
  const value = "v".repeat(PAYLOAD_BYTES);
  try {
    if (request.kind === "latency") {
      const session = client.session(`lat-${request.tag}`);
      for (let i = 0; i < 20; i++) await session.put(`lat-${i % 16}`, value); // warm-up
      const samplesMs: number[] = [];
      for (let i = 0; i < request.samples; i++) {
        const start = performance.now();
        await session.put(`lat-${i % 16}`, value);
        samplesMs.push(performance.now() - start);
        await sleep(1); // light load: one request at a time, with a gap
      }
      return { samplesMs };
    }
    const warmupEnd = performance.now() + request.warmupSeconds * 1000;
    const end = warmupEnd + request.seconds * 1000;
    let acked = 0;
    let unknown = 0;
    const latencies: number[] = [];
    const runClient = async (c: number) => {
      const session = client.session(`load-${request.tag}-${c}`);
      for (let i = 0; performance.now() < end; i++) {
        const start = performance.now();
        try {
          await session.put(`k-${c}-${i % 64}`, value);
        } catch (error) {
          if (!(error instanceof KvUnknownOutcomeError)) throw error;
          unknown++;
          continue;
        }
        const done = performance.now();
        if (start >= warmupEnd && done <= end) {
          acked++;
          if (latencies.length < 200_000) latencies.push(done - start);
        }
      }
    };
    await Promise.all(Array.from({ length: request.clients }, (_, c) => runClient(c)));
    return {
      acked,
      seconds: request.seconds,
      unknown,
      latencyP50Ms: percentile(latencies, 0.5),
      latencyP99Ms: percentile(latencies, 0.99),
    };
  } finally {
    client.close();
  }
}

function runWorker<T>(request: WorkerRequest): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const child: ChildProcess = fork(SELF, [WORKER_FLAG], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    child.once("message", (message) => {
      const reply = message as { ok: boolean; result?: T; error?: string };
      if (reply.ok) resolve(reply.result as T);
      else reject(new Error(reply.error));
      child.kill();
    });
    child.once("exit", (code) => {
      if (code !== 0 && code !== null) reject(new Error(`bench worker exited with code ${code}`));
    });
    child.send(request);
  });
}

if (process.argv.includes(WORKER_FLAG)) {
  process.once("message", (request) => {
    workerMain(request as WorkerRequest).then(
      (result) => process.send?.({ ok: true, result }, () => process.exit(0)),
      (error: Error) =>
        process.send?.({ ok: false, error: error.stack ?? String(error) }, () => process.exit(1)),
    );
  });
}

// ---- bench side ---------------------------------------------------------------------------------

async function terms(cluster: LocalCluster): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const node of cluster.nodes) {
    const status = await cluster.status(node.id);
    if (status) out.set(node.id, status.term);
  }
  return out;
}

async function leaderChangesTotal(cluster: LocalCluster, client: KvClusterClient): Promise<number> {
  let total = 0;
  for (const node of cluster.nodes) {
    const text = await client.metrics(node.id);
    const line = text.split("\n").find((l) => l.startsWith("cfn_raft_leader_changes_total"));
    total += line ? Number(line.split(" ").pop()) : 0;
  }
  return total;
}

async function waitAllCaughtUp(cluster: LocalCluster, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const statuses = await Promise.all(cluster.nodes.map((node) => cluster.status(node.id)));
    if (statuses.every((s) => s !== undefined) && new Set(statuses.map((s) => s!.applied)).size === 1) return;
    await sleep(20);
  }
  throw new Error("nodes did not catch up");
}

async function measureFailover(
  cluster: LocalCluster,
  kills: number,
  log: (line: string) => void,
): Promise<number[]> {
  const samplesMs: number[] = [];
  const client = cluster.client({ requestTimeoutMs: 10_000, retryDelayMs: 2 });
  const session = client.session("failover");
  try {
    for (let k = 0; k < kills; k++) {
      await waitAllCaughtUp(cluster, 15_000);
      const leader = await cluster.waitForLeader();
      await session.put("failover", `before-${k}`); // the client now talks to the leader
      const killedAt = performance.now();
      await cluster.kill(leader);
      await session.put("failover", `after-${k}`);
      const ms = performance.now() - killedAt;
      samplesMs.push(ms);
      log(`failover ${k + 1}/${kills}: killed ${leader}, next committed write after ${round(ms)} ms`);
      await cluster.restart(leader);
      // Let every peer redial the restarted node (kv-node caps the backoff at 250 ms) before the
      // next kill, so each kill starts from a fully connected 3-node cluster.
      await sleep(1_000);
    }
  } finally {
    client.close();
  }
  return samplesMs;
}

export async function run(args: string[]): Promise<SuiteResult> {
  const options = parseOptions(args);
  if (options.clients < 100)
    throw new Error("--clients must be at least 100 (the target is for 100+ concurrent clients)");
  const log = (line: string) => process.stderr.write(`raft bench: ${line}\n`);
  const figures: Figure[] = [];
  const context: Record<string, unknown> = {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    loadAverageAtStart: loadavg().map((v) => round(v, 2)),
    cpuPressureAtStart: cpuPressure(),
    nodes: 3,
    transport: "WebSocket on 127.0.0.1",
    storage: "LevelDB, one synced batch per Ready, a Ready's entries as one entry block (format 2)",
    timing: {
      tickIntervalMs: DEFAULT_RAFT_HOST_CONFIG.tickIntervalMs,
      electionTimeoutTicks: DEFAULT_RAFT_HOST_CONFIG.electionTimeoutTicks,
      heartbeatTicks: DEFAULT_RAFT_HOST_CONFIG.heartbeatTicks,
      snapshotEntriesInterval: DEFAULT_RAFT_HOST_CONFIG.snapshotEntriesInterval,
    },
    payloadBytes: PAYLOAD_BYTES,
    options,
  };

  const cluster = await LocalCluster.start({ size: 3, logLevel: "warn" });
  const monitor = cluster.client({ requestTimeoutMs: 2_000 });
  try {
    await cluster.waitForLeader();
    const base = { urls: cluster.clientUrls, token: cluster.clusterToken };

    // 1. throughput
    const throughputs: number[] = [];
    const loadLatencyP50: number[] = [];
    const loadLatencyP99: number[] = [];
    const cpuMicrosPerPut: number[] = [];
    for (let r = 0; r < options.runs; r++) {
      const cpuBefore = nodesCpuSeconds(cluster);
      const result = await runWorker<LoadResult>({
        kind: "load",
        ...base,
        clients: options.clients,
        seconds: options.seconds,
        warmupSeconds: 1,
        tag: `t${r}`,
      });
      const perSecond = result.acked / result.seconds;
      throughputs.push(perSecond);
      const cpuAfter = nodesCpuSeconds(cluster);
      // Includes the 1 s warm-up (scaled out approximately): a figure that moves with the code
      // more than with the machine's load, unlike throughput.
      if (cpuBefore !== undefined && cpuAfter !== undefined && result.acked > 0) {
        cpuMicrosPerPut.push(((cpuAfter - cpuBefore) * 1e6) / (result.acked * (1 + 1 / result.seconds)));
      }
      loadLatencyP50.push(result.latencyP50Ms);
      loadLatencyP99.push(result.latencyP99Ms);
      log(
        `throughput run ${r + 1}: ${Math.round(perSecond)} committed puts/s (${options.clients} clients, latency p50 ${round(result.latencyP50Ms)} ms, p99 ${round(result.latencyP99Ms)} ms, unknown ${result.unknown})`,
      );
    }
    const t = stats(throughputs);
    figures.push(
      atLeast(
        `committed ${PAYLOAD_BYTES}-byte proposals/s, ${options.clients} concurrent clients`,
        t.p50,
        "proposals/s",
        10_000,
        {
          median: round(t.p50),
          min: round(t.min),
          max: round(t.max),
          runs: throughputs.map((v) => Math.round(v)),
          latencyUnderLoadMs: {
            p50: round(stats(loadLatencyP50).p50),
            p99: round(stats(loadLatencyP99).p50),
          },
          nodeCpuMicrosecondsPerPut:
            cpuMicrosPerPut.length > 0 ? round(stats(cpuMicrosPerPut).p50) : undefined,
        },
      ),
    );

    // 2. commit latency at light load
    const runP50: number[] = [];
    const all: number[] = [];
    for (let r = 0; r < options.runs; r++) {
      const result = await runWorker<LatencyResult>({
        kind: "latency",
        ...base,
        samples: options.latencySamples,
        tag: `l${r}`,
      });
      const s = stats(result.samplesMs);
      runP50.push(s.p50);
      all.push(...result.samplesMs);
      log(`light-load latency run ${r + 1}: p50 ${round(s.p50)} ms, p99 ${round(s.p99)} ms`);
    }
    const latency = stats(all);
    figures.push(
      atMost("commit latency at light load, p50", stats(runP50).p50, "ms", 3, {
        medianOfRunP50s: round(stats(runP50).p50),
        p50: round(latency.p50),
        p99: round(latency.p99),
        samples: latency.count,
      }),
    );

    // 3. failover
    const failover = await measureFailover(cluster, options.kills, log);
    const f = stats(failover);
    figures.push(
      atMost("leader kill -9 → next committed write, p50", f.p50, "ms", 500, {
        p50: round(f.p50),
        p99: round(f.p99),
        max: round(f.max),
        kills: f.count,
        samplesMs: failover.map((v) => round(v)),
      }),
      atMost("leader kill -9 → next committed write, p99", f.p99, "ms", 1000, {
        p50: round(f.p50),
        p99: round(f.p99),
        kills: f.count,
      }),
    );

    // 4. spurious leader changes at full load
    await waitAllCaughtUp(cluster, 15_000);
    await cluster.waitForLeader();
    const termsBefore = await terms(cluster);
    const changesBefore = await leaderChangesTotal(cluster, monitor);
    log(`soak: ${options.soakSeconds} s at full load (${options.clients} clients)`);
    const soak = await runWorker<LoadResult>({
      kind: "load",
      ...base,
      clients: options.clients,
      seconds: options.soakSeconds,
      warmupSeconds: 0,
      tag: "soak",
    });
    const termsAfter = await terms(cluster);
    const changesAfter = await leaderChangesTotal(cluster, monitor);
    // Every election bumps the term, so the largest term increase counts the elections; the
    // per-node counters of changes to another leader (summed) are reported alongside.
    const elections = Math.max(
      ...cluster.nodes.map((node) => (termsAfter.get(node.id) ?? 0) - (termsBefore.get(node.id) ?? 0)),
    );
    const leaderChangesSeen = changesAfter - changesBefore;
    log(
      `soak: ${Math.round(soak.acked / soak.seconds)} puts/s, ${elections} elections (term increase), ${leaderChangesSeen} leader changes seen by the nodes`,
    );
    figures.push(
      exactly(
        `spurious leader changes (elections) during a ${options.soakSeconds} s full-load run`,
        elections,
        "elections",
        0,
        {
          soakSeconds: options.soakSeconds,
          leaderChangesSeenByNodes: leaderChangesSeen,
          throughputPerSecond: Math.round(soak.acked / soak.seconds),
          latencyP99Ms: round(soak.latencyP99Ms),
        },
      ),
    );
  } finally {
    monitor.close();
    await cluster.stop();
  }

  // Anchor: etcd, same machine, same run.
  context.etcd = options.etcd
    ? await measureEtcdAnchor({
        clients: options.clients,
        seconds: options.seconds,
        latencySamples: options.latencySamples,
        log,
        runLoad: (urls, clients, seconds) =>
          runWorker<EtcdLoadResult>({ kind: "etcd-load", urls, clients, seconds }),
        runLatency: async (urls, samples) =>
          (await runWorker<LatencyResult>({ kind: "etcd-latency", urls, samples })).samplesMs,
      })
    : { skipped: "--no-etcd" };
  context.loadAverageAtEnd = loadavg().map((v) => round(v, 2));
  context.cpuPressureAtEnd = cpuPressure();
  return { suite: "raft", figures, context };
}
