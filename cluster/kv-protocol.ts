// The KV node's client protocol (documented in docs/RAFT_HOST.md, "Client protocol"). A client
// opens a WebSocket to `ws://<host>:<clientPort>/cfn/v1/kv` with the header
// `x-cfn-cluster-token: <token>` and exchanges binary msgpack frames (msgpackr, useRecords:false):
//
//   client → node   an array of KvRequest   (several requests per frame: clients batch per tick)
//   node → client   an array of KvResponse  (answers in completion order, matched by `id`)
//
// Writes (put/delete/cas) go through the Raft log on the leader; they carry the client's
// session (clientId, seq): a retry with the same seq is applied at most once. Reads (get) are
// linearizable (ReadIndex) and may be sent to any node. A node that cannot serve a write answers
// error "not_leader" with the leader's id and client URL when it knows them.

import { Packr, Unpackr } from "msgpackr";

export const KV_CLIENT_PATH = "/cfn/v1/kv";
export const KV_TOKEN_HEADER = "x-cfn-cluster-token";

export type KvRequest =
  | { id: number; op: "put"; key: string; value: string; clientId: string; seq: number }
  | { id: number; op: "delete"; key: string; clientId: string; seq: number }
  | {
      id: number;
      op: "cas";
      key: string;
      expected: string | null;
      value: string;
      clientId: string;
      seq: number;
    }
  | { id: number; op: "get"; key: string }
  /** `digest: true` adds stateDigest (hashes the whole state: not for tight polling loops). */
  | { id: number; op: "status"; digest?: boolean }
  /** The node's Prometheus exposition (text), for benchmarks and debugging. */
  | { id: number; op: "metrics" };

/**
 * Error codes of a response:
 *  - not_leader: this node is not the leader (`leader`, `leaderUrl` when known); retry there.
 *  - timeout: the outcome is unknown; retry with the same seq (deduplicated).
 *  - dropped: backpressure or a leadership transfer; nothing happened; retry.
 *  - closed: the node is shutting down; retry elsewhere.
 *  - stale_request: the session already moved past this seq.
 *  - bad_request: the request is malformed.
 *  - internal: anything else (see the node's log).
 */
export type KvErrorName =
  | "not_leader"
  | "timeout"
  | "dropped"
  | "closed"
  | "stale_request"
  | "bad_request"
  | "internal";

export interface KvResponse {
  id: number;
  /** put/delete/get: true when served; cas: true when swapped. False with `error` on failure. */
  ok: boolean;
  /** The value the command observed (previous value for put/delete/cas, current for get). */
  value?: string | null;
  error?: KvErrorName;
  leader?: string;
  leaderUrl?: string;
  /** op "status" only. */
  status?: KvNodeStatus;
  /** op "metrics" only. */
  metrics?: string;
}

export interface KvNodeStatus {
  id: string;
  role: string;
  term: number;
  leader: string;
  commit: number;
  applied: number;
  /** sha256 (hex) of the state machine's snapshot bytes: equal on replicas with equal state.
   *  Only when the request asked for it. */
  stateDigest?: string;
  keys: number;
  members: { id: string; match?: number; lag?: number }[];
}

const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

export function encodeKvFrame(items: KvRequest[] | KvResponse[]): Uint8Array {
  return packr.pack(items);
}

export function decodeKvFrame(bytes: Uint8Array): unknown[] {
  const decoded = unpackr.unpack(bytes) as unknown;
  if (!Array.isArray(decoded)) throw new Error("kv frame is not an array");
  return decoded;
}

/** Checks one request's shape; returns undefined when malformed. */
export function parseKvRequest(raw: unknown): KvRequest | undefined {
  if (typeof raw !== "object" || raw === null) return undefined;
  const r = raw as Record<string, unknown>;
  if (typeof r.id !== "number") return undefined;
  if (r.op === "status") return { id: r.id, op: "status", digest: r.digest === true };
  if (r.op === "metrics") return { id: r.id, op: "metrics" };
  if (typeof r.key !== "string") return undefined;
  if (r.op === "get") return { id: r.id, op: "get", key: r.key };
  if (typeof r.clientId !== "string" || typeof r.seq !== "number" || !Number.isSafeInteger(r.seq))
    return undefined;
  switch (r.op) {
    case "put":
      return typeof r.value === "string"
        ? { id: r.id, op: "put", key: r.key, value: r.value, clientId: r.clientId, seq: r.seq }
        : undefined;
    case "delete":
      return { id: r.id, op: "delete", key: r.key, clientId: r.clientId, seq: r.seq };
    case "cas":
      if (typeof r.value !== "string" || (r.expected !== null && typeof r.expected !== "string"))
        return undefined;
      return {
        id: r.id,
        op: "cas",
        key: r.key,
        expected: r.expected,
        value: r.value,
        clientId: r.clientId,
        seq: r.seq,
      };
    default:
      return undefined;
  }
}
