// Cluster files (cluster/*.yaml): one description of a cluster that every founding node reads
// with its own --id. Validated with zod; problems fail with CFN_ERR_CONFIG_FILE / _INVALID.
//
//   clusterId: demo
//   token: change-me-to-a-long-secret      # or tokenEnv: CFN_CLUSTER_TOKEN
//   dataRoot: ./cfn-data                   # each node's data dir is <dataRoot>/<id>
//   node: { nodeDownAfterMs: 800 }         # node settings shared by all (node-config.ts)
//   nodes:
//     - { id: n1, peer: 127.0.0.1:7101, api: 127.0.0.1:7201 }
//     - { id: n2, peer: 127.0.0.1:7102, api: 127.0.0.1:7202 }

import { readFileSync } from "node:fs";
import { isAbsolute, join } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { CfnError } from "../errors.js";

const hostPort = z.string().regex(/^[^\s:]+:[0-9]{1,5}$/, "host:port");

export const clusterFileSchema = z
  .object({
    clusterId: z.string().regex(/^[A-Za-z0-9._-]{1,128}$/),
    token: z.string().min(16).optional(),
    tokenEnv: z.string().optional(),
    dataRoot: z.string().default("./cfn-data"),
    node: z.record(z.string(), z.unknown()).default({}),
    nodes: z
      .array(
        z
          .object({
            id: z.string().regex(/^[A-Za-z0-9._-]{1,128}$/),
            peer: hostPort,
            api: hostPort,
            dataDir: z.string().optional(),
          })
          .strict(),
      )
      .min(1),
  })
  .strict();

export type ClusterFile = z.infer<typeof clusterFileSchema>;

export function readClusterFile(path: string): ClusterFile {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new CfnError(
      "CFN_ERR_CONFIG_FILE",
      `cannot read cluster file ${path}: ${(error as Error).message}`,
    );
  }
  let value: unknown;
  try {
    value = parseYaml(text);
  } catch (error) {
    throw new CfnError(
      "CFN_ERR_CONFIG_FILE",
      `cluster file ${path} is not valid YAML: ${(error as Error).message}`,
    );
  }
  const parsed = clusterFileSchema.safeParse(value);
  if (!parsed.success) {
    const problems = parsed.error.issues.map(
      (issue) => `${issue.path.join(".") || "(root)"}: ${issue.message}`,
    );
    throw new CfnError("CFN_ERR_CONFIG_INVALID", `cluster file ${path}: ${problems.join("; ")}`, {
      problems,
    });
  }
  const ids = parsed.data.nodes.map((node) => node.id);
  if (new Set(ids).size !== ids.length)
    throw new CfnError("CFN_ERR_CONFIG_INVALID", `cluster file ${path}: node ids must be unique`);
  return parsed.data;
}

/** The node settings (input of parseNodeConfig) for node `id` of a cluster file. */
export function nodeSettingsFromClusterFile(
  file: ClusterFile,
  id: string,
  filePath: string,
  env: NodeJS.ProcessEnv = process.env,
): Record<string, unknown> {
  const self = file.nodes.find((node) => node.id === id);
  if (!self) {
    throw new CfnError(
      "CFN_ERR_CONFIG_INVALID",
      `node ${id} is not in the cluster file (nodes: ${file.nodes.map((n) => n.id).join(", ")})`,
    );
  }
  const token = file.token ?? (file.tokenEnv ? env[file.tokenEnv] : undefined);
  // Relative data roots are taken from the working directory, like every other path flag.
  const root = isAbsolute(file.dataRoot) ? file.dataRoot : join(process.cwd(), file.dataRoot);
  void filePath;
  const peers: Record<string, { peerUrl: string; apiUrl: string }> = {};
  for (const node of file.nodes)
    if (node.id !== id) peers[node.id] = { peerUrl: `ws://${node.peer}`, apiUrl: `http://${node.api}` };
  return {
    ...file.node,
    id,
    clusterId: file.clusterId,
    ...(token ? { clusterToken: token } : {}),
    dataDir: self.dataDir ?? join(root, id),
    peerListen: self.peer,
    apiListen: self.api,
    peers,
  };
}
