// NATS as an anchor for the cross-node suite: Debian's `nats-server` on loopback, core pub → sub
// (no JetStream: at-most-once, in memory), measured on the same machine in the same run. The client
// speaks the NATS text protocol (INFO/CONNECT/SUB/PUB/MSG/PING/PONG) over one TCP socket per side,
// both in this process. Absent `nats-server`, the anchor is skipped with a note.

import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { connect, createServer, type Socket } from "node:net";

const SUBJECT = "cfn.bench";
/** Longest wait for the server to listen or a run to finish, ms. */
const NATS_WAIT_MS_MAX = 60_000;

export interface NatsAnchor {
  throughput(messages: number, payloadBytes: number): Promise<number>;
  latencyUs(samples: number, payloadBytes: number, gapMs: number): Promise<number[]>;
  close(): void;
}

export function natsServerAvailable(): boolean {
  return spawnSync("nats-server", ["--version"], { stdio: "ignore" }).status === 0;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

/** One NATS connection: `onMessage` gets each MSG payload of the subscription. */
class NatsConnection {
  private buffer: Buffer = Buffer.alloc(0);
  private pongs: (() => void)[] = [];
  onMessage: (payload: Buffer) => void = () => undefined;

  private constructor(readonly socket: Socket) {
    socket.on("data", (chunk: Buffer) => this.read(chunk));
  }

  static async open(port: number): Promise<NatsConnection> {
    const socket = connect(port, "127.0.0.1");
    socket.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    const connection = new NatsConnection(socket);
    socket.write('CONNECT {"verbose":false,"pedantic":false,"echo":false}\r\n');
    await connection.ping();
    return connection;
  }

  /** Resolves when the server answered: everything sent before was processed. */
  ping(): Promise<void> {
    return new Promise((resolve) => {
      this.pongs.push(resolve);
      this.socket.write("PING\r\n");
    });
  }

  async subscribe(): Promise<void> {
    this.socket.write(`SUB ${SUBJECT} 1\r\n`);
    await this.ping();
  }

  /** Publishes; resolves at once unless the socket buffer is full (then on drain). */
  publish(payload: string): Promise<void> | undefined {
    const ok = this.socket.write(`PUB ${SUBJECT} ${Buffer.byteLength(payload)}\r\n${payload}\r\n`);
    return ok ? undefined : new Promise((resolve) => this.socket.once("drain", resolve));
  }

  close(): void {
    this.socket.destroy();
  }

  private read(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    let offset = 0;
    for (;;) {
      const end = this.buffer.indexOf("\r\n", offset);
      if (end < 0) break;
      const line = this.buffer.toString("latin1", offset, end);
      if (line.startsWith("MSG ")) {
        const size = Number(line.slice(line.lastIndexOf(" ") + 1));
        if (this.buffer.length < end + 2 + size + 2) break; // the payload has not all arrived
        this.onMessage(this.buffer.subarray(end + 2, end + 2 + size));
        offset = end + 2 + size + 2;
        continue;
      }
      offset = end + 2;
      if (line === "PING") this.socket.write("PONG\r\n");
      else if (line === "PONG") this.pongs.shift()?.();
      else if (line.startsWith("-ERR")) throw new Error(`nats: ${line}`);
    }
    this.buffer = this.buffer.subarray(offset);
  }
}

/** Starts nats-server on a free loopback port; undefined when it is not installed. */
export async function startNatsAnchor(): Promise<NatsAnchor | undefined> {
  if (!natsServerAvailable()) return undefined;
  const port = await freePort();
  const server: ChildProcess = spawn("nats-server", ["-a", "127.0.0.1", "-p", String(port)], {
    stdio: "ignore",
  });
  const deadline = Date.now() + NATS_WAIT_MS_MAX;
  let subscriber: NatsConnection | undefined;
  while (!subscriber) {
    try {
      subscriber = await NatsConnection.open(port);
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  await subscriber.subscribe();
  const publisher = await NatsConnection.open(port);
  const sub = subscriber;
  const nowNs = () => process.hrtime.bigint();
  const body = (i: number, filler: string) => JSON.stringify({ i, t: String(nowNs()), filler });

  return {
    async throughput(messages, payloadBytes) {
      const filler = "x".repeat(Math.max(0, payloadBytes - 40));
      let received = 0;
      let lastNs = 0n;
      const done = new Promise<void>((resolve) => {
        sub.onMessage = () => {
          received++;
          if (received === messages) {
            lastNs = nowNs();
            resolve();
          }
        };
      });
      const startNs = nowNs();
      for (let i = 0; i < messages; i++) await publisher.publish(body(i, filler));
      await withDeadline(done);
      return messages / (Number(lastNs - startNs) / 1e9);
    },
    async latencyUs(samples, payloadBytes, gapMs) {
      const filler = "x".repeat(Math.max(0, payloadBytes - 40));
      const latencies: number[] = [];
      const done = new Promise<void>((resolve) => {
        sub.onMessage = (payload) => {
          const at = nowNs();
          const { t } = JSON.parse(payload.toString("utf8")) as { t: string };
          latencies.push(Number(at - BigInt(t)) / 1000);
          if (latencies.length === samples) resolve();
        };
      });
      for (let i = 0; i < samples; i++) {
        await publisher.publish(body(i, filler));
        await new Promise((resolve) => setTimeout(resolve, gapMs));
      }
      await withDeadline(done);
      return latencies.slice(Math.min(50, Math.floor(samples / 5)));
    },
    close() {
      publisher.close();
      sub.close();
      server.kill("SIGTERM");
    },
  };
}

async function withDeadline(done: Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error("nats anchor: messages missing at the deadline")),
      NATS_WAIT_MS_MAX,
    );
  });
  try {
    await Promise.race([done, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
