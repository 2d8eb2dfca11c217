// `npm run bench -- bus [--runs 5] [--messages 50000] [--soak-seconds 60]`: the local bus figures of
// GitHub issue 2, measured with real processes (this file forks itself as the workers), real files
// on tmpfs, and the compiled bus from dist/.
//
//   1. throughput: one sender process → one receiver process, one file per message, 1 KiB payload
//   2. batch: time of one sendBatchSync of 100 messages (1 KiB payloads) into one inbox
//   3. wake-up latency: send → return of a waiting receive() in another process, at light load
//   4. burst: 2,000 sends into an inbox with inboxDepthMax 1000 → accepted / refused / lost / duplicated
//   5. memory: receiver RSS drift (after GC) over a soak run at moderate load
//
// Cross-process times use process.hrtime (CLOCK_MONOTONIC, shared by all processes of a host).

import { randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, rmSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { Bus } from "../../src/bus/index.js";
import { isCfnError } from "../../src/errors.js";
import { BUSY_PROCESS_NODE_FLAGS } from "../../src/runtime-flags.js";
import { fsThroughputFloor, fsWakeupFloor } from "../fs-anchor.js";
import {
  atLeast,
  atMost,
  exactly,
  type Figure,
  forkWorker,
  type SuiteResult,
  serveWorker,
  stats,
} from "../lib.js";

const SELF = fileURLToPath(import.meta.url);
const WORKER_FLAG = "--bus-bench-worker";
const PAYLOAD_1KIB = "x".repeat(1024);

type WorkerRequest =
  | { kind: "receive"; root: string; agent: string; expected: number; max: number; inboxDepthMax: number }
  | { kind: "send"; root: string; to: string; count: number; inboxDepthMax: number }
  | { kind: "batch"; root: string; batches: number; batchSize: number }
  | { kind: "latency-receive"; root: string; agent: string; samples: number }
  | {
      kind: "latency-send";
      root: string;
      to: string;
      samples: number;
      gapMs: number;
      warmup: number;
      idleMs: number;
    }
  | { kind: "burst"; root: string; to: string; count: number; inboxDepthMax: number }
  | { kind: "soak-receive"; root: string; agent: string; seconds: number; sampleMs: number }
  | { kind: "soak-send"; root: string; to: string; seconds: number; ratePerSecond: number };

const nowNs = () => process.hrtime.bigint();

function openBus(root: string, inboxDepthMax = 1000): Bus {
  return new Bus({
    config: { root, name: "bench", inboxDepthMax, batchMessagesMax: Math.min(1000, inboxDepthMax) },
  });
}

// ---- worker side --------------------------------------------------------------------------------

async function worker(request: WorkerRequest): Promise<unknown> {
  switch (request.kind) {
    case "receive": {
      const bus = openBus(request.root, request.inboxDepthMax);
      const mailbox = bus.openMailbox(request.agent);
      process.send?.({ ready: true });
      let received = 0;
      let firstNs = 0n;
      const cpuStart = process.cpuUsage();
      while (received < request.expected) {
        const deliveries = await mailbox.receive({ timeoutMs: 30_000, max: request.max });
        if (deliveries.length === 0) break;
        if (firstNs === 0n) firstNs = nowNs();
        received += deliveries.length;
        mailbox.ack(deliveries);
      }
      const doneNs = nowNs();
      const cpu = process.cpuUsage(cpuStart);
      mailbox.close();
      return { received, firstNs: String(firstNs), doneNs: String(doneNs), cpuUs: cpu.user + cpu.system };
    }
    case "send": {
      const bus = openBus(request.root, request.inboxDepthMax);
      let refused = 0;
      const cpuStart = process.cpuUsage();
      const startNs = nowNs();
      for (let sent = 0; sent < request.count; ) {
        try {
          bus.sendSync("sender", request.to, { type: "bench", payload: PAYLOAD_1KIB });
          sent++;
        } catch (error) {
          if (!isCfnError(error, "CFN_ERR_INBOX_FULL")) throw error;
          refused++;
          await new Promise((resolve) => setImmediate(resolve));
        }
      }
      const doneNs = nowNs();
      const cpu = process.cpuUsage(cpuStart);
      return { startNs: String(startNs), doneNs: String(doneNs), refused, cpuUs: cpu.user + cpu.system };
    }
    case "batch": {
      const bus = openBus(request.root, 100_000);
      const messages = Array.from({ length: request.batchSize }, (_, n) => ({
        type: "bench",
        payload: { n, data: PAYLOAD_1KIB },
      }));
      const agents = Array.from({ length: 8 }, (_, n) => `batch-${n}`);
      for (const agent of agents) bus.sendSync("warm", agent, { type: "warm" });
      const micros: number[] = [];
      for (let index = 0; index < request.batches; index++) {
        const agent = agents[index % agents.length];
        const start = nowNs();
        bus.sendBatchSync("sender", agent, messages);
        micros.push(Number(nowNs() - start) / 1000);
        if (index % agents.length === agents.length - 1) {
          // Empty the inboxes between rounds (untimed) so depth stays bounded.
          for (const name of agents) {
            const inbox = `${bus.dir}/${bus.layout.agent(name).shard}/${name}/inbox`;
            for (const file of readdirSync(inbox)) rmSync(`${inbox}/${file}`);
          }
        }
      }
      return { micros };
    }
    case "latency-receive": {
      const bus = openBus(request.root);
      const mailbox = bus.openMailbox(request.agent);
      process.send?.({ ready: true });
      const micros: number[] = [];
      while (micros.length < request.samples) {
        const deliveries = await mailbox.receive({ timeoutMs: 30_000, max: 1 });
        const wokeNs = nowNs();
        if (deliveries.length === 0) break;
        if (deliveries[0].message.type === "warm") {
          // the warm-up phase (see latencyRun): same path, not sampled
          mailbox.ack(deliveries);
          continue;
        }
        const sentNs = BigInt((deliveries[0].message.payload as { ns: string }).ns);
        micros.push(Number(wokeNs - sentNs) / 1000);
        mailbox.ack(deliveries);
      }
      mailbox.close();
      return { micros };
    }
    case "latency-send": {
      const bus = openBus(request.root);
      // Warm-up: the same send → wake-up → receive → ack path run `warmup` times, so that both
      // processes measure optimised code (as a long-running agent does), then an idle pause so the
      // samples start from a quiet inbox. A full inbox (the receiver lagging) just waits.
      for (let index = 0; index < request.warmup; ) {
        try {
          bus.sendSync("sender", request.to, { type: "warm", payload: { ns: String(nowNs()) } });
          index++;
          if (index % 64 === 0) await new Promise((resolve) => setImmediate(resolve));
        } catch (error) {
          if (!isCfnError(error, "CFN_ERR_INBOX_FULL")) throw error;
          await new Promise((resolve) => setTimeout(resolve, 1));
        }
      }
      if (request.warmup > 0) await new Promise((resolve) => setTimeout(resolve, request.idleMs));
      for (let index = 0; index < request.samples; index++) {
        await new Promise((resolve) => setTimeout(resolve, request.gapMs));
        bus.sendSync("sender", request.to, { type: "ping", payload: { ns: String(nowNs()) } });
      }
      return {};
    }
    case "burst": {
      const bus = openBus(request.root, request.inboxDepthMax);
      const accepted: string[] = [];
      let refused = 0;
      let otherErrors = 0;
      for (let index = 0; index < request.count; index++) {
        try {
          accepted.push(bus.sendSync("sender", request.to, { type: "burst", payload: { index } }).ids[0]);
        } catch (error) {
          if (isCfnError(error, "CFN_ERR_INBOX_FULL")) refused++;
          else otherErrors++;
        }
      }
      const overflows = await bus.metrics.value("cfn_bus_inbox_overflows_total");
      return { accepted, refused, otherErrors, overflows };
    }
    case "soak-receive": {
      const bus = openBus(request.root, 100_000);
      const mailbox = bus.openMailbox(request.agent);
      process.send?.({ ready: true });
      const gc = (globalThis as { gc?: () => void }).gc;
      const samples: { t: number; rss: number; retained: number }[] = [];
      const endMs = Date.now() + request.seconds * 1000;
      let nextSampleMs = Date.now() + request.sampleMs;
      let received = 0;
      while (Date.now() < endMs) {
        const deliveries = await mailbox.receive({ timeoutMs: 50, max: 64 });
        received += deliveries.length;
        if (deliveries.length > 0) mailbox.ack(deliveries);
        if (Date.now() >= nextSampleMs) {
          nextSampleMs += request.sampleMs;
          gc?.();
          const usage = process.memoryUsage();
          samples.push({ t: Date.now(), rss: usage.rss, retained: usage.heapUsed + usage.external });
        }
      }
      mailbox.close();
      return { samples, received, gc: gc !== undefined };
    }
    case "soak-send": {
      const bus = openBus(request.root, 100_000);
      const endMs = Date.now() + request.seconds * 1000;
      const perTick = Math.max(1, Math.round(request.ratePerSecond / 100));
      let sent = 0;
      while (Date.now() < endMs) {
        for (let index = 0; index < perTick; index++) {
          try {
            bus.sendSync("sender", request.to, { type: "soak", payload: PAYLOAD_1KIB });
            sent++;
          } catch (error) {
            if (!isCfnError(error, "CFN_ERR_INBOX_FULL")) throw error;
          }
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      return { sent };
    }
  }
}

if (process.argv.includes(WORKER_FLAG)) serveWorker(worker);

// ---- parent side --------------------------------------------------------------------------------

/**
 * Workers of the throughput runs stand for busy cfn processes and run with their Node flags
 * (src/runtime-flags.ts); `defaultHeap` runs one with V8's defaults instead: the context figure
 * beside throughput, and the light-load wake-up runs, whose receiver stands for an agent (agent
 * runners keep V8's default heap; a fresh 16 MiB young generation would also add a first-touch page
 * fault to most messages of a one-second run).
 */
const start = (request: WorkerRequest, execArgv: string[] = [], defaultHeap = false) =>
  // biome-ignore lint/suspicious/noExplicitAny: each worker kind answers with its own shape
  forkWorker<any>(SELF, WORKER_FLAG, request, [...(defaultHeap ? [] : BUSY_PROCESS_NODE_FLAGS), ...execArgv]);

function freshRoot(): string {
  const root = `/dev/shm/cfn-bench-${process.pid}-${randomBytes(3).toString("hex")}`;
  mkdirSync(root, { recursive: true });
  return root;
}

function option(args: string[], name: string, fallback: number): number {
  const index = args.indexOf(name);
  if (index < 0) return fallback;
  const value = Number(args[index + 1]);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} needs a positive number`);
  return value;
}

const median = (values: number[]) => stats(values).p50;

interface ThroughputRun {
  rate: number;
  senderCpuUsPerMessage: number;
  receiverCpuUsPerMessage: number;
}

async function throughputRun(messages: number, defaultHeap = false): Promise<ThroughputRun> {
  const root = freshRoot();
  try {
    const receiver = start(
      { kind: "receive", root, agent: "receiver", expected: messages, max: 256, inboxDepthMax: 100_000 },
      [],
      defaultHeap,
    );
    await receiver.ready;
    const sender = start(
      { kind: "send", root, to: "receiver", count: messages, inboxDepthMax: 100_000 },
      [],
      defaultHeap,
    );
    const [sent, received] = await Promise.all([sender.result, receiver.result]);
    if (received.received !== messages)
      throw new Error(`throughput run received ${received.received} of ${messages}`);
    const seconds = Number(BigInt(received.doneNs) - BigInt(sent.startNs)) / 1e9;
    return {
      rate: messages / seconds,
      senderCpuUsPerMessage: sent.cpuUs / messages,
      receiverCpuUsPerMessage: received.cpuUs / messages,
    };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

async function batchRun(): Promise<number[]> {
  const root = freshRoot();
  try {
    const result = await start({ kind: "batch", root, batches: 400, batchSize: 100 }).result;
    return (result.micros as number[]).slice(40); // the first rounds warm the JIT
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

/** Messages of the warm-up phase of a wake-up latency run, and the idle pause after it. */
const LATENCY_WARMUP_MESSAGES = 10_000;
const LATENCY_WARMUP_IDLE_MS = 500;

async function latencyRun(samples: number, warmup: number): Promise<number[]> {
  const root = freshRoot();
  try {
    const receiver = start({ kind: "latency-receive", root, agent: "receiver", samples }, [], true);
    await receiver.ready;
    const sender = start(
      {
        kind: "latency-send",
        root,
        to: "receiver",
        samples,
        gapMs: 2,
        warmup,
        idleMs: LATENCY_WARMUP_IDLE_MS,
      },
      [],
      true,
    );
    const [result] = await Promise.all([receiver.result, sender.result]);
    return (result.micros as number[]).slice(20);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

async function burstRun(): Promise<{
  accepted: number;
  refused: number;
  lost: number;
  duplicated: number;
  overflows: number;
}> {
  const root = freshRoot();
  try {
    const burst = await start({ kind: "burst", root, to: "receiver", count: 2000, inboxDepthMax: 1000 })
      .result;
    // Read back everything that was queued and compare with what the sender was told.
    const bus = openBus(root, 1000);
    const mailbox = bus.openMailbox("receiver", { watch: false, heartbeat: false });
    const seen = new Map<string, number>();
    for (;;) {
      const deliveries = mailbox.receiveNow(256);
      if (deliveries.length === 0) break;
      for (const delivery of deliveries)
        seen.set(delivery.message.id, (seen.get(delivery.message.id) ?? 0) + 1);
      mailbox.ack(deliveries);
    }
    mailbox.close();
    const accepted = burst.accepted as string[];
    const lost = accepted.filter((id) => !seen.has(id)).length;
    let duplicated = 0;
    for (const times of seen.values()) if (times > 1) duplicated += times - 1;
    const unexpected = [...seen.keys()].filter((id) => !accepted.includes(id)).length;
    return {
      accepted: accepted.length,
      refused: burst.refused,
      lost: lost + unexpected,
      duplicated,
      overflows: burst.overflows,
    };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

interface SoakResult {
  retainedDriftPercent: number;
  rssDriftPercent: number;
  samples: number;
  received: number;
  retainedStartMiB: number;
  retainedEndMiB: number;
  rssStartMiB: number;
  rssEndMiB: number;
  gc: boolean;
}

async function soakRun(seconds: number): Promise<SoakResult> {
  const root = freshRoot();
  try {
    const sampleMs = Math.max(500, Math.round((seconds * 1000) / 60));
    const receiver = start({ kind: "soak-receive", root, agent: "receiver", seconds, sampleMs }, [
      "--expose-gc",
    ]);
    await receiver.ready;
    const sender = start({ kind: "soak-send", root, to: "receiver", seconds, ratePerSecond: 5000 });
    const [result] = await Promise.all([receiver.result, sender.result]);
    const samples = result.samples as { rss: number; retained: number }[];
    // Skip the first 20 % (JIT, pools, histogram buckets filling), then compare the first and
    // last fifths of the rest.
    const steady = samples.slice(Math.floor(samples.length * 0.2));
    const fifth = Math.max(1, Math.floor(steady.length / 5));
    const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
    const drift = (key: "rss" | "retained") => {
      const first = mean(steady.slice(0, fifth).map((s) => s[key]));
      const last = mean(steady.slice(-fifth).map((s) => s[key]));
      return { first, last, percent: (Math.abs(last - first) / first) * 100 };
    };
    const retained = drift("retained");
    const rss = drift("rss");
    return {
      retainedDriftPercent: retained.percent,
      rssDriftPercent: rss.percent,
      samples: samples.length,
      received: result.received,
      retainedStartMiB: retained.first / 2 ** 20,
      retainedEndMiB: retained.last / 2 ** 20,
      rssStartMiB: rss.first / 2 ** 20,
      rssEndMiB: rss.last / 2 ** 20,
      gc: result.gc,
    };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

export async function run(args: string[]): Promise<SuiteResult> {
  const runs = option(args, "--runs", 5);
  const messages = option(args, "--messages", 50_000);
  const soakSeconds = option(args, "--soak-seconds", 60);
  // `--only throughput,latency` runs a subset (while tuning); the summary then lists only those.
  const onlyIndex = args.indexOf("--only");
  const only = onlyIndex < 0 ? undefined : new Set(args[onlyIndex + 1]?.split(","));
  const wanted = (part: string) => only === undefined || only.has(part);
  const loadAtStart = loadavg().map((value) => Math.round(value * 100) / 100);
  const figures: Figure[] = [];
  if (wanted("throughput")) await throughputFigures(runs, messages, figures);
  if (wanted("batch")) await batchFigures(runs, figures);
  if (wanted("latency")) await latencyFigures(runs, figures);
  if (wanted("burst")) await burstFigures(runs, figures);
  if (wanted("soak")) await soakFigures(soakSeconds, figures);

  return {
    suite: "bus",
    figures,
    context: {
      cpus: cpus().length,
      loadAverageAtStart: loadAtStart,
      loadAverageAtEnd: loadavg().map((value) => Math.round(value * 100) / 100),
      cpuModel: cpus()[0]?.model,
      node: process.version,
      root: "/dev/shm",
      note: "throughput runs use inboxDepthMax 100000 so the sender is not throttled; p99 of throughput is the 1st percentile (slowest) run",
    },
  };
}

const log = (line: string) => process.stderr.write(`bus: ${line}\n`);

async function throughputFigures(runs: number, messages: number, figures: Figure[]): Promise<void> {
  const rates: number[] = [];
  const senderCpu: number[] = [];
  const receiverCpu: number[] = [];
  const floorRates: number[] = [];
  const floorReceiverCpu: number[] = [];
  const defaultHeapRates: number[] = [];
  for (let index = 0; index < runs; index++) {
    const result = await throughputRun(messages);
    rates.push(result.rate);
    senderCpu.push(result.senderCpuUsPerMessage);
    receiverCpu.push(result.receiverCpuUsPerMessage);
    log(
      `throughput run ${index + 1}: ${Math.round(result.rate)} msg/s; CPU per message: sender ${result.senderCpuUsPerMessage.toFixed(1)} µs, receiver ${result.receiverCpuUsPerMessage.toFixed(1)} µs`,
    );
    // The machine's floor in the same conditions, interleaved with the bus's runs.
    const floor = await fsThroughputFloor("/dev/shm", messages);
    floorRates.push(floor.rate);
    floorReceiverCpu.push(floor.receiverCpuUsPerMessage);
    log(
      `  bare file pipeline (anchor): ${Math.round(floor.rate)} msg/s, receiver CPU ${floor.receiverCpuUsPerMessage.toFixed(1)} µs per message`,
    );
    // The same bus in processes started without cfn's heap flag (an embedding application).
    const plain = await throughputRun(messages, true);
    defaultHeapRates.push(plain.rate);
    log(
      `  same bus, V8's default heap: ${Math.round(plain.rate)} msg/s; receiver CPU ${plain.receiverCpuUsPerMessage.toFixed(1)} µs per message`,
    );
  }
  const rateStats = stats(rates);
  // What the pipeline would do with a core each: the slower side's CPU cost per message. A
  // context figure for a shared machine, not the target figure (which is wall clock).
  const cpuBoundRate = 1e6 / Math.max(median(senderCpu), median(receiverCpu));
  figures.push(
    atLeast(
      "throughput, 1 sender → 1 receiver process, 1 KiB, one file per message",
      rateStats.p50,
      "msg/s",
      25_000,
      {
        runs,
        messagesPerRun: messages,
        min: Math.round(rateStats.min),
        max: Math.round(rateStats.max),
        p99: Math.round(percentileLow(rates)),
        senderCpuUsPerMessage: median(senderCpu),
        receiverCpuUsPerMessage: median(receiverCpu),
        cpuBoundRateOneCoreEach: Math.round(cpuBoundRate),
        nodeFlags: BUSY_PROCESS_NODE_FLAGS.join(" "),
        withDefaultHeap: {
          what: "the same runs in processes without cfn's Node flags (src/runtime-flags.ts)",
          rateMedian: Math.round(median(defaultHeapRates)),
          rateMin: Math.round(Math.min(...defaultHeapRates)),
        },
        anchor: {
          what: "bare Node file pipeline, same sizes, no bus (bench/fs-anchor.ts)",
          rateMedian: Math.round(median(floorRates)),
          rateMin: Math.round(Math.min(...floorRates)),
          receiverCpuUsPerMessage: median(floorReceiverCpu),
        },
      },
    ),
  );
}

async function batchFigures(runs: number, figures: Figure[]): Promise<void> {
  const batchP50: number[] = [];
  const batchP99: number[] = [];
  for (let index = 0; index < runs; index++) {
    const micros = await batchRun();
    const s = stats(micros);
    batchP50.push(s.p50);
    batchP99.push(s.p99);
    log(`batch run ${index + 1}: p50 ${s.p50.toFixed(1)} µs, p99 ${s.p99.toFixed(1)} µs`);
  }
  figures.push(
    atMost("batch of 100 messages (1 KiB) into one inbox", median(batchP50) / 1000, "ms", 1, {
      runs,
      p50Ms: median(batchP50) / 1000,
      p99Ms: median(batchP99) / 1000,
      p99WorstRunMs: Math.max(...batchP99) / 1000,
    }),
  );
}

async function latencyFigures(runs: number, figures: Figure[]): Promise<void> {
  const latencyP50: number[] = [];
  const latencyP99: number[] = [];
  const coldP50: number[] = [];
  const coldP99: number[] = [];
  const floorP50: number[] = [];
  const floorP99: number[] = [];
  for (let index = 0; index < runs; index++) {
    const micros = await latencyRun(520, LATENCY_WARMUP_MESSAGES);
    const s = stats(micros);
    latencyP50.push(s.p50);
    latencyP99.push(s.p99);
    log(`wake-up run ${index + 1}: p50 ${s.p50.toFixed(1)} µs, p99 ${s.p99.toFixed(1)} µs`);
    const cold = stats(await latencyRun(520, 0));
    coldP50.push(cold.p50);
    coldP99.push(cold.p99);
    log(`  without warm-up (fresh processes): p50 ${cold.p50.toFixed(1)} µs, p99 ${cold.p99.toFixed(1)} µs`);
    const floor = stats(await fsWakeupFloor("/dev/shm", 520, 2));
    floorP50.push(floor.p50);
    floorP99.push(floor.p99);
    log(`  bare fs.watch wake-up (anchor): p50 ${floor.p50.toFixed(1)} µs, p99 ${floor.p99.toFixed(1)} µs`);
  }
  const anchor = {
    what: "bare fs.watch receiver and write+rename sender, no bus (bench/fs-anchor.ts)",
    p50Us: median(floorP50),
    p99Us: median(floorP99),
  };
  const warmup = {
    messages: LATENCY_WARMUP_MESSAGES,
    idleMsAfter: LATENCY_WARMUP_IDLE_MS,
    withoutWarmup: { p50Us: median(coldP50), p99Us: median(coldP99) },
  };
  figures.push(
    atMost(
      "send → receiver wake-up latency p50 (across processes, light load)",
      median(latencyP50),
      "µs",
      100,
      {
        runs,
        samplesPerRun: 500,
        worstRun: Math.max(...latencyP50),
        warmup,
        anchor,
      },
    ),
  );
  figures.push(
    atMost(
      "send → receiver wake-up latency p99 (across processes, light load)",
      median(latencyP99),
      "µs",
      1000,
      {
        runs,
        samplesPerRun: 500,
        worstRun: Math.max(...latencyP99),
        warmup,
        anchor,
      },
    ),
  );
}

async function burstFigures(runs: number, figures: Figure[]): Promise<void> {
  const bursts = [];
  for (let index = 0; index < runs; index++) {
    bursts.push(await burstRun());
    log(`burst run ${index + 1}: ${JSON.stringify(bursts[index])}`);
  }
  const allExact = bursts.every(
    (b) => b.accepted === 1000 && b.refused === 1000 && b.lost === 0 && b.duplicated === 0,
  );
  figures.push(
    exactly(
      "burst of 2,000 into inboxDepthMax 1000: accepted",
      Math.max(...bursts.map((b) => b.accepted)),
      "messages",
      1000,
      {
        runs,
        acceptedPerRun: bursts.map((b) => b.accepted),
        refusedPerRun: bursts.map((b) => b.refused),
        lostPerRun: bursts.map((b) => b.lost),
        duplicatedPerRun: bursts.map((b) => b.duplicated),
        overflowsCountedPerRun: bursts.map((b) => b.overflows),
        met: allExact,
      },
    ),
  );
  figures.push(
    exactly(
      "burst of 2,000: refused with INBOX_FULL",
      Math.min(...bursts.map((b) => b.refused)),
      "messages",
      1000,
      { met: allExact },
    ),
  );
  figures.push(
    exactly(
      "burst of 2,000: lost or duplicated",
      Math.max(...bursts.map((b) => b.lost + b.duplicated)),
      "messages",
      0,
    ),
  );
}

async function soakFigures(soakSeconds: number, figures: Figure[]): Promise<void> {
  const soak = await soakRun(soakSeconds);
  log(`soak ${soakSeconds} s: ${JSON.stringify(soak)}`);
  // Retained memory (JS heap + external buffers after a full GC) is what a leak grows; RSS also
  // moves with the allocator's arenas, so both are reported and both are held to ±5 %.
  figures.push(
    atMost(
      `receiver retained memory drift over a ${soakSeconds} s run (heap + external after GC, 5,000 msg/s offered)`,
      soak.retainedDriftPercent,
      "%",
      5,
      {
        soakSeconds,
        ...soak,
      },
    ),
  );
  figures.push(
    atMost(`receiver RSS drift over the same ${soakSeconds} s run (after GC)`, soak.rssDriftPercent, "%", 5, {
      soakSeconds,
    }),
  );
}

/** For throughput the tail that matters is the slow end: the 1st percentile. */
function percentileLow(values: number[]): number {
  return [...values].sort((a, b) => a - b)[Math.floor(values.length * 0.01)];
}
