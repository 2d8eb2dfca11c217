// A client of the KV nodes (cluster/kv-protocol.ts): one WebSocket per node, requests multiplexed
// and batched per event-loop turn, the leader followed through NOT_LEADER hints, and failed
// attempts retried on another node until a deadline. Writes keep their (clientId, seq) across
// retries, so the state machine applies each at most once: a write that returns was applied
// exactly once; one that throws KvUnknownOutcomeError may or may not have been.

import { WebSocket } from "ws";
import { zeroMask } from "../src/transport/ws-peer.js";
import {
  decodeKvFrame,
  encodeKvFrame,
  KV_CLIENT_PATH,
  KV_TOKEN_HEADER,
  type KvNodeStatus,
  type KvRequest,
  type KvResponse,
} from "./kv-protocol.js";

type RequestBody = KvRequest extends infer R ? (R extends KvRequest ? Omit<R, "id"> : never) : never;

export interface KvClientOptions {
  /** Node id → client URL (ws://host:port). */
  urls: Record<string, string>;
  clusterToken: string;
  /** A call that has not succeeded by then throws KvUnknownOutcomeError. Default 10,000 ms. */
  requestTimeoutMs?: number;
  /** Pause before retrying when no leader is known or a node is down. Default 5 ms. */
  retryDelayMs?: number;
  /** One attempt waits at most this long for its answer. Default 2,000 ms. */
  attemptTimeoutMs?: number;
}

/** The call's deadline passed; a write may or may not have been applied. */
export class KvUnknownOutcomeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "KvUnknownOutcomeError";
  }
}

class ConnectionLost extends Error {}

/** One WebSocket to one node, opened lazily and re-opened after a failure. */
class KvConnection {
  private socket: WebSocket | undefined;
  private opening: Promise<WebSocket> | undefined;
  private nextId = 1;
  private readonly pending = new Map<
    number,
    { resolve: (r: KvResponse) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }
  >();
  private queue: KvRequest[] = [];
  private flushScheduled = false;
  private closed = false;

  constructor(
    private readonly url: string,
    private readonly token: string,
    private readonly attemptTimeoutMs: number,
  ) {}

  request(body: RequestBody): Promise<KvResponse> {
    if (this.closed) return Promise.reject(new ConnectionLost("client closed"));
    const id = this.nextId++;
    const request = { ...body, id } as KvRequest;
    return new Promise<KvResponse>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ConnectionLost(`no answer from ${this.url} within ${this.attemptTimeoutMs} ms`));
      }, this.attemptTimeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.queue.push(request);
      this.scheduleFlush();
    });
  }

  close(): void {
    this.closed = true;
    this.socket?.terminate();
    this.fail(new ConnectionLost("client closed"));
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush().catch((error: Error) => this.fail(error));
    });
  }

  private async flush(): Promise<void> {
    if (this.queue.length === 0) return;
    const socket = await this.open();
    const batch = this.queue;
    this.queue = [];
    if (batch.length > 0) socket.send(encodeKvFrame(batch));
  }

  private open(): Promise<WebSocket> {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) return Promise.resolve(this.socket);
    this.opening ??= new Promise<WebSocket>((resolve, reject) => {
      const socket = new WebSocket(`${this.url}${KV_CLIENT_PATH}`, {
        headers: { [KV_TOKEN_HEADER]: this.token },
        perMessageDeflate: false,
        generateMask: zeroMask, // a benchmark client, not a browser: skip the masked copy
      });
      socket.binaryType = "nodebuffer";
      socket.once("open", () => {
        this.socket = socket;
        this.opening = undefined;
        resolve(socket);
      });
      socket.on("message", (data) => this.receive(data as Buffer));
      socket.on("error", () => undefined);
      socket.once("close", () => {
        if (this.socket === socket) this.socket = undefined;
        if (this.opening) {
          this.opening = undefined;
          reject(new ConnectionLost(`cannot connect to ${this.url}`));
        }
        this.fail(new ConnectionLost(`connection to ${this.url} lost`));
      });
    });
    return this.opening;
  }

  private receive(data: Buffer): void {
    for (const raw of decodeKvFrame(data)) {
      const response = raw as KvResponse;
      const waiter = this.pending.get(response.id);
      if (!waiter) continue;
      this.pending.delete(response.id);
      clearTimeout(waiter.timer);
      waiter.resolve(response);
    }
  }

  private fail(error: Error): void {
    this.queue = [];
    for (const [id, waiter] of this.pending) {
      this.pending.delete(id);
      clearTimeout(waiter.timer);
      waiter.reject(error instanceof ConnectionLost ? error : new ConnectionLost(String(error)));
    }
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class KvClusterClient {
  private readonly ids: string[];
  private readonly connections = new Map<string, KvConnection>();
  private readonly requestTimeoutMs: number;
  private readonly retryDelayMs: number;
  private leaderGuess: string | undefined;
  private rotation = 0;

  constructor(options: KvClientOptions) {
    this.ids = Object.keys(options.urls).sort();
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.retryDelayMs = options.retryDelayMs ?? 5;
    for (const id of this.ids) {
      this.connections.set(
        id,
        new KvConnection(options.urls[id], options.clusterToken, options.attemptTimeoutMs ?? 2_000),
      );
    }
  }

  /** A client session: its writes are numbered and deduplicated by the state machine. */
  session(clientId: string): KvSession {
    return new KvSession(this, clientId);
  }

  /** The node this client currently believes leads, if any. */
  get leader(): string | undefined {
    return this.leaderGuess;
  }

  /** Sends `body` until a node serves it (following leader hints), or throws KvUnknownOutcomeError. */
  async call(body: RequestBody): Promise<KvResponse> {
    const deadline = Date.now() + this.requestTimeoutMs;
    let lastProblem = "";
    while (Date.now() < deadline) {
      const target = this.leaderGuess ?? this.ids[this.rotation++ % this.ids.length];
      let response: KvResponse;
      try {
        response = await this.connection(target).request(body);
      } catch (error) {
        lastProblem = `${target}: ${(error as Error).message}`;
        if (this.leaderGuess === target) this.leaderGuess = undefined;
        await sleep(this.retryDelayMs);
        continue;
      }
      switch (response.error) {
        case undefined:
        case "stale_request":
        case "bad_request":
          if (body.op !== "get" && body.op !== "status" && body.op !== "metrics") this.leaderGuess = target;
          return response;
        case "not_leader":
          lastProblem = `${target}: not leader`;
          this.leaderGuess =
            response.leader && this.connections.has(response.leader) && response.leader !== target
              ? response.leader
              : undefined;
          if (!this.leaderGuess) await sleep(this.retryDelayMs);
          continue;
        default:
          lastProblem = `${target}: ${response.error}`;
          if (this.leaderGuess === target && response.error === "closed") this.leaderGuess = undefined;
          await sleep(this.retryDelayMs);
          continue;
      }
    }
    throw new KvUnknownOutcomeError(
      `no node served ${body.op} within ${this.requestTimeoutMs} ms (last: ${lastProblem})`,
    );
  }

  /** One node's status, asked of that node only; `digest` adds the state digest. */
  async status(id: string, digest = false): Promise<KvNodeStatus> {
    const response = await this.connection(id).request({ op: "status", digest });
    if (!response.status) throw new Error(`node ${id} answered status without a status`);
    return response.status;
  }

  /** One node's Prometheus exposition text. */
  async metrics(id: string): Promise<string> {
    const response = await this.connection(id).request({ op: "metrics" });
    return response.metrics ?? "";
  }

  close(): void {
    for (const connection of this.connections.values()) connection.close();
  }

  private connection(id: string): KvConnection {
    const connection = this.connections.get(id);
    if (!connection) throw new Error(`unknown node ${id}`);
    return connection;
  }
}

export class KvSession {
  private seq = 0;

  constructor(
    private readonly client: KvClusterClient,
    readonly clientId: string,
  ) {}

  /** Returns the previous value. */
  async put(key: string, value: string): Promise<string | null> {
    const response = await this.client.call({
      op: "put",
      key,
      value,
      clientId: this.clientId,
      seq: ++this.seq,
    });
    return checked(response).value ?? null;
  }

  async delete(key: string): Promise<string | null> {
    const response = await this.client.call({ op: "delete", key, clientId: this.clientId, seq: ++this.seq });
    return checked(response).value ?? null;
  }

  /** Returns whether it swapped and the value it compared against. */
  async cas(
    key: string,
    expected: string | null,
    value: string,
  ): Promise<{ ok: boolean; value: string | null }> {
    const response = await this.client.call({
      op: "cas",
      key,
      expected,
      value,
      clientId: this.clientId,
      seq: ++this.seq,
    });
    return { ok: response.ok, value: response.value ?? null };
  }

  /** A linearizable read. */
  async get(key: string): Promise<string | null> {
    const response = await this.client.call({ op: "get", key });
    return checked(response).value ?? null;
  }
}

function checked(response: KvResponse): KvResponse {
  if (response.error) throw new Error(`kv request failed: ${response.error}`);
  return response;
}
