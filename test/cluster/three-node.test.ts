// Test 4 of GitHub issue 3: a real 3-process cluster on loopback (WebSocket transport, LevelDB
// with fsync, compiled kv-node from dist/). kill -9 the leader during client writes: a new
// leader takes over and writes go on; the old leader restarts from its data dir and catches up
// to the same state; no acknowledged write is lost and the history of the shared keys is
// linearizable. Then a whole-cluster kill -9 and restart: every acknowledged write survives.

import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  checkLinearizable,
  formatCheckResult,
  type KvOperation,
  kvModel,
} from "../../chaos/linearizability/index.js";
import { type KvClusterClient, KvUnknownOutcomeError } from "../../cluster/kv-client.js";
import { LocalCluster } from "../../cluster/local.js";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const SHARED_KEYS = ["x", "y", "z"];

function newestMtime(dir: string): number {
  let newest = 0;
  for (const name of readdirSync(dir, { recursive: true }) as string[]) {
    if (name.endsWith(".ts")) newest = Math.max(newest, statSync(join(dir, name)).mtimeMs);
  }
  return newest;
}

/** Builds dist/ when the node entry is missing or older than its sources (others' type errors
 *  do not stop tsc from emitting). */
function ensureBuilt(): void {
  const entry = join(repo, "dist/cluster/kv-node.js");
  const sources = ["cluster", "src/node", "src/raft", "src/storage", "src/transport", "src/statemachine"].map(
    (d) => join(repo, d),
  );
  if (existsSync(entry) && Math.max(...sources.map(newestMtime)) <= statSync(entry).mtimeMs) return;
  try {
    execFileSync("npx", ["tsc", "-p", "."], { cwd: repo, stdio: "ignore" });
  } catch {
    // type errors elsewhere in the repo; the emit still happened
  }
  if (!existsSync(entry)) throw new Error("dist/cluster/kv-node.js was not built");
}

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

/** Unique-key writers (acked set) and shared-key clients (linearizability history). */
class Workload {
  readonly acked = new Map<string, string>();
  readonly history: KvOperation[] = [];
  ackedAfter = 0;
  unknown = 0;
  private stopped = false;
  private running: Promise<void>[] = [];
  private countFrom = Number.POSITIVE_INFINITY;

  constructor(private readonly client: KvClusterClient) {}

  start(writers: number, sharedClients: number): void {
    for (let w = 0; w < writers; w++) this.running.push(this.writer(`w${w}`));
    for (let c = 0; c < sharedClients; c++) this.running.push(this.shared(`s${c}`, c));
  }

  /** From now on count acknowledged writes in `ackedAfter`. */
  markNow(): void {
    this.countFrom = performance.now();
    this.ackedAfter = 0;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.running);
  }

  private async writer(clientId: string): Promise<void> {
    const session = this.client.session(clientId);
    for (let i = 0; !this.stopped; i++) {
      const key = `${clientId}-${i}`;
      const value = `v${i}`;
      const call = performance.now();
      try {
        await session.put(key, value);
        this.acked.set(key, value);
        if (call >= this.countFrom) this.ackedAfter++;
      } catch (error) {
        if (!(error instanceof KvUnknownOutcomeError)) throw error;
        this.unknown++;
      }
    }
  }

  private async shared(clientId: string, seed: number): Promise<void> {
    const session = this.client.session(clientId);
    for (let i = 0; !this.stopped; i++) {
      const key = SHARED_KEYS[(seed + i) % SHARED_KEYS.length];
      const kind = (seed * 7 + i) % 3;
      const value = `${clientId}.${i}`;
      const call = performance.now();
      const op: KvOperation =
        kind === 0
          ? {
              clientId,
              input: { op: "put", key, value },
              output: undefined,
              call,
              return: Number.POSITIVE_INFINITY,
            }
          : kind === 1
            ? {
                clientId,
                input: { op: "get", key },
                output: undefined,
                call,
                return: Number.POSITIVE_INFINITY,
              }
            : {
                clientId,
                input: { op: "cas", key, expected: null, value },
                output: undefined,
                call,
                return: Number.POSITIVE_INFINITY,
              };
      this.history.push(op);
      try {
        if (op.input.op === "put") op.output = { ok: true, value: await session.put(key, value) };
        else if (op.input.op === "get") op.output = { ok: true, value: await session.get(key) };
        else {
          // cas from the value this client last saw, so some succeed
          const last =
            [...this.history].reverse().find((h) => h.input.key === key && h.output !== undefined)?.output
              ?.value ?? null;
          op.input = { op: "cas", key, expected: last, value };
          op.output = await session.cas(key, last, value);
        }
        op.return = performance.now();
      } catch (error) {
        if (!(error instanceof KvUnknownOutcomeError)) throw error;
        this.unknown++;
      }
    }
  }
}

async function readAll(client: KvClusterClient, keys: Map<string, string>): Promise<string[]> {
  const reader = client.session("verifier");
  const missing: string[] = [];
  const entries = [...keys];
  for (let i = 0; i < entries.length; i += 200) {
    const chunk = entries.slice(i, i + 200);
    const values = await Promise.all(chunk.map(([key]) => reader.get(key)));
    chunk.forEach(([key, expected], j) => {
      if (values[j] !== expected) missing.push(`${key}: expected ${expected}, read ${String(values[j])}`);
    });
  }
  return missing;
}

async function waitConverged(
  cluster: LocalCluster,
  timeoutMs: number,
): Promise<{ applied: number; digest: string }> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    const statuses = await Promise.all(cluster.nodes.map((node) => cluster.status(node.id, true)));
    if (statuses.every((s) => s !== undefined)) {
      const applied = new Set(statuses.map((s) => s!.applied));
      const digests = new Set(statuses.map((s) => s!.stateDigest));
      last = JSON.stringify(statuses.map((s) => [s!.id, s!.applied, s!.stateDigest?.slice(0, 8)]));
      if (applied.size === 1 && digests.size === 1 && !digests.has(undefined))
        return { applied: statuses[0]!.applied, digest: statuses[0]!.stateDigest ?? "" };
    }
    await sleep(50);
  }
  throw new Error(`replicas did not converge within ${timeoutMs} ms: ${last}`);
}

let cluster: LocalCluster | undefined;
let client: KvClusterClient | undefined;

afterEach(async () => {
  client?.close();
  client = undefined;
  await cluster?.stop();
  cluster = undefined;
});

describe("a 3-process cluster on loopback (ws + LevelDB)", () => {
  beforeAll(() => ensureBuilt(), 120_000);

  it("survives kill -9 of the leader during writes: new leader, catch-up, no acked write lost, linearizable", async () => {
    cluster = await LocalCluster.start({ size: 3, logLevel: "warn" });
    client = cluster.client({ requestTimeoutMs: 8_000 });
    const oldLeader = await cluster.waitForLeader();
    const workload = new Workload(client);
    workload.start(16, 6);
    await sleep(1_000);
    const ackedBeforeKill = workload.acked.size;
    expect(ackedBeforeKill).toBeGreaterThan(0);

    await cluster.kill(oldLeader);
    workload.markNow();
    const newLeader = await cluster.waitForLeader(10_000, oldLeader);
    expect(newLeader).not.toBe(oldLeader);
    // Writes go on under the new leader.
    const deadline = Date.now() + 10_000;
    while (workload.ackedAfter < 200 && Date.now() < deadline) await sleep(20);
    expect(workload.ackedAfter).toBeGreaterThanOrEqual(200);

    // The old leader restarts from its data dir and catches up while writes continue.
    await cluster.restart(oldLeader);
    await sleep(1_000);
    await workload.stop();
    const converged = await waitConverged(cluster, 15_000);
    expect(converged.applied).toBeGreaterThan(ackedBeforeKill);

    const missing = await readAll(client, workload.acked);
    expect(missing).toEqual([]);
    const completed = workload.history.filter((op) => op.output !== undefined).length;
    expect(completed).toBeGreaterThan(0);
    const check = checkLinearizable(kvModel, workload.history);
    expect(check.verdict, formatCheckResult(kvModel, check)).toBe("ok");
  });

  it("keeps every acknowledged write across a kill -9 and restart of the whole cluster", async () => {
    cluster = await LocalCluster.start({ size: 3, logLevel: "warn" });
    // Short deadline: the writes in flight at the kill end as unknown outcomes, not acked ones.
    client = cluster.client({ requestTimeoutMs: 2_000 });
    await cluster.waitForLeader();
    const workload = new Workload(client);
    workload.start(16, 0);
    await sleep(1_500);
    // Kill all three while writes are in flight: the acknowledged ones must survive.
    await Promise.all(cluster.nodes.map((node) => cluster!.kill(node.id)));
    await workload.stop();
    expect(workload.acked.size).toBeGreaterThan(0);

    await Promise.all(cluster.nodes.map((node) => cluster!.restart(node.id)));
    await cluster.waitForLeader();
    const missing = await readAll(client, workload.acked);
    expect(missing).toEqual([]);
    await waitConverged(cluster, 15_000);
  });
});
