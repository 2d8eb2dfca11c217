// A real single-node cluster in this process (Raft group of one on LevelDB, the HTTP API on
// loopback) with security settings, and a small HTTP client that shows status, body and headers.

import { join } from "node:path";
import { afterEach } from "vitest";
import { freePort } from "../../cluster/node-launcher.js";
import { parseNodeConfig } from "../../src/config/node-schema.js";
import { ClusterNode } from "../../src/node/node.js";
import type { NodeConfig } from "../../src/node/node-config.js";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import type { SecurityConfig } from "../../src/security/config.js";
import { tempRoot } from "../bus/helpers.js";

export const CLUSTER_TOKEN = "security-test-cluster-token-0123";

export interface SecureNodeSpec {
  root: string;
  security?: Partial<SecurityConfig>;
  node?: Partial<NodeConfig>;
}

/** Starts the node and waits until it leads itself and announced its API. */
export async function startSecureNode(spec: SecureNodeSpec): Promise<ClusterNode> {
  const config = parseNodeConfig({
    id: "sec-node",
    clusterId: "cfn-sec",
    clusterToken: CLUSTER_TOKEN,
    dataDir: join(spec.root, "data"),
    peerListen: `127.0.0.1:${await freePort()}`,
    apiListen: `127.0.0.1:${await freePort()}`,
    ...spec.node,
  });
  const node = await ClusterNode.start({
    config,
    bus: { root: join(spec.root, "bus"), name: "sec" },
    security: spec.security,
    logger: silentLogger,
    metrics: new Metrics(),
  });
  const deadline = Date.now() + 15_000;
  while (!node.readiness().ready) {
    if (Date.now() > deadline) throw new Error("single node did not become ready");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return node;
}

export interface Answer {
  status: number;
  body: Record<string, unknown>;
  requestId: string | null;
}

/** One real HTTP request; `token` goes in Authorization: Bearer. */
export async function call(
  node: ClusterNode,
  method: string,
  path: string,
  token?: string,
  body?: unknown,
): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(new URL(path, node.apiUrl), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    parsed = { text };
  }
  return { status: response.status, body: parsed, requestId: response.headers.get("x-request-id") };
}

/** Creates an API token through the API with the cluster token; returns its text and id. */
export async function createToken(
  node: ClusterNode,
  principal: string,
  roles: string[],
): Promise<{ token: string; id: string }> {
  const answer = await call(node, "POST", "/v1/security/tokens", CLUSTER_TOKEN, { principal, roles });
  if (answer.status !== 201)
    throw new Error(`token create failed: ${answer.status} ${JSON.stringify(answer.body)}`);
  return { token: answer.body.token as string, id: answer.body.id as string };
}

/** scratch(): a fresh temp dir, removed after each test of the file that calls this. */
export function scratchRoots(): () => string {
  const cleanups: (() => void)[] = [];
  afterEach(() => {
    for (const cleanup of cleanups.splice(0)) cleanup();
  });
  return () => {
    const temp = tempRoot();
    cleanups.push(temp.cleanup);
    return temp.root;
  };
}
