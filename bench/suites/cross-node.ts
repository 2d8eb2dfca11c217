// `npm run bench -- cross-node [--runs 5] [--messages 30000] [--samples 2000]`: the cluster node
// figures of GitHub issue 4, with real node processes (`cfn node start` from dist/), real sockets,
// real LevelDB on disk, and sender/receiver agents in their own processes (this file forks itself).
//
//   1. throughput: one sender agent on node A → one receiver agent on node B, one file per message
//   2. added latency: p99 of send → receive across A→B minus p99 of the same on one bus (local)
//   3. failover: SIGKILL a node that coordinates teams → a worker of one of its teams on a
//      surviving node holds the "new coordinator" notification (with the checkpoint to resume from)
//   4. persistence cost: cross-node latency with `--persistence` (inbox mirror + synced spool) vs
//      without, a second pair measured in the same runs as the plain one (median of per-run ratios)
//   5. graceful shutdown: SIGTERM with 1,000 messages queued for another node → process exit
//
// Anchors measured in the same run: the local bus alone (same sender/receiver method), and NATS
// (Debian's nats-server, core pub → sub on loopback; skipped with a note when not installed).
//
// Cross-process times use process.hrtime (CLOCK_MONOTONIC, shared by all processes of a host).

import { readFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { type LaunchedNode, LocalNodeCluster, waitUntil } from "../../cluster/node-launcher.js";
import { Bus } from "../../src/bus/index.js";
import { BUSY_PROCESS_NODE_FLAGS } from "../../src/runtime-flags.js";
import {
  atLeast,
  atMost,
  type Figure,
  forkWorker,
  percentile,
  type SuiteResult,
  serveWorker,
  stats,
} from "../lib.js";
import { startNatsAnchor } from "../nats-anchor.js";

const SELF = fileURLToPath(import.meta.url);
/**
 * Messages of the warm-up phase of a latency run: first a burst (fills the connection's window,
 * opens the proxy mailbox), then messages one every ~1 ms, which run the nodes' light-load path
 * (one message per frame) until it is optimised; then a pause (ms). Without the paced part the
 * nodes compiled that path during the first timed run, whose p99 stood 0.7–1.5 ms above the later
 * runs' (docs/NODE.md, "Performance").
 */
const LATENCY_WARMUP_MESSAGES = 2_000;
const LATENCY_PACED_WARMUP_MESSAGES = 2_000;
const LATENCY_WARMUP_IDLE_MS = 500;
const WORKER_FLAG = "--cross-node-bench-worker";
const INBOX_DEPTH = 1_000_000;
const NODE_ENV = { CFN_BUS_INBOX_DEPTH_MAX: String(INBOX_DEPTH) };

type WorkerRequest =
  | {
      kind: "send";
      root: string;
      from: string;
      to: string;
      count: number;
      payloadBytes: number;
      gapMs: number;
      /** Messages sent first as fast as the inbox takes them (type "warm", not timed), then a pause. */
      warmup?: number;
      /** Warm-up messages sent after those, one every ~1 ms (the light-load path), then the pause. */
      pacedWarmup?: number;
    }
  | { kind: "receive"; root: string; agent: string; expected: number; timeoutMs: number }
  | {
      kind: "await-type";
      root: string;
      agent: string;
      type: string;
      previous: string;
      epochAbove: number;
      timeoutMs: number;
    };

const nowNs = () => process.hrtime.bigint();

function openBus(root: string): Bus {
  return new Bus({ config: { root, name: "default", inboxDepthMax: INBOX_DEPTH } });
}

// ---- worker side --------------------------------------------------------------------------------

async function worker(request: WorkerRequest): Promise<unknown> {
  const bus = openBus(request.root);
  switch (request.kind) {
    case "send": {
      const filler = "x".repeat(Math.max(0, request.payloadBytes - 40));
      // Warm-up (latency runs): the same send → forward → receive path, so that agents and nodes
      // run optimised code, as long-running ones do; then a quiet pause before the timed messages.
      for (let i = 0; i < (request.warmup ?? 0); i++) {
        bus.sendSync(request.from, request.to, { type: "warm", payload: { i, t: String(nowNs()), filler } });
        if (i % 64 === 63) await new Promise((resolve) => setTimeout(resolve, 1));
      }
      for (let i = 0; i < (request.pacedWarmup ?? 0); i++) {
        bus.sendSync(request.from, request.to, { type: "warm", payload: { i, t: String(nowNs()), filler } });
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
      if (request.warmup || request.pacedWarmup)
        await new Promise((resolve) => setTimeout(resolve, LATENCY_WARMUP_IDLE_MS));
      const cpuStart = process.cpuUsage();
      const startNs = nowNs();
      for (let i = 0; i < request.count; i++) {
        bus.sendSync(request.from, request.to, { type: "bench", payload: { i, t: String(nowNs()), filler } });
        if (request.gapMs > 0) await new Promise((resolve) => setTimeout(resolve, request.gapMs));
      }
      const cpu = process.cpuUsage(cpuStart);
      return { startNs: String(startNs), endNs: String(nowNs()), cpuUs: cpu.user + cpu.system };
    }
    case "receive": {
      const mailbox = bus.openMailbox(request.agent);
      process.send?.({ ready: true });
      const latenciesUs: number[] = [];
      let received = 0;
      let lastNs = 0n;
      const seen = new Set<number>();
      let duplicates = 0;
      const deadline = Date.now() + request.timeoutMs;
      let cpuStart: NodeJS.CpuUsage | undefined;
      while (received < request.expected && Date.now() < deadline) {
        const deliveries = await mailbox.receive({ timeoutMs: 1000, max: 1000 });
        cpuStart ??= process.cpuUsage();
        const at = nowNs();
        for (const delivery of deliveries) {
          if (delivery.message.type === "warm") continue; // not counted, not timed
          const payload = delivery.message.payload as { i: number; t: string };
          if (seen.has(payload.i)) duplicates++;
          seen.add(payload.i);
          latenciesUs.push(Number(at - BigInt(payload.t)) / 1000);
        }
        const timed = deliveries.filter((delivery) => delivery.message.type !== "warm").length;
        if (timed > 0) lastNs = at;
        received += timed;
        mailbox.ack(deliveries);
      }
      mailbox.close();
      const cpu = process.cpuUsage(cpuStart);
      return { received, duplicates, lastNs: String(lastNs), latenciesUs, cpuUs: cpu.user + cpu.system };
    }
    case "await-type": {
      const mailbox = bus.openMailbox(request.agent);
      process.send?.({ ready: true });
      const deadline = Date.now() + request.timeoutMs;
      while (Date.now() < deadline) {
        const deliveries = await mailbox.receive({ timeoutMs: 200, max: 64 });
        const at = nowNs();
        mailbox.ack(deliveries);
        // Earlier notifications (the first assignment) may still sit in the inbox: wait for this failover's.
        const hit = deliveries.find((delivery) => {
          const payload = delivery.message.payload as { previous?: string; epoch?: number } | null;
          return (
            delivery.message.type === request.type &&
            payload?.previous === request.previous &&
            (payload?.epoch ?? 0) > request.epochAbove
          );
        });
        if (hit) {
          mailbox.close();
          return { atNs: String(at), payload: hit.message.payload };
        }
      }
      mailbox.close();
      return { atNs: "0", payload: null };
    }
  }
}

if (process.argv.includes(WORKER_FLAG)) serveWorker(worker);

/** Forks a worker; `ready` resolves when a receiving worker opened its mailbox. */
// Workers at full rate stand for busy cfn processes and run with their Node flags; the light-load
// latency workers stand for agents, which keep V8's default heap (as in bench/suites/bus.ts).
const startWorker = <T>(request: WorkerRequest, heap: "busy" | "agent" = "busy") =>
  forkWorker<T>(SELF, WORKER_FLAG, request, heap === "busy" ? [...BUSY_PROCESS_NODE_FLAGS] : []);

// ---- measurements -------------------------------------------------------------------------------

async function register(node: LaunchedNode, agent: string, team: string | null = null): Promise<void> {
  const { status, json } = await node.request("POST", "/v1/agents", { agent, team });
  if (status !== 200) throw new Error(`register ${agent} on ${node.id}: ${JSON.stringify(json)}`);
}

async function waitRouted(nodes: LaunchedNode[], agents: string[]): Promise<void> {
  await waitUntil("agents routed", async () => {
    for (const node of nodes) {
      const known = new Set(((await node.status())?.agents ?? []).map((agent: { id: string }) => agent.id));
      if (!agents.every((agent) => known.has(agent))) return false;
    }
    return true;
  });
}

interface ReceiveResult {
  received: number;
  duplicates: number;
  lastNs: string;
  latenciesUs: number[];
  /** CPU time of the receiver from its first delivery on. */
  cpuUs: number;
}

/** User + system CPU time of a process so far, in µs (from /proc; undefined elsewhere). */
function processCpuUs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}
const CLOCK_TICKS_PER_SECOND = 100;

/** CPU per message of each process of a throughput run, in µs. */
type CpuPerMessage = Record<string, number>;

/** Sender agent on `from`'s bus → receiver agent on `to`'s bus (the same bus: the local anchor). */
async function throughputRun(
  from: string,
  to: string,
  agent: string,
  messages: number,
  nodes: LaunchedNode[] = [],
): Promise<{ perSecond: number; lost: number; duplicates: number; cpuPerMessageUs: CpuPerMessage }> {
  const receiver = startWorker<ReceiveResult>({
    kind: "receive",
    root: to,
    agent,
    expected: messages,
    timeoutMs: 120_000,
  });
  await receiver.ready;
  const nodeCpuBefore = nodes.map((node) => processCpuUs(node.child?.pid));
  const sender = startWorker<{ startNs: string; endNs: string; cpuUs: number }>({
    kind: "send",
    root: from,
    from: "bench-sender",
    to: agent,
    count: messages,
    payloadBytes: 256,
    gapMs: 0,
  });
  const [sent, got] = await Promise.all([sender.result, receiver.result]);
  const seconds = Number(BigInt(got.lastNs) - BigInt(sent.startNs)) / 1e9;
  const perMessage = (us: number) => Number((us / Math.max(1, got.received)).toFixed(1));
  const cpuPerMessageUs: CpuPerMessage = { sender: perMessage(sent.cpuUs), receiver: perMessage(got.cpuUs) };
  nodes.forEach((node, index) => {
    const before = nodeCpuBefore[index];
    const after = processCpuUs(node.child?.pid);
    if (before !== undefined && after !== undefined) cpuPerMessageUs[node.id] = perMessage(after - before);
  });
  return {
    perSecond: got.received / seconds,
    lost: messages - got.received,
    duplicates: got.duplicates,
    cpuPerMessageUs,
  };
}

async function latencyRun(
  fromRoot: string,
  toRoot: string,
  agent: string,
  samples: number,
): Promise<number[]> {
  const receiver = startWorker<ReceiveResult>(
    {
      kind: "receive",
      root: toRoot,
      agent,
      expected: samples,
      timeoutMs: 60_000,
    },
    "agent",
  );
  await receiver.ready;
  const sender = startWorker(
    {
      kind: "send",
      root: fromRoot,
      from: "bench-pinger",
      to: agent,
      count: samples,
      payloadBytes: 256,
      gapMs: 2,
      warmup: LATENCY_WARMUP_MESSAGES,
      pacedWarmup: LATENCY_PACED_WARMUP_MESSAGES,
    },
    "agent",
  );
  await sender.result;
  const got = await receiver.result;
  // The first messages warm the path (a proxy mailbox opens, a connection fills its window).
  return got.latenciesUs.slice(Math.min(50, Math.floor(samples / 5)));
}

async function failoverRun(cluster: LocalNodeCluster, teams: string[]): Promise<number> {
  const leader = await cluster.leader(cluster.nodes.filter((node) => node.running));
  const status = await leader.status();
  const coordinatorOf = new Map<string, string>(
    status.teams.map((team: { id: string; coordinator: string }) => [team.id, team.coordinator]),
  );
  const epochOf = new Map<string, number>(
    status.teams.map((team: { id: string; epoch: number }) => [team.id, team.epoch]),
  );
  const busy = cluster.nodes.filter((node) => node.running && [...coordinatorOf.values()].includes(node.id));
  const victim = busy.find((node) => node === leader) ?? busy[0];
  const team = teams.find((id) => coordinatorOf.get(id) === victim.id) as string;
  const witness = cluster.nodes.find((node) => node !== victim && node.running) as LaunchedNode;
  const waiter = startWorker<{ atNs: string; payload: { previous: string } | null }>({
    kind: "await-type",
    root: witness.spec.busRoot,
    agent: `${team}-w-${witness.id}`,
    type: "cfn.team.coordinator",
    previous: victim.id,
    epochAbove: epochOf.get(team) ?? 0,
    timeoutMs: 30_000,
  });
  await waiter.ready;
  const killedNs = nowNs();
  victim.signal("SIGKILL");
  const notice = await waiter.result;
  await victim.waitExit();
  if (notice.payload === null) throw new Error("no coordinator notification within 30 s");
  const seconds = Number(BigInt(notice.atNs) - killedNs) / 1e9;
  // Bring the victim back for the next run.
  await victim.start(cluster.peerFlags(victim), NODE_ENV);
  await waitUntil(
    "victim ready",
    async () => (await fetch(`${victim.api}/readyz`).catch(() => undefined))?.status === 200,
    30_000,
  );
  await waitUntil("victim active", async () => {
    const s = await (await cluster.leader()).status();
    return s?.members.find((member: { id: string }) => member.id === victim.id)?.state === "active";
  });
  return seconds;
}

async function shutdownRun(
  cluster: LocalNodeCluster,
  queued: number,
): Promise<{ ms: number; delivered: number; unacknowledged: number; wasLeader: boolean }> {
  const [a, b] = cluster.nodes;
  const agent = "shutdown-sink";
  await register(b, agent);
  await waitRouted([a], [agent]);
  const bus = openBus(a.spec.busRoot);
  for (let i = 0; i < queued; i++)
    bus.sendSync("bench-sender", agent, { type: "bench", payload: { i, t: "0" } });
  bus.close();
  const startedNs = nowNs();
  a.signal("SIGTERM");
  await a.waitExit();
  const ms = Number(nowNs() - startedNs) / 1e6;
  const report = JSON.parse(
    a.stdout
      .trim()
      .split("\n")
      .find((line) => line.includes('"stopped"')) ?? "{}",
  );
  const receiver = startWorker<ReceiveResult>({
    kind: "receive",
    root: b.spec.busRoot,
    agent,
    expected: queued,
    timeoutMs: 15_000,
  });
  const got = await receiver.result;
  await a.start(cluster.peerFlags(a), NODE_ENV);
  return {
    ms,
    delivered: got.received,
    unacknowledged: report.unacknowledged ?? -1,
    wasLeader: report.wasLeader === true,
  };
}

function option(args: string[], name: string, fallback: number): number {
  const index = args.indexOf(name);
  if (index < 0) return fallback;
  const value = Number(args[index + 1]);
  return Number.isFinite(value) && value > 0 ? value : fallback;
}

function median(values: number[]): number {
  return percentile(values, 0.5);
}

/** Per-key median of records with the same keys. */
function medianByKey(records: Record<string, number>[]): Record<string, number> {
  const result: Record<string, number> = {};
  for (const key of Object.keys(records[0] ?? {}))
    result[key] = Number(median(records.map((record) => record[key] ?? Number.NaN)).toFixed(1));
  return result;
}

const SECTIONS = ["throughput", "latency", "persistence", "failover", "shutdown"] as const;

export async function run(args: string[]): Promise<SuiteResult> {
  const runs = option(args, "--runs", 5);
  const messages = option(args, "--messages", 30_000);
  const samples = option(args, "--samples", 2000);
  // `--only throughput,latency` runs a subset (while tuning); the summary then lists only those.
  const onlyIndex = args.indexOf("--only");
  const only = onlyIndex >= 0 ? new Set((args[onlyIndex + 1] ?? "").split(",")) : undefined;
  if (only && ![...only].every((name) => (SECTIONS as readonly string[]).includes(name)))
    throw new Error(`--only takes a comma-separated list of ${SECTIONS.join(", ")}`);
  const wanted = (section: (typeof SECTIONS)[number]) => only === undefined || only.has(section);
  const figures: Figure[] = [];
  const log = (line: string) => process.stderr.write(`cross-node: ${line}\n`);

  // 1, 2: two nodes, plain (spool not synced: kill -9 safe, like the default).
  const throughput: number[] = [];
  const localThroughput: number[] = [];
  const addedP99: number[] = [];
  const localP99: number[] = [];
  const crossP99: number[] = [];
  const crossP50: number[] = [];
  const localP50: number[] = [];
  const cpuPerMessage: CpuPerMessage[] = [];
  let lost = 0;
  let duplicates = 0;
  const persistP50: number[] = [];
  const persistP99: number[] = [];
  const persistCost: number[] = [];
  if (wanted("throughput") || wanted("latency") || wanted("persistence")) {
    const pair = await LocalNodeCluster.create(2, { prefix: "cfn-bench-pair-" });
    let persisted: LocalNodeCluster | undefined;
    try {
      await pair.startAll([], NODE_ENV);
      const [a, b] = pair.nodes;
      await register(b, "sink");
      await register(b, "ping");
      await register(a, "local");
      await waitRouted(pair.nodes, ["sink", "ping", "local"]);
      for (let r = 0; r < runs && wanted("throughput"); r++) {
        const anchor = await throughputRun(a.spec.busRoot, a.spec.busRoot, "local", messages);
        localThroughput.push(anchor.perSecond);
        const result = await throughputRun(a.spec.busRoot, b.spec.busRoot, "sink", messages, [a, b]);
        throughput.push(result.perSecond);
        cpuPerMessage.push(result.cpuPerMessageUs);
        lost += result.lost;
        duplicates += result.duplicates;
        log(
          `throughput run ${r + 1}: ${Math.round(result.perSecond)} msg/s (lost ${result.lost}, duplicates ${result.duplicates}); same bus, no node: ${Math.round(anchor.perSecond)} msg/s`,
        );
        log(`  CPU per message (µs): ${JSON.stringify(result.cpuPerMessageUs)}`);
      }
      if (wanted("latency") || wanted("persistence")) {
        // 4: persistence cost — a second pair with --persistence, measured in the same runs as the
        // plain pair (local, cross, persisted one after another), so that the machine's drift over
        // the suite does not land in the comparison: the cost is the median of per-run ratios.
        if (wanted("persistence")) {
          persisted = await LocalNodeCluster.create(2, { prefix: "cfn-bench-persist-" });
          await persisted.startAll(["--persistence"], NODE_ENV);
          await register(persisted.nodes[1], "ping");
          await waitRouted(persisted.nodes, ["ping"]);
        }
        for (let r = 0; r < runs; r++) {
          const local = await latencyRun(a.spec.busRoot, a.spec.busRoot, "local", samples);
          const cross = await latencyRun(a.spec.busRoot, b.spec.busRoot, "ping", samples);
          localP99.push(percentile(local, 0.99));
          localP50.push(percentile(local, 0.5));
          crossP99.push(percentile(cross, 0.99));
          crossP50.push(percentile(cross, 0.5));
          addedP99.push((percentile(cross, 0.99) - percentile(local, 0.99)) / 1000);
          log(
            `latency run ${r + 1}: local p50 ${percentile(local, 0.5).toFixed(0)} µs p99 ${percentile(local, 0.99).toFixed(0)} µs; cross p50 ${percentile(cross, 0.5).toFixed(0)} µs p99 ${percentile(cross, 0.99).toFixed(0)} µs`,
          );
          if (!persisted) continue;
          const [pa, pb] = persisted.nodes;
          const kept = await latencyRun(pa.spec.busRoot, pb.spec.busRoot, "ping", samples);
          persistP50.push(percentile(kept, 0.5));
          persistP99.push(percentile(kept, 0.99));
          persistCost.push((percentile(kept, 0.5) / percentile(cross, 0.5) - 1) * 100);
          log(
            `  with --persistence: cross p50 ${percentile(kept, 0.5).toFixed(0)} µs p99 ${percentile(kept, 0.99).toFixed(0)} µs (${persistCost[r].toFixed(1)} % at p50)`,
          );
        }
      }
    } finally {
      await pair.stop();
      await persisted?.stop();
    }
  }

  // Anchor: NATS core pub → sub on the same machine, same payload and latency method.
  const natsThroughput: number[] = [];
  const natsP50: number[] = [];
  const natsP99: number[] = [];
  const natsWanted = wanted("throughput") || wanted("latency");
  const nats = natsWanted ? await startNatsAnchor() : undefined;
  if (!nats) {
    if (natsWanted) log("nats-server not installed: NATS anchor skipped (apt-get install nats-server)");
  } else {
    try {
      for (let r = 0; r < runs; r++) {
        natsThroughput.push(await nats.throughput(messages, 256));
        const latencies = await nats.latencyUs(samples, 256, 2);
        natsP50.push(percentile(latencies, 0.5));
        natsP99.push(percentile(latencies, 0.99));
        log(
          `nats run ${r + 1}: ${Math.round(natsThroughput[r])} msg/s; latency p50 ${natsP50[r].toFixed(0)} µs p99 ${natsP99[r].toFixed(0)} µs`,
        );
      }
    } finally {
      nats.close();
    }
  }
  const natsAnchor =
    natsThroughput.length === 0
      ? { natsAnchor: "skipped: nats-server not installed" }
      : {
          natsAnchorMsgPerSecond: Math.round(median(natsThroughput)),
          natsAnchorP50Us: Math.round(median(natsP50)),
          natsAnchorP99Us: Math.round(median(natsP99)),
        };
  const throughputStats = stats(throughput);
  if (wanted("throughput"))
    figures.push(
      atLeast(
        "cross-node throughput (2 nodes, 1 sender → 1 receiver, 256 B)",
        median(throughput),
        "msg/s",
        20_000,
        {
          p50: Math.round(throughputStats.p50),
          min: Math.round(throughputStats.min),
          max: Math.round(throughputStats.max),
          runs,
          messagesPerRun: messages,
          lost,
          duplicates,
          localBusAnchorMsgPerSecond: Math.round(median(localThroughput)),
          ratioToLocalBus: Number((median(throughput) / median(localThroughput)).toFixed(3)),
          cpuPerMessageUs: medianByKey(cpuPerMessage),
          ...natsAnchor,
        },
      ),
    );
  if (wanted("latency"))
    figures.push(
      atMost("latency added over local delivery, p99", median(addedP99), "ms", 2, {
        perRunMs: addedP99.map((value) => Number(value.toFixed(3))),
        localP99Us: Math.round(median(localP99)),
        crossP99Us: Math.round(median(crossP99)),
        crossP50Us: Math.round(median(crossP50)),
        localP50Us: Math.round(median(localP50)),
        samplesPerRun: samples,
        warmupMessagesPerRun: LATENCY_WARMUP_MESSAGES + LATENCY_PACED_WARMUP_MESSAGES,
        pacedWarmupMessagesPerRun: LATENCY_PACED_WARMUP_MESSAGES,
        ...natsAnchor,
      }),
    );

  if (wanted("persistence")) {
    figures.push(
      atMost("persistence cost: added cross-node latency, p50", median(persistCost), "%", 20, {
        perRunPercent: persistCost.map((value) => Number(value.toFixed(1))),
        plainP50Us: Math.round(median(crossP50)),
        persistedP50Us: Math.round(median(persistP50)),
        plainP99Us: Math.round(median(crossP99)),
        persistedP99Us: Math.round(median(persistP99)),
        p99CostPercent: Number(
          (((median(persistP99) - median(crossP99)) / median(crossP99)) * 100).toFixed(1),
        ),
      }),
    );
  }

  if (wanted("failover") || wanted("shutdown")) {
    // 3: failover — three nodes, six teams with a worker on every node.
    const trio = await LocalNodeCluster.create(3, { prefix: "cfn-bench-failover-" });
    const failover: number[] = [];
    const shutdowns: { ms: number; delivered: number; unacknowledged: number }[] = [];
    const teams = ["t1", "t2", "t3", "t4", "t5", "t6"];
    try {
      await trio.startAll([], NODE_ENV);
      for (const team of teams)
        for (const node of trio.nodes) await register(node, `${team}-w-${node.id}`, team);
      await waitUntil("teams assigned", async () => {
        const s = await (await trio.leader()).status();
        return (
          s?.teams.length === teams.length &&
          s.teams.every((team: { coordinator: string | null }) => team.coordinator)
        );
      });
      for (let r = 0; r < runs && wanted("failover"); r++) {
        const seconds = await failoverRun(trio, teams);
        failover.push(seconds);
        log(`failover run ${r + 1}: ${seconds.toFixed(3)} s`);
      }
      // 5: graceful shutdown with 1,000 queued messages (n1 → n2).
      for (let r = 0; r < Math.min(runs, 3) && wanted("shutdown"); r++) {
        const result = await shutdownRun(trio, 1000);
        shutdowns.push(result);
        log(
          `shutdown run ${r + 1}: ${result.ms.toFixed(0)} ms, delivered ${result.delivered}, unacknowledged ${result.unacknowledged}${result.wasLeader ? " (was the leader: handed leadership off first)" : ""}`,
        );
        await trio.leader();
      }
    } finally {
      await trio.stop();
    }
    const failoverStats = stats(failover);
    if (wanted("failover"))
      figures.push(
        atMost(
          "node failure → teams reassigned and work resuming (worker notified)",
          median(failover),
          "s",
          2,
          {
            p99: Number(failoverStats.p99.toFixed(3)),
            max: Number(failoverStats.max.toFixed(3)),
            runs,
            nodeDownAfterMs: 800,
          },
        ),
      );
    const shutdownMs = shutdowns.map((s) => s.ms);
    if (wanted("shutdown"))
      figures.push(
        atMost("graceful shutdown with 1,000 queued messages", median(shutdownMs), "ms", 10_000, {
          max: Math.round(Math.max(...shutdownMs)),
          delivered: shutdowns.map((s) => s.delivered),
          unacknowledged: shutdowns.map((s) => s.unacknowledged),
        }),
      );
  }

  return {
    suite: "cross-node",
    figures,
    context: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model,
      loadavg: loadavg().map((value) => Number(value.toFixed(2))),
      node: process.version,
      notes:
        "real node processes on loopback; data dirs on disk (tmpdir), buses on tmpfs; spool not fsynced by default (kill -9 safe), fsynced with --persistence; NATS anchor: nats-server core pub/sub, publisher and subscriber connections in the bench process",
    },
  };
}
