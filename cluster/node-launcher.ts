// Launches cfn cluster nodes (`cfn node start`) as local processes on loopback, each with its
// own data dir and its own bus root (its own "host"), for benchmarks and chaos runs. The cluster
// files under cluster/*.yaml describe the same thing for people.

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { BUSY_PROCESS_NODE_FLAGS } from "../src/runtime-flags.js";
import type { NodePlacement } from "./local.js";
import { reservePort } from "./ports.js";

const here = dirname(fileURLToPath(import.meta.url));
/** The compiled CLI, whether this file runs compiled (dist/cluster/) or as source under vitest. */
export const CLI_PATH =
  basename(dirname(here)) === "dist"
    ? join(here, "..", "src", "cli", "main.js")
    : join(here, "..", "dist", "src", "cli", "main.js");

/** A port for a node to bind: reserved below the ephemeral range, so nothing else takes it
 *  between now and the child's bind (cluster/ports.ts; this was a race before). */
export async function freePort(): Promise<number> {
  return reservePort("127.0.0.1");
}

export interface LaunchedNodeSpec {
  id: string;
  peerPort: number;
  apiPort: number;
  dataDir: string;
  busRoot: string;
  /** Address the node binds and is dialled at; default 127.0.0.1 (a netns host has its own). */
  address?: string;
  /** Runs the node elsewhere, e.g. `ip netns exec <ns>` (must exec it, keeping the pid). */
  commandPrefix?: string[];
}

export class LaunchedNode {
  readonly spec: LaunchedNodeSpec;
  readonly token: string;
  child: ChildProcess | undefined;
  stdout = "";
  stderr = "";
  exitCode: number | null = null;
  private exited: Promise<number | null> = Promise.resolve(null);

  constructor(spec: LaunchedNodeSpec, token: string) {
    this.spec = spec;
    this.token = token;
  }

  get id(): string {
    return this.spec.id;
  }
  get address(): string {
    return this.spec.address ?? "127.0.0.1";
  }
  get api(): string {
    return `http://${this.address}:${this.spec.apiPort}`;
  }
  get peerUrl(): string {
    return `ws://${this.address}:${this.spec.peerPort}`;
  }
  get running(): boolean {
    return this.child !== undefined && this.exitCode === null;
  }

  /** Spawns the node and resolves once it printed its "started" line. */
  async start(args: string[], env: Record<string, string> = {}): Promise<void> {
    this.stdout = "";
    this.stderr = "";
    this.exitCode = null;
    const prefix = this.spec.commandPrefix ?? [];
    const child = spawn(
      prefix[0] ?? process.execPath,
      [
        ...prefix.slice(1),
        ...(prefix.length > 0 ? [process.execPath] : []),
        ...BUSY_PROCESS_NODE_FLAGS,
        CLI_PATH,
        "--bus-root",
        this.spec.busRoot,
        "--log-level",
        "warn",
        "node",
        "start",
        "--id",
        this.spec.id,
        "--token",
        this.token,
        "--data-dir",
        this.spec.dataDir,
        "--peer-listen",
        `${this.address}:${this.spec.peerPort}`,
        "--api-listen",
        `${this.address}:${this.spec.apiPort}`,
        ...args,
      ],
      { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] },
    );
    this.child = child;
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        this.exitCode = code ?? (signal ? 128 : null);
        resolve(this.exitCode);
      });
    });
    child.stderr?.on("data", (chunk) => {
      this.stderr = (this.stderr + String(chunk)).slice(-64 * 1024);
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

  signal(signal: NodeJS.Signals): void {
    this.child?.kill(signal);
  }

  async waitExit(timeoutMs = 30_000): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    const result = await Promise.race([this.exited, timeout]);
    clearTimeout(timer);
    if (result === "timeout") throw new Error(`node ${this.id} did not exit within ${timeoutMs} ms`);
    return result;
  }

  // biome-ignore lint/suspicious/noExplicitAny: status JSON of a node, read loosely by tests and benches
  async request(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
    const response = await fetch(new URL(path, this.api), {
      method,
      headers: { "content-type": "application/json", "x-cfn-cluster-token": this.token },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await response.text();
    return { status: response.status, json: text ? JSON.parse(text) : {} };
  }

  // biome-ignore lint/suspicious/noExplicitAny: status JSON of a node, read loosely by tests and benches
  async status(): Promise<any | undefined> {
    try {
      const { status, json } = await this.request("GET", "/v1/status");
      return status === 200 ? json : undefined;
    } catch {
      return undefined;
    }
  }
}

export async function waitUntil<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 20_000,
  pollMs = 20,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

/** A cluster of local node processes founded together. */
export class LocalNodeCluster {
  readonly nodes: LaunchedNode[] = [];
  readonly root: string;
  readonly token: string;

  private placement: NodePlacement | undefined;

  private constructor(root: string, token: string) {
    this.root = root;
    this.token = token;
  }

  /** `placement` puts nodes on other hosts (cluster/netns.ts); its client port is the API's. */
  static async create(
    size: number,
    options: { prefix?: string; token?: string; placement?: NodePlacement } = {},
  ): Promise<LocalNodeCluster> {
    const base = existsSync("/dev/shm") ? "/dev/shm" : tmpdir();
    const cluster = new LocalNodeCluster(
      mkdtempSync(join(base, options.prefix ?? "cfn-cluster-")),
      options.token ?? "local-cluster-token-0123456789",
    );
    cluster.placement = options.placement;
    for (let i = 1; i <= size; i++) cluster.nodes.push(await cluster.makeNode(`n${i}`));
    return cluster;
  }

  /** A node of this cluster. Data dirs live on disk (tmpdir), bus roots on tmpfs. */
  async makeNode(id: string): Promise<LaunchedNode> {
    const ports = this.placement
      ? await this.placement.ports(id)
      : { peerPort: await freePort(), clientPort: await freePort() };
    return new LaunchedNode(
      {
        id,
        peerPort: ports.peerPort,
        apiPort: ports.clientPort,
        dataDir: join(tmpdir(), `${this.root.split("/").pop()}-data`, id),
        busRoot: join(this.root, "bus", id),
        address: this.placement?.address(id),
        commandPrefix: this.placement?.commandPrefix(id),
      },
      this.token,
    );
  }

  peerFlags(self: LaunchedNode): string[] {
    return this.nodes
      .filter((node) => node !== self)
      .flatMap((node) => ["--peer", `${node.id}=${node.peerUrl},${node.api}`]);
  }

  async startAll(extra: string[] = [], env: Record<string, string> = {}): Promise<void> {
    await Promise.all(this.nodes.map((node) => node.start([...this.peerFlags(node), ...extra], env)));
    await waitUntil("every node ready", async () => {
      for (const node of this.nodes) {
        const response = await fetch(`${node.api}/readyz`).catch(() => undefined);
        if (response?.status !== 200) return false;
      }
      return true;
    });
  }

  async leader(among = this.nodes): Promise<LaunchedNode> {
    return waitUntil("a leader", async () => {
      for (const node of among) {
        if (!node.running) continue;
        const status = await node.status();
        if (status?.raft.role === "leader") return node;
      }
      return undefined;
    });
  }

  async stop(): Promise<void> {
    for (const node of this.nodes) {
      if (node.running) {
        node.signal("SIGCONT");
        node.signal("SIGKILL");
        await node.waitExit().catch(() => undefined);
      }
    }
    rmSync(this.root, { recursive: true, force: true });
    rmSync(join(tmpdir(), `${this.root.split("/").pop()}-data`), { recursive: true, force: true });
  }
}
