// Simulated clients of the replicated KV store. Each client has at most one request in flight,
// sends it to some node, retries it (same requestId, so the state machine deduplicates) when no
// answer comes in time, and finally gives up. Every request becomes one operation of the history
// the linearizability checker reads: call at the first attempt, return at the answer, or an
// unknown outcome (return = Infinity) when the client gave up.

import type { NodeId } from "../../src/raft/types.js";
import type { KvCommand, KvResult } from "../../src/statemachine/kv.js";
import type { KvInput, KvOperation, KvOutput } from "../linearizability/kv-model.js";
import type { Prng } from "./prng.js";

/** What a client needs from the cluster. Both return false when the node refused at once. */
export interface ClientPort {
  /** Proposes a command at `node`; the cluster calls `Client.onResult` when that node applies it. */
  propose(node: NodeId, command: KvCommand): boolean;
  /** Starts a ReadIndex read at `node`; the cluster calls `Client.onRead` when it is served. */
  read(node: NodeId, clientId: string, requestId: number, attempt: number, key: string): boolean;
  /** Nodes that are up (clients only talk to those; a crashed node cannot be dialled). */
  liveNodes(): readonly NodeId[];
}

/** Client behaviour; times in virtual milliseconds. */
export interface WorkloadConfig {
  clients: number;
  keys: readonly string[];
  /** Wait for an answer before retrying. */
  requestTimeoutMs: number;
  /** Retries before giving up and recording an unknown outcome. */
  retriesMax: number;
  /** Pause between a client's requests, drawn in [0, thinkMaxMs]. */
  thinkMaxMs: number;
  /** Share of reads served by ReadIndex (the rest of the reads go through the log). */
  readIndexShare: number;
}

type Pending =
  | { kind: "log"; command: KvCommand; input: KvInput }
  | { kind: "read"; key: string; input: KvInput };

/** Counts, for reports and for the test to show the workload did something. */
export interface WorkloadStats {
  issued: number;
  acknowledged: number;
  unknown: number;
  retries: number;
  refused: number;
}

export class SimClient {
  private requestId = 0;
  private pending: Pending | undefined;
  private callTime = 0;
  private attempts = 0;
  private deadline = 0;
  private nextActionAt: number;
  private lastNode: NodeId | undefined;
  /** The last value this client saw per key: gives cas a fair chance of succeeding. */
  private readonly lastSeen = new Map<string, string | null>();

  constructor(
    readonly id: string,
    private readonly prng: Prng,
    private readonly config: WorkloadConfig,
    private readonly history: History,
    startAt: number,
  ) {
    this.nextActionAt = startAt + prng.int(config.thinkMaxMs + 1);
  }

  get busy(): boolean {
    return this.pending !== undefined;
  }

  /** Acts if it is time: issues a new request (when `issueNew`), or retries a late one. */
  act(now: number, port: ClientPort, issueNew: boolean, stats: WorkloadStats): void {
    if (this.pending === undefined) {
      if (!issueNew || now < this.nextActionAt) return;
      this.pending = this.newRequest();
      this.callTime = this.history.stamp();
      this.attempts = 0;
      stats.issued++;
      this.send(now, port, stats);
      return;
    }
    if (now < this.deadline) return;
    if (this.attempts > this.config.retriesMax) {
      this.giveUp(now, stats);
      return;
    }
    stats.retries++;
    this.send(now, port, stats);
  }

  /** The node that applied our command reports its result. */
  onResult(now: number, requestId: number, result: KvResult, stats: WorkloadStats): void {
    const pending = this.pending;
    if (pending === undefined || pending.kind !== "log" || requestId !== this.requestId) return;
    if (result.error !== undefined) {
      // "stale_request" cannot answer the current request (it is the current one); "malformed"
      // would be a simulator bug. Either way the outcome is unknown to this client.
      throw new Error(`client ${this.id} got error ${result.error} for its current request ${requestId}`);
    }
    this.complete(now, { ok: result.ok, value: result.value }, stats);
  }

  /** A ReadIndex read was served. */
  onRead(now: number, requestId: number, value: string | null, stats: WorkloadStats): void {
    const pending = this.pending;
    if (pending === undefined || pending.kind !== "read" || requestId !== this.requestId) return;
    this.complete(now, { ok: true, value }, stats);
  }

  /** Ends the run for this client: an unanswered request becomes an unknown outcome. */
  finish(stats: WorkloadStats): void {
    if (this.pending !== undefined) this.giveUp(0, stats);
  }

  private newRequest(): Pending {
    const prng = this.prng;
    this.requestId++;
    const key = prng.pick(this.config.keys);
    const value = `${this.id}.${this.requestId}`;
    const base = { key, clientId: this.id, requestId: this.requestId };
    const roll = prng.float();
    if (roll < 0.3)
      return { kind: "log", command: { op: "put", ...base, value }, input: { op: "put", key, value } };
    if (roll < 0.4) return { kind: "log", command: { op: "delete", ...base }, input: { op: "delete", key } };
    if (roll < 0.6) {
      const expected = this.lastSeen.get(key) ?? null;
      return {
        kind: "log",
        command: { op: "cas", ...base, expected, value },
        input: { op: "cas", key, expected, value },
      };
    }
    if (prng.chance(this.config.readIndexShare)) return { kind: "read", key, input: { op: "get", key } };
    return { kind: "log", command: { op: "get", ...base }, input: { op: "get", key } };
  }

  private send(now: number, port: ClientPort, stats: WorkloadStats): void {
    const pending = this.pending as Pending;
    this.attempts++;
    this.deadline = now + this.config.requestTimeoutMs;
    const live = port.liveNodes();
    if (live.length === 0) {
      stats.refused++;
      return;
    }
    // Mostly stick with the node that answered last (as a client keeps its connection), but
    // often pick another: proposals then take the forwarding path.
    const node =
      this.lastNode !== undefined && live.includes(this.lastNode) && this.prng.chance(0.6)
        ? this.lastNode
        : this.prng.pick(live);
    this.lastNode = node;
    const accepted =
      pending.kind === "log"
        ? port.propose(node, pending.command)
        : port.read(node, this.id, this.requestId, this.attempts, pending.key);
    if (!accepted) {
      stats.refused++;
      this.lastNode = undefined;
      // Refused at once (no leader known, proposal dropped): try again soon, not at the timeout.
      this.deadline = now + Math.max(1, Math.floor(this.config.requestTimeoutMs / 4));
    }
  }

  private complete(now: number, output: KvOutput, stats: WorkloadStats): void {
    const pending = this.pending as Pending;
    this.history.record({
      clientId: this.id,
      input: pending.input,
      output,
      call: this.callTime,
      return: this.history.stamp(),
    });
    stats.acknowledged++;
    if (pending.input.op === "get") this.lastSeen.set(pending.input.key, output.value);
    else if (pending.input.op === "put" || (pending.input.op === "cas" && output.ok)) {
      this.lastSeen.set(pending.input.key, pending.input.value);
    } else if (pending.input.op === "delete") this.lastSeen.set(pending.input.key, null);
    else this.lastSeen.set(pending.input.key, output.value);
    this.pending = undefined;
    this.nextActionAt = now + this.prng.int(this.config.thinkMaxMs + 1);
  }

  private giveUp(now: number, stats: WorkloadStats): void {
    const pending = this.pending as Pending;
    stats.unknown++;
    this.history.record({
      clientId: this.id,
      input: pending.input,
      output: undefined,
      call: this.callTime,
      return: Number.POSITIVE_INFINITY,
    });
    this.lastSeen.delete(pending.input.key);
    this.pending = undefined;
    this.nextActionAt = now + this.prng.int(this.config.thinkMaxMs + 1);
  }
}

/**
 * The recorded history. Times are an event counter, not virtual milliseconds: the simulator is
 * sequential, so the counter orders every call and return exactly as they happened, with no ties.
 */
export class History {
  private counter = 0;
  readonly operations: KvOperation[] = [];

  stamp(): number {
    return ++this.counter;
  }

  record(operation: KvOperation): void {
    this.operations.push(operation);
  }
}
