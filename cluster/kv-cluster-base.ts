// What every KV test cluster offers whatever runs its nodes (local processes, netns hosts,
// containers): node lookup and clients over the nodes' client URLs.

import { KvClusterClient } from "./kv-client.js";

export interface KvClusterNodeRef {
  id: string;
  clientUrl: string;
}

export abstract class KvClusterBase<N extends KvClusterNodeRef> {
  abstract readonly nodes: N[];
  abstract readonly clusterToken: string;

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
