// A cluster of KV node processes on this machine (127.0.0.1, free ports, one data dir each),
// shared by the cluster tests, chaos and the raft benchmark. Runs the compiled entry
// dist/cluster/kv-node.js (build with `npx tsc -p .` first).
//
//   const cluster = await LocalCluster.start({ size: 3 });
//   try {
//     const leader = await cluster.waitForLeader();
//     await cluster.kill(leader);          // SIGKILL, waits for the exit
//     await cluster.restart(leader);       // same id, ports and data dir
//   } finally {
//     await cluster.stop();                // SIGTERM, then SIGKILL; removes the base dir
//   }
//
// Processes are also killed when this process exits, so a failing test never leaks nodes.

import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  createWriteStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  type WriteStream,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { agreedLeader, KvClusterBase } from "./kv-cluster-base.js";

export { agreedLeader };

import { reservePort } from "./ports.js";

/** Starts tried when a probed-free port was taken before a node bound it. */
const START_ATTEMPTS_MAX = 3;
export const LOOPBACK = "127.0.0.1";

export interface LocalClusterOptions {
  /** Number of nodes; ids are n1..nN. Default 3. */
  size?: number;
  /** Where data dirs and logs go; default a fresh dir under the OS temp dir, removed by stop(). */
  baseDir?: string;
  /** Keep baseDir at stop() (for post-mortems). Default: CFN_KEEP_CLUSTER=1 in the environment. */
  keepBaseDir?: boolean;
  clusterToken?: string;
  /** Extra kv-node flags for every node, e.g. ["--tick-ms", "10"]. */
  nodeArgs?: string[];
  /** Log level of the nodes (their stderr goes to <baseDir>/<id>.log). Default "info". */
  logLevel?: string;
  /** Flags for the node processes' `node` itself, e.g. ["--cpu-prof"]. */
  execArgv?: string[];
  /** Compiled node entry; default <repo>/dist/cluster/kv-node.js. */
  entry?: string;
  /** How long start() and restart() wait for a node to serve. Default 15,000 ms. */
  startTimeoutMs?: number;
  /** Where each node runs; default every node on loopback with reserved ports. */
  placement?: NodePlacement;
}

/**
 * Puts nodes on hosts: the address a node binds and is dialled at, its ports, and the command
 * prefix that runs it there (e.g. `ip netns exec <ns>`; cluster/netns.ts). The prefix must exec
 * the node (keep its pid), so that signals reach the node itself.
 */
export interface NodePlacement {
  address(id: string): string;
  ports(id: string): Promise<{ peerPort: number; clientPort: number }>;
  commandPrefix(id: string): string[];
}

const loopbackPlacement: NodePlacement = {
  address: () => LOOPBACK,
  ports: async () => ({ peerPort: await freePort(), clientPort: await freePort() }),
  commandPrefix: () => [],
};

export interface LocalNode {
  id: string;
  address: string;
  peerPort: number;
  clientPort: number;
  dataDir: string;
  logPath: string;
  clientUrl: string;
  process: ChildProcess | undefined;
}

const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

/** The repository root: the nearest ancestor of this file holding package.json. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error("cannot find the repository root");
    dir = parent;
  }
  return dir;
}

/** A TCP port on loopback for a node to bind, reserved below the ephemeral range so that no
 *  other process is given it before the node binds (cluster/ports.ts). */
export async function freePort(): Promise<number> {
  return reservePort(LOOPBACK);
}

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

export class LocalCluster extends KvClusterBase<LocalNode> {
  readonly nodes: LocalNode[];
  readonly clusterToken: string;
  readonly baseDir: string;
  private readonly options: LocalClusterOptions;
  private readonly entry: string;
  private readonly logs = new Map<string, WriteStream>();

  private constructor(
    options: LocalClusterOptions,
    nodes: LocalNode[],
    baseDir: string,
    clusterToken: string,
  ) {
    super();
    this.options = options;
    this.nodes = nodes;
    this.baseDir = baseDir;
    this.clusterToken = clusterToken;
    this.entry = options.entry ?? join(repoRoot(), "dist", "cluster", "kv-node.js");
  }

  /**
   * Allocates ports and dirs and starts every node; resolves when all serve clients. Ports are
   * probed free before the nodes bind them, so a process running beside us may take one in
   * between: such a start (EADDRINUSE) is retried from scratch with fresh ports and dirs.
   */
  static async start(options: LocalClusterOptions = {}): Promise<LocalCluster> {
    for (let attempt = 1; ; attempt++) {
      const baseDir =
        options.baseDir === undefined
          ? undefined
          : attempt === 1
            ? options.baseDir
            : join(options.baseDir, `attempt-${attempt}`);
      try {
        return await LocalCluster.startOnce({ ...options, baseDir });
      } catch (error) {
        if (attempt >= START_ATTEMPTS_MAX || !String((error as Error).message).includes("EADDRINUSE"))
          throw error;
      }
    }
  }

  private static async startOnce(options: LocalClusterOptions): Promise<LocalCluster> {
    const size = options.size ?? 3;
    const baseDir = options.baseDir ?? mkdtempSync(join(tmpdir(), "cfn-cluster-"));
    mkdirSync(baseDir, { recursive: true });
    const nodes: LocalNode[] = [];
    const placement = options.placement ?? loopbackPlacement;
    for (let i = 1; i <= size; i++) {
      const id = `n${i}`;
      const address = placement.address(id);
      const { peerPort, clientPort } = await placement.ports(id);
      nodes.push({
        id,
        address,
        peerPort,
        clientPort,
        dataDir: join(baseDir, id, "data"),
        logPath: join(baseDir, `${id}.log`),
        clientUrl: `ws://${address}:${clientPort}`,
        process: undefined,
      });
    }
    const cluster = new LocalCluster(
      options,
      nodes,
      baseDir,
      options.clusterToken ?? randomBytes(16).toString("hex"),
    );
    if (!existsSync(cluster.entry))
      throw new Error(`${cluster.entry} is missing: run \`npx tsc -p .\` first`);
    try {
      await Promise.all(nodes.map((node) => cluster.launch(node)));
    } catch (error) {
      await cluster.stop();
      throw error;
    }
    return cluster;
  }

  isRunning(id: string): boolean {
    const child = this.node(id).process;
    return child !== undefined && child.exitCode === null && child.signalCode === null;
  }

  protected override mayAnswer(id: string): boolean {
    return this.isRunning(id);
  }

  async waitForLeader(timeoutMs = 15_000, except?: string): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const leader = await this.leader();
      if (leader !== undefined && leader !== except) return leader;
      await sleep(20);
    }
    throw new Error(
      `no leader${except ? ` other than ${except}` : ""} within ${timeoutMs} ms (logs in ${this.baseDir})`,
    );
  }

  /** Sends `signal` (default SIGKILL) and waits for the process to exit. */
  async kill(id: string, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const child = this.node(id).process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((done) => child.once("exit", () => done()));
    child.kill(signal);
    await exited;
  }

  /** The last `bytes` of each node's log (its stderr), for failure reports. */
  logTails(bytes = 4_000): Record<string, string> {
    return Object.fromEntries(
      this.nodes.map((node) => {
        try {
          return [node.id, readFileSync(node.logPath, "utf8").slice(-bytes)];
        } catch {
          return [node.id, ""];
        }
      }),
    );
  }

  /** SIGSTOP: the node stays alive but silent (its peers time it out), until resume(). */
  pause(id: string): void {
    if (this.isRunning(id)) this.node(id).process?.kill("SIGSTOP");
  }

  /** SIGCONT after pause(). */
  resume(id: string): void {
    if (this.isRunning(id)) this.node(id).process?.kill("SIGCONT");
  }

  /** Starts a stopped node again with the same id, ports and data dir. */
  async restart(id: string): Promise<void> {
    const node = this.node(id);
    if (this.isRunning(id)) throw new Error(`node ${id} is still running`);
    await this.launch(node);
  }

  /** Stops every node (SIGTERM, SIGKILL after 5 s) and removes the base dir unless kept. */
  async stop(): Promise<void> {
    this.closeStatusClient();
    await Promise.all(
      this.nodes.map(async (node) => {
        const child = node.process;
        if (!child || child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise<void>((done) => child.once("exit", () => done()));
        child.kill("SIGCONT"); // a paused node would never handle the SIGTERM
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
        await exited;
        clearTimeout(timer);
      }),
    );
    for (const log of this.logs.values()) log.end();
    const keep = this.options.keepBaseDir ?? process.env.CFN_KEEP_CLUSTER === "1";
    if (!keep && !this.options.baseDir) rmSync(this.baseDir, { recursive: true, force: true });
  }

  private launch(node: LocalNode): Promise<void> {
    const peers = this.nodes.map((n) => `${n.id}=${n.address}:${n.peerPort}`).join(",");
    const clients = this.nodes.map((n) => `${n.id}=${n.address}:${n.clientPort}`).join(",");
    const prefix = (this.options.placement ?? loopbackPlacement).commandPrefix(node.id);
    const args = [
      ...prefix.slice(1),
      ...(prefix.length > 0 ? [process.execPath] : []),
      ...(this.options.execArgv ?? []),
      this.entry,
      "--id",
      node.id,
      "--peers",
      peers,
      "--client-addrs",
      clients,
      "--data-dir",
      node.dataDir,
      "--log-level",
      this.options.logLevel ?? "info",
      "--listen-host",
      node.address,
      ...(this.options.nodeArgs ?? []),
    ];
    mkdirSync(dirname(node.dataDir), { recursive: true });
    let log = this.logs.get(node.id);
    if (!log) {
      log = createWriteStream(node.logPath, { flags: "a" });
      this.logs.set(node.id, log);
    }
    const child = spawn(prefix[0] ?? process.execPath, args, {
      env: { ...process.env, CFN_CLUSTER_TOKEN: this.clusterToken },
      stdio: ["ignore", "pipe", "pipe"],
      cwd: this.baseDir,
    });
    node.process = child;
    live.add(child);
    child.once("exit", () => live.delete(child));
    child.stderr?.pipe(log, { end: false });
    const timeoutMs = this.options.startTimeoutMs ?? 15_000;
    return new Promise<void>((ready, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`node ${node.id} did not start within ${timeoutMs} ms (log ${node.logPath})`)),
        timeoutMs,
      );
      const lines = createInterface({ input: child.stdout! });
      lines.on("line", (line) => {
        if (line.includes('"event":"ready"')) {
          clearTimeout(timer);
          ready();
        }
      });
      let stderrTail = "";
      child.stderr?.on("data", (chunk: Buffer) => {
        stderrTail = (stderrTail + chunk.toString("utf8")).slice(-2000);
      });
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        reject(
          new Error(
            `node ${node.id} exited during start (code ${code}, signal ${signal}); its last stderr:\n${stderrTail}`,
          ),
        );
      });
    });
  }
}
