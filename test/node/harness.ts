// Real node processes on loopback for the integration tests: each node runs the compiled CLI
// (`node dist/src/cli/main.js node start`) with its own data dir and its own bus root (its own
// "host"), and is driven through its HTTP API, its bus directory and POSIX signals.

import { execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach } from "vitest";
import { CLI_PATH, freePort, LaunchedNode, type LaunchedNodeSpec } from "../../cluster/node-launcher.js";
import { Bus } from "../../src/bus/index.js";
import { isCfnError } from "../../src/errors.js";

export const CLI = CLI_PATH;
export const TOKEN = "test-cluster-token-0123456789";

export function scratchDir(prefix: string): string {
  return mkdtempSync(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), prefix));
}

export { freePort };

/**
 * Scratch dirs and cleanups for the tests of one file, undone after each test (cleanups newest
 * first, then the dirs). Call at module level.
 */
export function perTestScratch(prefix: string): {
  scratch: () => string;
  cleanups: Array<() => Promise<void> | void>;
} {
  const roots: string[] = [];
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    for (const root of roots.splice(0)) rmSync(root, { recursive: true, force: true });
  });
  const scratch = () => {
    const root = mkdtempSync(join(tmpdir(), prefix));
    roots.push(root);
    return root;
  };
  return { scratch, cleanups };
}

export type NodeSpec = LaunchedNodeSpec;

/** A test node: the cluster launcher's node with the tests' token, deep inboxes and helpers. */
export class NodeProcess extends LaunchedNode {
  constructor(spec: NodeSpec) {
    super(spec, TOKEN);
  }

  /** Deep inboxes by default: these tests count messages, not backpressure. */
  override async start(args: string[], env: Record<string, string> = {}): Promise<void> {
    return super.start(args, { CFN_BUS_INBOX_DEPTH_MAX: "100000", ...env });
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

/**
 * Runs the compiled CLI (`cfn <args>`) to completion with `env` (default: this process's);
 * resolves with its exit code and output, never rejects.
 */
export function cli(
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env }, (error, stdout, stderr) =>
      resolve({ code: error ? ((error.code as number | undefined) ?? null) : 0, stdout, stderr }),
    );
  });
}

/** This process's environment without the variables the CLI reads a token from. */
export function envWithoutToken(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.CFN_API_TOKEN;
  delete env.CFN_CLUSTER_TOKEN;
  return env;
}

/** The sum of `name`'s samples on `node`'s /metrics whose labels include `labels`. */
export async function metricOf(
  node: NodeProcess,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const text = await (await fetch(`${node.api}/metrics`)).text();
  let total = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const match = /^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const labelText = match[2] ?? "";
    if (Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`)))
      total += Number(match[3]);
  }
  return total;
}

/** The code and message of the CfnError `run` throws ("CODE message"); fails when it throws none. */
export function refusal(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    if (isCfnError(error)) return `${error.code} ${error.message}`;
    throw error;
  }
  throw new Error("expected a refusal");
}
