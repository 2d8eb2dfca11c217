// KV nodes (cluster/kv-node.ts) in Docker containers started with testcontainers, one container
// per host on a user-defined network, for chaos runs: faults are `docker kill` (SIGKILL),
// `docker pause` (cgroup freezer), `docker network disconnect` (the host leaves the network).
//
// There is no registry here, so the image is imported from a root filesystem we assemble
// (cluster/image/node-image.ts) and the repository is bind-mounted read-only at /app. Each node
// gets a fixed address on a network we create with its own subnet (10.78.X.0/24), so a node keeps
// its address across kill/start and reconnect, and the chaos client (in the root namespace) dials
// it directly over Docker's bridge. Ryuk (the reaper container) is off: it would have to be pulled
// from a registry; stop() and a process-exit hook remove containers and network instead.

import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { GenericContainer, type StartedTestContainer, Wait } from "testcontainers";
import { ensureNodeImage } from "./image/node-image.js";
import { KvClusterBase } from "./kv-cluster-base.js";
import { repoRoot } from "./local.js";

process.env.TESTCONTAINERS_RYUK_DISABLED = "true";

const PEER_PORT = 7001;
const CLIENT_PORT = 7002;
/** Subnets tried for the network before giving up (another network may hold one). */
const SUBNET_ATTEMPTS_MAX = 20;
/** Host addresses start here: Docker gives .1 to the bridge (the gateway). */
const HOST_OFFSET = 10;

export interface ContainerNode {
  id: string;
  address: string;
  clientUrl: string;
  container: StartedTestContainer;
}

function docker(args: string[]): string {
  return execFileSync("docker", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
}

/** Why Docker cannot be used here, or undefined when an engine answers. */
export function dockerUnavailableReason(): string | undefined {
  try {
    docker(["version", "--format", "{{.Server.Version}}"]);
    return undefined;
  } catch (error) {
    const stderr = String((error as { stderr?: string }).stderr ?? (error as Error).message);
    return `no Docker engine answers: ${stderr.trim().split("\n")[0]}`;
  }
}

/** A container with a fixed address on a network (testcontainers has no option for that). */
class AddressedContainer extends GenericContainer {
  withAddress(network: string, address: string): this {
    this.withNetworkMode(network);
    this.createOpts.NetworkingConfig = {
      EndpointsConfig: { [network]: { IPAMConfig: { IPv4Address: address } } },
    };
    return this;
  }
}

const liveClusters = new Set<ContainerCluster>();
process.once("exit", () => {
  for (const cluster of liveClusters) cluster.removeNow();
});

/** A status request waits this long: a paused or cut-off node must not stall leader polling
 *  (with the client default, 2 s, each poll waited for it and elections looked seconds long). */

export class ContainerCluster extends KvClusterBase<ContainerNode> {
  readonly nodes: ContainerNode[] = [];
  readonly network: string;
  readonly image: string;
  readonly clusterToken: string;
  private readonly subnet: string;

  private constructor(network: string, subnet: string, image: string, nodes: ContainerNode[], token: string) {
    super();
    this.network = network;
    this.subnet = subnet;
    this.image = image;
    this.nodes = nodes;
    this.clusterToken = token;
  }

  /** Builds the image if needed, creates the network, starts `size` nodes, waits until all serve. */
  static async start(options: {
    size: number;
    logLevel?: string;
    startTimeoutMs?: number;
  }): Promise<ContainerCluster> {
    const image = ensureNodeImage(repoRoot());
    const { network, subnet } = createNetwork();
    const ids = Array.from({ length: options.size }, (_, i) => `n${i + 1}`);
    const addressOf = (i: number) => `${subnet}.${HOST_OFFSET + i + 1}`;
    const peers = ids.map((id, i) => `${id}=${addressOf(i)}:${PEER_PORT}`).join(",");
    const clients = ids.map((id, i) => `${id}=${addressOf(i)}:${CLIENT_PORT}`).join(",");
    const token = randomBytes(16).toString("hex");
    const started: ContainerNode[] = [];
    const cluster = new ContainerCluster(network, subnet, image, started, token);
    liveClusters.add(cluster);
    try {
      await Promise.all(
        ids.map(async (id, i) => {
          const container = await new AddressedContainer(image)
            .withAddress(network, addressOf(i))
            .withName(`${network}-${id}`)
            .withBindMounts([{ source: repoRoot(), target: "/app", mode: "ro" }])
            .withEnvironment({ CFN_CLUSTER_TOKEN: token })
            .withCommand([
              ...["node", "/app/dist/cluster/kv-node.js", "--id", id, "--peers", peers],
              ...["--client-addrs", clients, "--data-dir", `/data/${id}`, "--listen-host", addressOf(i)],
              ...["--log-level", options.logLevel ?? "warn"],
            ])
            .withWaitStrategy(Wait.forLogMessage(/"event":"ready"/))
            .withStartupTimeout(options.startTimeoutMs ?? 30_000)
            .start();
          started.push({
            id,
            address: addressOf(i),
            clientUrl: `ws://${addressOf(i)}:${CLIENT_PORT}`,
            container,
          });
        }),
      );
      started.sort((a, b) => (a.id < b.id ? -1 : 1));
    } catch (error) {
      await cluster.stop();
      throw error;
    }
    return cluster;
  }

  /** `docker kill` (SIGKILL to the node, the container stops; its filesystem stays). */
  kill(id: string): void {
    docker(["kill", this.node(id).container.getId()]);
  }

  /** `docker start` of a killed node: same container, data dir and address. */
  restart(id: string): void {
    docker(["start", this.node(id).container.getId()]);
  }

  pause(id: string): void {
    docker(["pause", this.node(id).container.getId()]);
  }

  resume(id: string): void {
    docker(["unpause", this.node(id).container.getId()]);
  }

  /** `docker network disconnect`: the host loses its interface, so every link of it is cut. */
  isolate(id: string): void {
    docker(["network", "disconnect", this.network, this.node(id).container.getId()]);
  }

  /** Reconnects isolated nodes (same address) and unpauses paused ones. */
  heal(): void {
    for (const node of this.nodes) {
      const state = docker([
        "inspect",
        "--format",
        "{{.State.Paused}} {{json .NetworkSettings.Networks}}",
        node.container.getId(),
      ]);
      if (state.startsWith("true")) this.resume(node.id);
      if (!state.includes(`"${this.network}"`))
        docker(["network", "connect", "--ip", node.address, this.network, node.container.getId()]);
    }
  }

  /** The container's logs (stdout and stderr), for a failure report. */
  logs(id: string): string {
    try {
      return execFileSync("docker", ["logs", "--tail", "200", this.node(id).container.getId()], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
      });
    } catch {
      return "";
    }
  }

  describe(): Record<string, unknown> {
    return { network: this.network, subnet: `${this.subnet}.0/24`, image: this.image };
  }

  async stop(): Promise<void> {
    this.closeStatusClient();
    this.removeNow();
  }

  /** Removes the containers and the network, synchronously (also used at process exit). */
  removeNow(): void {
    if (!liveClusters.delete(this)) return;
    const names = docker(["ps", "-aq", "--filter", `name=^${this.network}-`])
      .split("\n")
      .filter(Boolean);
    if (names.length > 0) {
      try {
        docker(["rm", "-f", "-v", ...names]);
      } catch {
        // already gone
      }
    }
    try {
      docker(["network", "rm", this.network]);
    } catch {
      // already gone
    }
  }
}

/** A user-defined bridge network on a free 10.78.X.0/24. */
function createNetwork(): { network: string; subnet: string } {
  const network = `cfn-chaos-${randomBytes(4).toString("hex")}`;
  let lastError = "";
  for (let attempt = 0; attempt < SUBNET_ATTEMPTS_MAX; attempt++) {
    const subnet = `10.78.${1 + Math.floor(Math.random() * 250)}`;
    try {
      docker(["network", "create", "--subnet", `${subnet}.0/24`, network]);
      return { network, subnet };
    } catch (error) {
      lastError = String((error as { stderr?: string }).stderr ?? error);
    }
  }
  throw new Error(`could not create a Docker network: ${lastError}`);
}
