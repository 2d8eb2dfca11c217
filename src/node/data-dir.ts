// A node's data dir identity: `<dataDir>/node.json` says which cluster and node it belongs to, the
// member addresses last known, and — once the node was removed — when, and how much of its spool
// no member took (docs/NODE.md, "Data dir").

import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CfnError } from "../errors.js";

/** What a data dir records about its owner (and the last known member addresses). */
export interface DataDirIdentity {
  clusterId: string;
  nodeId: string;
  members: Record<string, { peerUrl: string; apiUrl: string }>;
  /** Set once this node applied (or learnt) its own removal: the data dir is refused from then on. */
  removed?: { atMs: number; applied: number; spooled: number };
}

/**
 * The data dir's identity, or undefined for a new one (no node.json). CFN_ERR_DATA_DIR_FOREIGN
 * when it is unreadable or belongs to another cluster or node.
 */
export function readDataDirIdentity(
  dataDir: string,
  clusterId: string,
  nodeId: string,
): DataDirIdentity | undefined {
  let stored: DataDirIdentity;
  try {
    stored = JSON.parse(readFileSync(join(dataDir, "node.json"), "utf8")) as DataDirIdentity;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new CfnError(
      "CFN_ERR_DATA_DIR_FOREIGN",
      `data dir ${dataDir} has an unreadable node.json: ${String(error)}`,
    );
  }
  if (stored?.clusterId !== clusterId || stored.nodeId !== nodeId) {
    throw new CfnError(
      "CFN_ERR_DATA_DIR_FOREIGN",
      `data dir ${dataDir} belongs to cluster "${stored?.clusterId}" node "${stored?.nodeId}", ` +
        `not cluster "${clusterId}" node "${nodeId}"; point this node at its own data dir`,
      {
        stored: { clusterId: stored?.clusterId, nodeId: stored?.nodeId },
        expected: { clusterId, nodeId },
      },
    );
  }
  return { ...stored, members: stored.members ?? {} };
}

/** Replaces node.json atomically (write, then rename). */
export function writeDataDirIdentity(dataDir: string, identity: DataDirIdentity): void {
  const path = join(dataDir, "node.json");
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, `${JSON.stringify(identity, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, path);
}
