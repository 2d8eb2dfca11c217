// One face for the clusters a chaos scenario runs on, so that one scenario definition runs on
// every backend:
//   processes   KV node processes on loopback (cluster/local.ts): kill and pause only
//   netns       KV node processes, each on its own host in a network namespace (cluster/netns.ts):
//               kill, pause, partitions, degraded links (root only)
//   containers  KV nodes in Docker containers (cluster/containers.ts): kill, pause, partitions
// A scenario names the faults it needs; a backend that lacks one is reported, not faked.

import { ContainerCluster, dockerUnavailableReason } from "../cluster/containers.js";
import type { KvClusterClient } from "../cluster/kv-client.js";
import type { KvNodeStatus } from "../cluster/kv-protocol.js";
import { LocalCluster } from "../cluster/local.js";
import {
  type LinkDegradation,
  NetnsHosts,
  netnsPlacement,
  netnsUnavailableReason,
} from "../cluster/netns.js";

export const BACKENDS = ["processes", "netns", "containers"] as const;
export type BackendName = (typeof BACKENDS)[number];
export type Fault = "kill" | "pause" | "partition" | "link";

export interface ChaosCluster {
  readonly backend: BackendName;
  readonly nodeIds: string[];
  readonly faults: ReadonlySet<Fault>;
  client(options: { requestTimeoutMs?: number }): KvClusterClient;
  status(id: string, digest?: boolean): Promise<KvNodeStatus | undefined>;
  leader(): Promise<string | undefined>;
  /** SIGKILL (or `docker kill`); resolves once the node is gone. */
  kill(id: string): Promise<void>;
  restart(id: string): Promise<void>;
  pause(id: string): Promise<void>;
  resume(id: string): Promise<void>;
  /** Cuts every link between `id` and the other nodes (the client still reaches it). */
  isolate(id: string): Promise<void>;
  degradeLink(
    a: string,
    b: string,
    wanted: { delayMs: number; lossPercent: number },
  ): Promise<LinkDegradation>;
  /** Undoes every partition, degraded link and pause. */
  heal(): Promise<void>;
  /** Where the cluster runs (addresses, subnet, image), for the report. */
  describe(): Record<string, unknown>;
  /** Last lines of each node's log, for a failure report. */
  logTails(): Record<string, string>;
  stop(): Promise<void>;
}

/** The faults each backend can inject (containers: tc would need NET_ADMIN and tc in the image;
 *  the netns backend covers degraded links). */
export const BACKEND_FAULTS: Record<BackendName, ReadonlySet<Fault>> = {
  processes: new Set<Fault>(["kill", "pause"]),
  netns: new Set<Fault>(["kill", "pause", "partition", "link"]),
  containers: new Set<Fault>(["kill", "pause", "partition"]),
};

/** Why `backend` cannot run here, or undefined when it can. */
export function backendUnavailableReason(backend: BackendName): string | undefined {
  if (backend === "netns") return netnsUnavailableReason();
  if (backend === "containers") return dockerUnavailableReason();
  return undefined;
}

/** The most realistic backend that runs here without Docker: netns as root, else processes. */
export function localBackend(): BackendName {
  return netnsUnavailableReason() === undefined ? "netns" : "processes";
}

const nodeIndex = (id: string) => Number(id.replace(/^n/, ""));

function unsupported(backend: BackendName, fault: Fault): never {
  throw new Error(`the ${backend} backend cannot inject "${fault}" faults`);
}

/** What LocalCluster and ContainerCluster both offer, passed straight through. */
interface KvCluster {
  nodes: { id: string }[];
  client(options: { requestTimeoutMs?: number }): KvClusterClient;
  status(id: string, digest?: boolean): Promise<KvNodeStatus | undefined>;
  leader(): Promise<string | undefined>;
}

abstract class KvChaosCluster<C extends KvCluster> {
  constructor(protected readonly cluster: C) {}

  get nodeIds(): string[] {
    return this.cluster.nodes.map((node) => node.id);
  }
  client(options: { requestTimeoutMs?: number }): KvClusterClient {
    return this.cluster.client(options);
  }
  status(id: string, digest = false) {
    return this.cluster.status(id, digest);
  }
  leader() {
    return this.cluster.leader();
  }
}

/** A LocalCluster's face; with `hosts`, its nodes live on network-namespace hosts. */
class ProcessChaosCluster extends KvChaosCluster<LocalCluster> implements ChaosCluster {
  readonly backend: BackendName;
  readonly faults: ReadonlySet<Fault>;
  private paused = new Set<string>();

  constructor(
    cluster: LocalCluster,
    private readonly hosts: NetnsHosts | undefined,
  ) {
    super(cluster);
    this.backend = hosts ? "netns" : "processes";
    this.faults = BACKEND_FAULTS[this.backend];
  }

  kill(id: string) {
    this.paused.delete(id);
    return this.cluster.kill(id);
  }
  restart(id: string) {
    return this.cluster.restart(id);
  }
  async pause(id: string) {
    this.cluster.pause(id);
    this.paused.add(id);
  }
  async resume(id: string) {
    this.cluster.resume(id);
    this.paused.delete(id);
  }
  async isolate(id: string) {
    if (!this.hosts) unsupported(this.backend, "partition");
    this.hosts.isolate(nodeIndex(id));
  }
  async degradeLink(a: string, b: string, wanted: { delayMs: number; lossPercent: number }) {
    if (!this.hosts) unsupported(this.backend, "link");
    return this.hosts.degradeLink(nodeIndex(a), nodeIndex(b), wanted);
  }
  async heal() {
    this.hosts?.heal();
    for (const id of this.paused) this.cluster.resume(id);
    this.paused.clear();
  }
  describe() {
    return {
      nodes: Object.fromEntries(
        this.cluster.nodes.map((node) => [node.id, `${node.address}:${node.peerPort}`]),
      ),
      ...(this.hosts
        ? { subnet: `10.77.${this.hosts.subnet}.0/24`, namespaces: this.hosts.hosts.map((h) => h.namespace) }
        : {}),
      baseDir: this.cluster.baseDir,
    };
  }
  logTails() {
    return this.cluster.logTails();
  }
  async stop() {
    try {
      await this.cluster.stop();
    } finally {
      this.hosts?.destroy();
    }
  }
}

class ContainerChaosCluster extends KvChaosCluster<ContainerCluster> implements ChaosCluster {
  readonly backend = "containers" as const;
  readonly faults = BACKEND_FAULTS.containers;

  async kill(id: string) {
    this.cluster.kill(id);
  }
  async restart(id: string) {
    this.cluster.restart(id);
  }
  async pause(id: string) {
    this.cluster.pause(id);
  }
  async resume(id: string) {
    this.cluster.resume(id);
  }
  async isolate(id: string) {
    this.cluster.isolate(id);
  }
  degradeLink(): Promise<LinkDegradation> {
    unsupported(this.backend, "link");
  }
  async heal() {
    this.cluster.heal();
  }
  describe() {
    return this.cluster.describe();
  }
  logTails() {
    return Object.fromEntries(this.nodeIds.map((id) => [id, this.cluster.logs(id)]));
  }
  stop() {
    return this.cluster.stop();
  }
}

export interface OpenOptions {
  size: number;
  logLevel?: string;
  /** Extra kv-node flags (process backends), e.g. Raft timing. */
  nodeArgs?: string[];
}

/** Starts a cluster on `backend`; throws with the reason when the backend cannot run here. */
export async function openChaosCluster(backend: BackendName, options: OpenOptions): Promise<ChaosCluster> {
  const reason = backendUnavailableReason(backend);
  if (reason) throw new Error(`backend ${backend} is unavailable: ${reason}`);
  const logLevel = options.logLevel ?? "warn";
  if (backend === "containers")
    return new ContainerChaosCluster(await ContainerCluster.start({ size: options.size, logLevel }));
  const hosts = backend === "netns" ? NetnsHosts.create(options.size) : undefined;
  try {
    const cluster = await LocalCluster.start({
      size: options.size,
      logLevel,
      nodeArgs: options.nodeArgs,
      placement: hosts ? netnsPlacement(hosts) : undefined,
    });
    return new ProcessChaosCluster(cluster, hosts);
  } catch (error) {
    hosts?.destroy();
    throw error;
  }
}
