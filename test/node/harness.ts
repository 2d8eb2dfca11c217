// Real node processes on loopback for the integration tests: each node runs the compiled CLI
// (`node dist/src/cli/main.js node start`) with its own data dir and its own bus root (its own
// "host"), and is driven through its HTTP API, its bus directory and POSIX signals.

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Bus } from "../../src/bus/index.js";

export const CLI = join(import.meta.dirname, "..", "..", "dist", "src", "cli", "main.js");
export const TOKEN = "test-cluster-token-0123456789";

export function scratchDir(prefix: string): string {
  return mkdtempSync(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), prefix));
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

export interface NodeSpec {
  id: string;
  peerPort: number;
  apiPort: number;
  dataDir: string;
  busRoot: string;
}

export class NodeProcess {
  readonly spec: NodeSpec;
  child: ChildProcess | undefined;
  stdout = "";
  stderr = "";
  exitCode: number | null = null;
  private exited: Promise<number | null> = Promise.resolve(null);

  constructor(spec: NodeSpec) {
    this.spec = spec;
  }

  get id(): string {
    return this.spec.id;
  }

  get api(): string {
    return `http://127.0.0.1:${this.spec.apiPort}`;
  }

  get peerUrl(): string {
    return `ws://127.0.0.1:${this.spec.peerPort}`;
  }

  /** Spawns the node; resolves once it printed its "started" line (or rejects when it exits). */
  async start(args: string[], env: Record<string, string> = {}): Promise<void> {
    this.stdout = "";
    this.stderr = "";
    this.exitCode = null;
    const child = spawn(
      process.execPath,
      [
        CLI,
        "--bus-root",
        this.spec.busRoot,
        "--log-level",
        "warn",
        "node",
        "start",
        "--id",
        this.spec.id,
        "--token",
        TOKEN,
        "--data-dir",
        this.spec.dataDir,
        "--peer-listen",
        `127.0.0.1:${this.spec.peerPort}`,
        "--api-listen",
        `127.0.0.1:${this.spec.apiPort}`,
        ...args,
      ],
      {
        env: { ...process.env, CFN_BUS_INBOX_DEPTH_MAX: "100000", ...env },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    this.child = child;
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        this.exitCode = code ?? (signal ? 128 : null);
        resolve(this.exitCode);
      });
    });
    child.stderr?.on("data", (chunk) => {
      this.stderr += String(chunk);
    });
    await new Promise<void>((resolve, reject) => {
      child.stdout?.on("data", (chunk) => {
        this.stdout += String(chunk);
        if (this.stdout.includes('"event":"started"')) resolve();
      });
      child.once("exit", (code) =>
        reject(new Error(`node ${this.id} exited with ${code} before starting:\n${this.stderr}`)),
      );
    });
  }

  /** Runs `cfn node start` to completion (for refusals); returns exit code and output. */
  async runToExit(args: string[]): Promise<{ code: number | null; stderr: string }> {
    const child = spawn(
      process.execPath,
      [
        CLI,
        "--bus-root",
        this.spec.busRoot,
        "--log-level",
        "warn",
        "node",
        "start",
        "--id",
        this.spec.id,
        "--data-dir",
        this.spec.dataDir,
        ...args,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let stderr = "";
    child.stderr.on("data", (chunk) => {
      stderr += String(chunk);
    });
    child.stdout.on("data", (chunk) => {
      if (String(chunk).includes('"event":"started"')) child.kill("SIGKILL");
    });
    const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
    return { code, stderr };
  }

  signal(signal: NodeJS.Signals): void {
    this.child?.kill(signal);
  }

  async waitExit(timeoutMs = 20_000): Promise<number | null> {
    const timeout = new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), timeoutMs));
    const result = await Promise.race([this.exited, timeout]);
    if (result === "timeout") throw new Error(`node ${this.id} did not exit within ${timeoutMs} ms`);
    return result;
  }

  async kill9(): Promise<void> {
    this.signal("SIGKILL");
    await this.waitExit();
  }

  /** A bus handle on this node's host (as an agent of that host would open it). */
  bus(): Bus {
    return new Bus({ config: { root: this.spec.busRoot, name: "default", inboxDepthMax: 100_000 } });
  }
}

export async function api(
  base: string,
  method: string,
  path: string,
  body?: unknown,
  token = TOKEN,
  // biome-ignore lint/suspicious/noExplicitAny: status JSON of a node, read loosely by tests and benches
): Promise<{ status: number; json: any }> {
  const response = await fetch(new URL(path, base), {
    method,
    headers: { "content-type": "application/json", "x-cfn-cluster-token": token },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await response.text();
  return { status: response.status, json: text ? JSON.parse(text) : {} };
}

// biome-ignore lint/suspicious/noExplicitAny: status JSON of a node, read loosely by tests and benches
export async function tryStatus(node: NodeProcess): Promise<any | undefined> {
  try {
    const { status, json } = await api(node.api, "GET", "/v1/status");
    return status === 200 ? json : undefined;
  } catch {
    return undefined;
  }
}

/** Polls `check` until it returns a truthy value; fails with `what` after timeoutMs. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A cluster of `size` nodes founded together (every node lists the others as --peer). */
export class TestCluster {
  readonly nodes: NodeProcess[] = [];
  readonly root: string;

  private constructor(root: string) {
    this.root = root;
  }

  static async create(size: number, prefix = "cfn-node-test-"): Promise<TestCluster> {
    const cluster = new TestCluster(scratchDir(prefix));
    for (let i = 1; i <= size; i++) cluster.nodes.push(await cluster.makeNode(`n${i}`));
    return cluster;
  }

  async makeNode(id: string): Promise<NodeProcess> {
    return new NodeProcess({
      id,
      peerPort: await freePort(),
      apiPort: await freePort(),
      dataDir: join(this.root, "data", id),
      busRoot: join(this.root, "bus", id),
    });
  }

  peerFlags(self: NodeProcess): string[] {
    return this.nodes
      .filter((node) => node !== self)
      .flatMap((node) => ["--peer", `${node.id}=${node.peerUrl},${node.api}`]);
  }

  async startAll(extra: string[] = []): Promise<void> {
    await Promise.all(this.nodes.map((node) => node.start([...this.peerFlags(node), ...extra])));
    await this.waitReady(this.nodes);
  }

  async waitReady(nodes: NodeProcess[]): Promise<void> {
    await waitFor(
      "every node ready and announced",
      async () => {
        for (const node of nodes) {
          const response = await fetch(`${node.api}/readyz`).catch(() => undefined);
          if (response?.status !== 200) return false;
        }
        return true;
      },
      20_000,
    );
  }

  async leader(among = this.nodes): Promise<NodeProcess> {
    return waitFor("a leader", async () => {
      for (const node of among) {
        if (node.exitCode !== null || !node.child) continue;
        const status = await tryStatus(node);
        if (status?.raft.role === "leader") return node;
      }
      return undefined;
    });
  }

  node(id: string): NodeProcess {
    const node = this.nodes.find((candidate) => candidate.id === id);
    if (!node) throw new Error(`no node ${id}`);
    return node;
  }

  async stop(): Promise<void> {
    for (const node of this.nodes) {
      if (node.child && node.exitCode === null) {
        node.signal("SIGCONT");
        node.signal("SIGKILL");
        await node.waitExit().catch(() => undefined);
      }
    }
    rmSync(this.root, { recursive: true, force: true });
  }
}

/** Reads and acknowledges every message now in `agent`'s inbox on `node`'s host. */
export async function drainInbox(
  node: NodeProcess,
  agent: string,
  // biome-ignore lint/suspicious/noExplicitAny: status JSON of a node, read loosely by tests and benches
): Promise<{ id: string; from: string; type: string; payload: any; headers: Record<string, string> }[]> {
  const bus = node.bus();
  const mailbox = bus.openMailbox(agent, { heartbeat: false, watch: false });
  // biome-ignore lint/suspicious/noExplicitAny: status JSON of a node, read loosely by tests and benches
  const out: { id: string; from: string; type: string; payload: any; headers: Record<string, string> }[] = [];
  try {
    for (;;) {
      const deliveries = mailbox.receiveNow(1000);
      if (deliveries.length === 0) break;
      for (const delivery of deliveries) out.push(delivery.message as never);
      mailbox.ack(deliveries);
    }
  } finally {
    mailbox.close();
    bus.close();
  }
  return out;
}
