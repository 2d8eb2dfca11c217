// The etcd anchor of the raft benchmark: 3 etcd members (Debian's etcd-server, default
// timeouts) on loopback with their data dirs on the same disk as cfn's, measured in the same
// run. Load goes through etcd's JSON gateway (`POST /v3/kv/put`, HTTP/1.1 keep-alive), spread
// over the three members (followers forward to the leader). Skipped with a reason when `etcd`
// is not installed.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { Agent, request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, LOOPBACK } from "./local.js";

export interface EtcdLoadResult {
  acked: number;
  seconds: number;
  errors: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
}

export interface EtcdAnchorOptions {
  clients: number;
  seconds: number;
  latencySamples: number;
  log: (line: string) => void;
  /** Runs the load from a separate process (the bench's worker). */
  runLoad: (urls: string[], clients: number, seconds: number) => Promise<EtcdLoadResult>;
  runLatency: (urls: string[], samples: number) => Promise<number[]>;
}

function which(command: string): string | undefined {
  try {
    return execFileSync("sh", ["-c", `command -v ${command}`], { encoding: "utf8" }).trim() || undefined;
  } catch {
    return undefined;
  }
}

function etcdVersion(binary: string): string {
  try {
    return execFileSync(binary, ["--version"], { encoding: "utf8" }).split("\n")[0] ?? "?";
  } catch {
    return "?";
  }
}

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

function percentile(samples: number[], fraction: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(fraction * sorted.length) - 1))];
}

/** One put through the JSON gateway; resolves true on HTTP 200. */
function put(agent: Agent, url: string, key: string, value: string): Promise<boolean> {
  const body = JSON.stringify({
    key: Buffer.from(key).toString("base64"),
    value: Buffer.from(value).toString("base64"),
  });
  const target = new URL("/v3/kv/put", url);
  return new Promise((resolve) => {
    const req = request(
      {
        agent,
        host: target.hostname,
        port: target.port,
        path: target.pathname,
        method: "POST",
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode === 200));
        res.on("error", () => resolve(false));
      },
    );
    req.on("error", () => resolve(false));
    req.setTimeout(10_000, () => req.destroy());
    req.end(body);
  });
}

/** Closed-loop put load: `clients` concurrent clients for `seconds` (after 1 s of warm-up). */
export async function etcdLoad(
  urls: string[],
  clients: number,
  seconds: number,
  payloadBytes: number,
): Promise<EtcdLoadResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: clients });
  const value = "v".repeat(payloadBytes);
  const warmupEnd = performance.now() + 1000;
  const end = warmupEnd + seconds * 1000;
  let acked = 0;
  let errors = 0;
  const latencies: number[] = [];
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      const url = urls[c % urls.length];
      for (let i = 0; performance.now() < end; i++) {
        const start = performance.now();
        const ok = await put(agent, url, `k-${c}-${i % 64}`, value);
        const done = performance.now();
        if (!ok) {
          errors++;
          continue;
        }
        if (start >= warmupEnd && done <= end) {
          acked++;
          if (latencies.length < 200_000) latencies.push(done - start);
        }
      }
    }),
  );
  agent.destroy();
  return {
    acked,
    seconds,
    errors,
    latencyP50Ms: percentile(latencies, 0.5),
    latencyP99Ms: percentile(latencies, 0.99),
  };
}

/** Sequential puts to one member with a 1 ms gap (light load), latency per put in ms. */
export async function etcdLatency(urls: string[], samples: number, payloadBytes: number): Promise<number[]> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const value = "v".repeat(payloadBytes);
  const out: number[] = [];
  for (let i = 0; i < 20; i++) await put(agent, urls[0], `lat-${i % 16}`, value);
  for (let i = 0; i < samples; i++) {
    const start = performance.now();
    if (await put(agent, urls[0], `lat-${i % 16}`, value)) out.push(performance.now() - start);
    await sleep(1);
  }
  agent.destroy();
  return out;
}

async function healthy(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(new URL("/health", url), (res) => {
      let text = "";
      res.on("data", (chunk) => {
        text += chunk;
      });
      res.on("end", () => resolve(res.statusCode === 200 && text.includes("true")));
    });
    req.on("error", () => resolve(false));
    req.setTimeout(1000, () => req.destroy());
    req.end();
  });
}

/** Starts 3 members, measures throughput and light-load latency, stops them. */
export async function measureEtcdAnchor(options: EtcdAnchorOptions): Promise<Record<string, unknown>> {
  const etcd = which("etcd");
  if (!etcd) {
    const skipped = "etcd is not installed (apt-get install etcd-server etcd-client)";
    options.log(`etcd anchor skipped: ${skipped}`);
    return { skipped };
  }
  const baseDir = mkdtempSync(join(tmpdir(), "cfn-etcd-"));
  const members: { name: string; clientPort: number; peerPort: number; process?: ChildProcess }[] = [];
  for (let i = 1; i <= 3; i++)
    members.push({ name: `e${i}`, clientPort: await freePort(), peerPort: await freePort() });
  const initialCluster = members.map((m) => `${m.name}=http://${LOOPBACK}:${m.peerPort}`).join(",");
  const urls = members.map((m) => `http://${LOOPBACK}:${m.clientPort}`);
  try {
    for (const member of members) {
      member.process = spawn(
        etcd,
        [
          "--name",
          member.name,
          "--data-dir",
          join(baseDir, member.name),
          "--listen-client-urls",
          `http://${LOOPBACK}:${member.clientPort}`,
          "--advertise-client-urls",
          `http://${LOOPBACK}:${member.clientPort}`,
          "--listen-peer-urls",
          `http://${LOOPBACK}:${member.peerPort}`,
          "--initial-advertise-peer-urls",
          `http://${LOOPBACK}:${member.peerPort}`,
          "--initial-cluster",
          initialCluster,
          "--initial-cluster-state",
          "new",
          "--initial-cluster-token",
          "cfn-bench",
          "--logger",
          "zap",
          "--log-level",
          "error",
        ],
        { stdio: "ignore" },
      );
    }
    const deadline = Date.now() + 20_000;
    while (!(await Promise.all(urls.map(healthy))).every(Boolean)) {
      if (Date.now() > deadline) throw new Error("etcd members did not become healthy within 20 s");
      await sleep(100);
    }
    const load = await options.runLoad(urls, options.clients, options.seconds);
    const perSecond = load.acked / load.seconds;
    options.log(
      `etcd anchor: ${Math.round(perSecond)} puts/s (${options.clients} clients, p50 ${load.latencyP50Ms.toFixed(2)} ms, errors ${load.errors})`,
    );
    const latency = await options.runLatency(urls, options.latencySamples);
    options.log(`etcd anchor: light-load put latency p50 ${percentile(latency, 0.5).toFixed(2)} ms`);
    return {
      version: etcdVersion(etcd),
      setup:
        "3 members on 127.0.0.1, default heartbeat 100 ms / election 1000 ms, JSON gateway /v3/kv/put, HTTP/1.1 keep-alive",
      putsPerSecond: Math.round(perSecond),
      clients: options.clients,
      latencyUnderLoadMs: { p50: load.latencyP50Ms, p99: load.latencyP99Ms },
      lightLoadLatencyMs: {
        p50: percentile(latency, 0.5),
        p99: percentile(latency, 0.99),
        samples: latency.length,
      },
      errors: load.errors,
    };
  } catch (error) {
    options.log(`etcd anchor failed: ${String(error)}`);
    return { failed: String(error) };
  } finally {
    for (const member of members) member.process?.kill("SIGKILL");
    await sleep(200);
    rmSync(baseDir, { recursive: true, force: true });
  }
}
