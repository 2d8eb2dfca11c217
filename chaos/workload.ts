// The chaos workload: clients that keep writing and reading through the cluster while faults are
// injected, and record what they saw.
//   - writers put unique keys (w3-17 = v17): every acknowledged one must be readable after the
//     run (no acknowledged write lost);
//   - shared clients put, get and compare-and-set a few shared keys and record each operation
//     with its call and return times: that history must be linearizable (chaos/linearizability).
// An operation whose outcome the client never learned (its deadline passed during a fault) is
// kept with an unknown output, as the checker expects. Times are performance.now() milliseconds.

import { type KvClusterClient, KvUnknownOutcomeError } from "../cluster/kv-client.js";
import type { KvOperation } from "./linearizability/index.js";

export interface WorkloadLimits {
  /** Concurrent unique-key writers. */
  writers: number;
  /** Concurrent clients on the shared keys (their history is checked). */
  sharedClients: number;
  /** Shared keys; fewer keys means more contention per key and a costlier check. */
  sharedKeys: number;
  /** Shared-key operations recorded at most; past it shared clients stop (bounds the check). */
  historyOpsMax: number;
  /** Pause between one client's operations, so that a 2-core machine keeps up. */
  thinkTimeMs: number;
}

export const WORKLOAD_DEFAULTS: WorkloadLimits = {
  writers: 8,
  sharedClients: 4,
  sharedKeys: 3,
  historyOpsMax: 3_000,
  thinkTimeMs: 2,
};

export function validateWorkloadLimits(limits: WorkloadLimits): void {
  for (const [name, value] of Object.entries(limits))
    if (!Number.isInteger(value) || value < 0)
      throw new Error(`workload ${name} must be an integer ≥ 0, got ${value}`);
  if (limits.writers + limits.sharedClients === 0) throw new Error("workload needs at least one client");
  if (limits.sharedClients > 0 && limits.sharedKeys === 0)
    throw new Error("shared clients need sharedKeys ≥ 1");
}

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

export class KvWorkload {
  /** Acknowledged unique-key writes: key → value. */
  readonly acked = new Map<string, string>();
  readonly history: KvOperation[] = [];
  /** Return times of acknowledged writes (for the longest stretch without one). */
  private readonly ackTimes: number[] = [];
  unknownOutcomes = 0;
  private stopped = false;
  private running: Promise<void>[] = [];

  constructor(
    private readonly client: KvClusterClient,
    private readonly limits: WorkloadLimits = WORKLOAD_DEFAULTS,
  ) {
    validateWorkloadLimits(limits);
  }

  start(): void {
    for (let w = 0; w < this.limits.writers; w++) this.running.push(this.writer(`w${w}`));
    for (let c = 0; c < this.limits.sharedClients; c++) this.running.push(this.shared(`s${c}`, c));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.running);
  }

  /** Acknowledged writes since `since` (performance.now() ms). */
  ackedSince(since: number): number {
    let count = 0;
    for (let i = this.ackTimes.length - 1; i >= 0 && this.ackTimes[i] >= since; i--) count++;
    return count;
  }

  /** The longest stretch (ms) between `from` and `to` in which no write was acknowledged. */
  longestStallMs(from: number, to: number): number {
    let previous = from;
    let longest = 0;
    for (const time of [...this.ackTimes].sort((a, b) => a - b)) {
      if (time < from || time > to) continue;
      longest = Math.max(longest, time - previous);
      previous = time;
    }
    return Math.max(longest, to - previous);
  }

  private async writer(clientId: string): Promise<void> {
    const session = this.client.session(clientId);
    for (let i = 0; !this.stopped; i++) {
      const key = `${clientId}-${i}`;
      try {
        await session.put(key, `v${i}`);
        this.acked.set(key, `v${i}`);
        this.ackTimes.push(performance.now());
      } catch (error) {
        if (!(error instanceof KvUnknownOutcomeError)) throw error;
        this.unknownOutcomes++;
      }
      await sleep(this.limits.thinkTimeMs);
    }
  }

  private async shared(clientId: string, seed: number): Promise<void> {
    const session = this.client.session(clientId);
    let lastSeen: string | null = null;
    for (let i = 0; !this.stopped && this.history.length < this.limits.historyOpsMax; i++) {
      const key = `k${(seed + i) % this.limits.sharedKeys}`;
      const value = `${clientId}.${i}`;
      const kind = (seed * 7 + i) % 3;
      const input: KvOperation["input"] =
        kind === 0
          ? { op: "put", key, value }
          : kind === 1
            ? { op: "get", key }
            : { op: "cas", key, expected: lastSeen, value };
      const op: KvOperation = {
        clientId,
        input,
        output: undefined,
        call: performance.now(),
        return: Infinity,
      };
      this.history.push(op);
      try {
        if (input.op === "put") op.output = { ok: true, value: await session.put(key, value) };
        else if (input.op === "get") op.output = { ok: true, value: await session.get(key) };
        else if (input.op === "cas") op.output = await session.cas(key, input.expected, value);
        op.return = performance.now();
        // The key's value after this operation, as this client knows it: cas from there may swap.
        lastSeen =
          input.op === "put" || (op.output?.ok === true && input.op === "cas")
            ? value
            : (op.output?.value ?? null);
      } catch (error) {
        if (!(error instanceof KvUnknownOutcomeError)) throw error;
        this.unknownOutcomes++;
      }
      await sleep(this.limits.thinkTimeMs);
    }
  }
}

/** Reads every acknowledged key back; returns the ones missing or changed. */
export async function findLostWrites(client: KvClusterClient, acked: Map<string, string>): Promise<string[]> {
  const reader = client.session("verifier");
  const lost: string[] = [];
  const entries = [...acked];
  // Batches of 200 concurrent reads: the client batches them per event-loop turn.
  for (let i = 0; i < entries.length; i += 200) {
    const chunk = entries.slice(i, i + 200);
    const values = await Promise.all(chunk.map(([key]) => reader.get(key)));
    chunk.forEach(([key, expected], j) => {
      if (values[j] !== expected) lost.push(`${key}: acknowledged ${expected}, read ${String(values[j])}`);
    });
  }
  return lost;
}
