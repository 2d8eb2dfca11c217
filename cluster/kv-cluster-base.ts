// What every KV test cluster offers whatever runs its nodes (local processes, netns hosts,
// containers): node lookup and clients over the nodes' client URLs.

import { KvClusterClient } from "./kv-client.js";
import type { KvNodeStatus } from "./kv-protocol.js";

/** A status request waits this long: a paused or cut-off node must not stall leader polling
 *  (with the client default, 2 s, each poll waited for it and elections looked seconds long). */
const STATUS_ATTEMPT_MS = 300;

/** The leader a majority of a cluster of `size` agree on (same id and term), given the statuses
 *  of the nodes that answered (undefined for those that did not), or undefined. */
export function agreedLeader(answers: (KvNodeStatus | undefined)[], size: number): string | undefined {
  const statuses = answers.filter((status) => status !== undefined);
  const leaders = statuses.filter((status) => status.role === "leader");
  if (leaders.length === 0) return undefined;
  const newest = leaders.reduce((a, b) => (b.term > a.term ? b : a));
  const agreeing = statuses.filter(
    (status) => status.leader === newest.id && status.term === newest.term,
  ).length;
  return agreeing > size / 2 ? newest.id : undefined;
}

export interface KvClusterNodeRef {
  id: string;
  clientUrl: string;
}

export abstract class KvClusterBase<N extends KvClusterNodeRef> {
  abstract readonly nodes: N[];
  abstract readonly clusterToken: string;
  /** Made on first use, once every node is known (a client's node list is fixed at construction). */
  private statusClientMade: KvClusterClient | undefined;

  /** Whether node `id` can answer at all (a stopped local process cannot); default yes. */
  protected mayAnswer(_id: string): boolean {
    return true;
  }

  /** Status of one node, or undefined when it does not answer. `digest` adds the state digest
   *  (hashes the whole state). */
  async status(id: string, digest = false): Promise<KvNodeStatus | undefined> {
    if (!this.mayAnswer(id)) return undefined;
    this.statusClientMade ??= this.client({ requestTimeoutMs: 1_000, attemptTimeoutMs: STATUS_ATTEMPT_MS });
    try {
      return await this.statusClientMade.status(id, digest);
    } catch {
      return undefined;
    }
  }

  /** The leader as the answering nodes see it: one a majority of them name, who says it leads. */
  async leader(): Promise<string | undefined> {
    const statuses = await Promise.all(this.nodes.map((node) => this.status(node.id)));
    return agreedLeader(statuses, this.nodes.length);
  }

  /** Closes the status client (part of a subclass's stop). */
  protected closeStatusClient(): void {
    this.statusClientMade?.close();
    this.statusClientMade = undefined;
  }

  /** Node id → client URL, for KvClusterClient. */
  get clientUrls(): Record<string, string> {
    return Object.fromEntries(this.nodes.map((node) => [node.id, node.clientUrl]));
  }

  /** A new client of this cluster (close it when done). */
  client(
    options: { requestTimeoutMs?: number; retryDelayMs?: number; attemptTimeoutMs?: number } = {},
  ): KvClusterClient {
    return new KvClusterClient({ urls: this.clientUrls, clusterToken: this.clusterToken, ...options });
  }

  node(id: string): N {
    const node = this.nodes.find((candidate) => candidate.id === id);
    if (!node) throw new Error(`no node ${id}`);
    return node;
  }
}
