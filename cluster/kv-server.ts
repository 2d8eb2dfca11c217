// The KV node's client endpoint: a WebSocket server speaking cluster/kv-protocol.ts in front of a
// RaftHost and its KV state machine. Responses are coalesced per connection and flushed once per
// event-loop turn, so a busy connection costs one frame per turn, not one per request.

import { createHash, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { type WebSocket, WebSocketServer } from "ws";
import { isCfnError } from "../src/errors.js";
import type { RaftHost } from "../src/node/raft-host.js";
import type { Logger } from "../src/obs/logger.js";
import type { Metrics } from "../src/obs/metrics.js";
import {
  encodeKvCommand,
  type KvCommand,
  type KvResult,
  type KvStateMachine,
} from "../src/statemachine/kv.js";
import {
  decodeKvFrame,
  encodeKvFrame,
  KV_CLIENT_PATH,
  KV_TOKEN_HEADER,
  type KvErrorName,
  type KvRequest,
  type KvResponse,
  parseKvRequest,
} from "./kv-protocol.js";

/** Largest client frame accepted, bytes. */
const CLIENT_FRAME_BYTES_MAX = 4 * 1024 * 1024;

export interface KvClientServerOptions {
  host: RaftHost<KvResult>;
  kv: KvStateMachine;
  metrics: Metrics;
  logger: Logger;
  clusterToken: string;
  /** Client URL of every member, for leader hints. */
  clientUrls: Record<string, string>;
  listenHost: string;
  port: number;
}

interface Connection {
  socket: WebSocket;
  outbox: KvResponse[];
  flushScheduled: boolean;
}

export class KvClientServer {
  private readonly options: KvClientServerOptions;
  private readonly server: Server;
  private readonly wss: WebSocketServer;
  private readonly tokenDigest: Buffer;

  constructor(options: KvClientServerOptions) {
    this.options = options;
    this.tokenDigest = digest(options.clusterToken);
    this.server = createServer((_request, response) => {
      response.writeHead(426, { "content-type": "text/plain" });
      response.end("cfn kv endpoint: WebSocket upgrade required\n");
    });
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: CLIENT_FRAME_BYTES_MAX,
      perMessageDeflate: false,
    });
    this.server.on("upgrade", (request, socket, head) => this.upgrade(request, socket, head));
  }

  get url(): string {
    const address = this.server.address() as AddressInfo;
    return `ws://${address.address}:${address.port}`;
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.options.port, this.options.listenHost, () => {
        this.server.off("error", reject);
        resolve();
      });
    });
  }

  async close(): Promise<void> {
    for (const client of this.wss.clients) client.terminate();
    this.wss.close();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }

  private upgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    const path = new URL(request.url ?? "/", "http://kv").pathname;
    const token = request.headers[KV_TOKEN_HEADER];
    if (path !== KV_CLIENT_PATH) {
      socket.end("HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
      return;
    }
    if (typeof token !== "string" || !timingSafeEqual(digest(token), this.tokenDigest)) {
      socket.end("HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
      return;
    }
    this.wss.handleUpgrade(request, socket, head, (webSocket) => this.attach(webSocket));
  }

  private attach(socket: WebSocket): void {
    const connection: Connection = { socket, outbox: [], flushScheduled: false };
    socket.on("message", (data, isBinary) => {
      if (!isBinary || !(data instanceof Uint8Array)) {
        socket.close(1003, "binary frames only");
        return;
      }
      let items: unknown[];
      try {
        items = decodeKvFrame(data);
      } catch {
        socket.close(1007, "bad frame");
        return;
      }
      for (const item of items) {
        const request = parseKvRequest(item);
        if (!request) {
          const id = typeof (item as { id?: unknown })?.id === "number" ? (item as { id: number }).id : -1;
          this.respond(connection, { id, ok: false, error: "bad_request" });
          continue;
        }
        this.serve(request).then(
          (response) => this.respond(connection, response),
          (error) => this.respond(connection, this.errorResponse(request.id, error)),
        );
      }
    });
    socket.on("error", () => undefined);
  }

  private async serve(request: KvRequest): Promise<KvResponse> {
    const { host, kv } = this.options;
    switch (request.op) {
      case "status": {
        const status = host.status();
        return {
          id: request.id,
          ok: true,
          status: {
            id: status.id,
            role: status.role,
            term: status.term,
            leader: status.leader,
            commit: status.commit,
            applied: status.applied,
            stateDigest: request.digest
              ? createHash("sha256").update(kv.snapshot()).digest("hex")
              : undefined,
            keys: kv.size,
            members: status.members.map((member) => ({
              id: member.id,
              match: member.match,
              lag: member.lag,
            })),
          },
        };
      }
      case "metrics":
        return { id: request.id, ok: true, metrics: await this.options.metrics.exposition() };
      case "get": {
        const key = request.key;
        const value = await host.read(() => kv.read(key));
        return { id: request.id, ok: true, value };
      }
      default: {
        const command = toCommand(request);
        const result = await host.propose(encodeKvCommand(command));
        if (!result) return { id: request.id, ok: false, error: "internal" };
        if (result.error)
          return {
            id: request.id,
            ok: false,
            value: result.value,
            error: result.error === "stale_request" ? "stale_request" : "bad_request",
          };
        return { id: request.id, ok: result.ok, value: result.value };
      }
    }
  }

  private errorResponse(id: number, error: unknown): KvResponse {
    let name: KvErrorName = "internal";
    if (isCfnError(error, "CFN_ERR_NOT_LEADER")) {
      const leader = error.details.leader as string | undefined;
      return {
        id,
        ok: false,
        error: "not_leader",
        leader,
        leaderUrl: leader ? this.options.clientUrls[leader] : undefined,
      };
    }
    if (isCfnError(error, "CFN_ERR_TIMEOUT")) name = "timeout";
    else if (isCfnError(error, "CFN_ERR_PROPOSAL_DROPPED")) name = "dropped";
    else if (isCfnError(error, "CFN_ERR_CLOSED") || isCfnError(error, "CFN_ERR_STORAGE")) name = "closed";
    else this.options.logger.warn("kv request failed", { error });
    return { id, ok: false, error: name };
  }

  private respond(connection: Connection, response: KvResponse): void {
    connection.outbox.push(response);
    if (connection.flushScheduled) return;
    connection.flushScheduled = true;
    setImmediate(() => {
      connection.flushScheduled = false;
      const batch = connection.outbox;
      connection.outbox = [];
      if (connection.socket.readyState === connection.socket.OPEN)
        connection.socket.send(encodeKvFrame(batch));
    });
  }
}

function toCommand(
  request: Exclude<KvRequest, { op: "get" } | { op: "status" } | { op: "metrics" }>,
): KvCommand {
  switch (request.op) {
    case "put":
      return {
        op: "put",
        key: request.key,
        value: request.value,
        clientId: request.clientId,
        requestId: request.seq,
      };
    case "delete":
      return { op: "delete", key: request.key, clientId: request.clientId, requestId: request.seq };
    case "cas":
      return {
        op: "cas",
        key: request.key,
        expected: request.expected,
        value: request.value,
        clientId: request.clientId,
        requestId: request.seq,
      };
  }
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}
