// The RaftHost's linearizable reads (ReadIndex, Raft thesis §6.4): reads wait in a queue; one
// ReadIndex request (one heartbeat round on the leader) serves every read queued before it; a
// read runs once this node has applied up to the returned read index. Deadlines are swept by the
// host's tick. Pure bookkeeping: the host does the stepping and the applying.

import type { Counter } from "prom-client";
import { CfnError } from "../errors.js";

interface PendingRead {
  run: () => void;
  reject: (error: unknown) => void;
  deadlineMs: number;
}

export class ReadIndexQueue {
  /** Insertion order = deadline order (one timeout for all), so sweeps stop early. */
  private readonly reads = new Map<number, PendingRead>();
  /** Reads not yet sent as a ReadIndex request. */
  private waiting: number[] = [];
  /** ReadIndex requests in flight, by context (hex). */
  private readonly inflight = new Map<string, number[]>();
  /** Reads whose read index is known, waiting for `applied` to reach it. */
  private ready: { index: number; ids: number[] }[] = [];

  constructor(
    private readonly outcomes: Counter<string>,
    private readonly readTimeoutMs: number,
  ) {}

  get size(): number {
    return this.reads.size;
  }

  /** Queues `query`; the promise settles when it ran, failed or timed out. */
  add<T>(id: number, query: () => T, nowMs: number): Promise<T> {
    const promise = new Promise<T>((resolve, reject) => {
      const run = () => {
        try {
          resolve(query());
        } catch (error) {
          reject(error);
        }
      };
      this.reads.set(id, { run, reject, deadlineMs: nowMs + this.readTimeoutMs });
    });
    this.waiting.push(id);
    return promise;
  }

  /** The reads to cover with the next ReadIndex request (empties the waiting list). */
  takeWaiting(): number[] {
    const ids = this.waiting;
    this.waiting = [];
    return ids;
  }

  /** The ReadIndex request for `ids` was handed to the core with `context`. */
  sent(context: Uint8Array, ids: number[]): void {
    this.inflight.set(Buffer.from(context).toString("hex"), ids);
  }

  /** The core answered a ReadIndex request (a ReadState in a Ready). */
  answered(index: number, context: Uint8Array): void {
    const key = Buffer.from(context).toString("hex");
    const ids = this.inflight.get(key);
    if (!ids) return;
    this.inflight.delete(key);
    this.ready.push({ index, ids });
  }

  /** Runs every read whose read index is <= applied. */
  serve(applied: number): void {
    if (this.ready.length === 0) return;
    const stillWaiting: { index: number; ids: number[] }[] = [];
    for (const batch of this.ready) {
      if (batch.index > applied) {
        stillWaiting.push(batch);
        continue;
      }
      for (const id of batch.ids) {
        const read = this.reads.get(id);
        if (!read) continue;
        this.reads.delete(id);
        this.outcomes.inc({ outcome: "served" });
        read.run();
      }
    }
    this.ready = stillWaiting;
  }

  fail(ids: number[], error: unknown, outcome: string): void {
    for (const id of ids) {
      const read = this.reads.get(id);
      if (!read) continue;
      this.reads.delete(id);
      this.outcomes.inc({ outcome });
      read.reject(error);
    }
  }

  /** Fails reads past their deadline with CFN_ERR_TIMEOUT. */
  sweep(nowMs: number): void {
    const expired: number[] = [];
    for (const [id, read] of this.reads) {
      if (read.deadlineMs > nowMs) break;
      expired.push(id);
    }
    if (expired.length > 0) {
      this.fail(
        expired,
        new CfnError("CFN_ERR_TIMEOUT", `read not served within ${this.readTimeoutMs} ms`),
        "timeout",
      );
    }
    if (this.reads.size === 0) {
      // Requests lost with a leader change never get an answer; forget them.
      this.inflight.clear();
      this.ready = [];
    }
  }

  failAll(error: unknown): void {
    for (const read of this.reads.values()) read.reject(error);
    this.reads.clear();
    this.waiting = [];
    this.inflight.clear();
    this.ready = [];
  }
}
