// A node's data dir identity: `<dataDir>/node.json` says which cluster and node it belongs to, the
// member addresses last known, and — once the node was removed — when, and how much of its spool
// no member took (docs/NODE.md, "Data dir").

import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CfnError } from "../errors.js";
import { causeChain } from "../storage/level-open.js";

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

/**
 * Creates the data dir (with its parents) or accepts the directory that is there. CFN_ERR_STORAGE
 * naming the path when it cannot be: a file there or above it, no permission, a read-only or full
 * file system.
 */
export function createDataDir(dataDir: string): void {
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === "EEXIST" || code === "ENOTDIR"
        ? "it, or a directory above it, is a file, not a directory"
        : causeChain(error);
    throw new CfnError(
      "CFN_ERR_STORAGE",
      `data dir ${dataDir} cannot be created: ${why}; point --data-dir (node.dataDir) at a directory this user may write`,
      { path: dataDir, cause: error },
    );
  }
}

/**
 * The parts of a data dir every start opens before it writes node.json (the Raft log, the delivery
 * spool; LevelDB writes CURRENT when it creates one). The inbox mirror (persistence), the audit log
 * (audit on) and the delivery ledger (newer than node.json) may be created by a later start, so a
 * data dir is not refused without them.
 */
const DATA_DIR_PARTS_REQUIRED = [
  {
    dir: "raft",
    lost: "its Raft log and vote are gone: started as the same member it could vote twice in a term, and its routing state is lost",
  },
  { dir: "spool", lost: "the messages it had spooled for other nodes are gone" },
] as const;

/**
 * A data dir with a node.json has every required part (DATA_DIR_PARTS_REQUIRED): a part removed
 * since would otherwise be recreated empty without a word. CFN_ERR_STORAGE naming what is missing.
 */
export function checkDataDirComplete(dataDir: string, nodeId: string): void {
  const missing = DATA_DIR_PARTS_REQUIRED.filter((part) => !existsSync(join(dataDir, part.dir, "CURRENT")));
  if (missing.length === 0) return;
  const dirs = missing.map((part) => `${part.dir}/`);
  throw new CfnError(
    "CFN_ERR_STORAGE",
    `data dir ${dataDir} has node.json (node "${nodeId}" started on it before) but no ${dirs.join(" and no ")}: ` +
      `${missing.map((part) => part.lost).join("; ")}. It is not started: remove the member from the cluster ` +
      `(\`cfn cluster leave ${nodeId}\` through a live member), wipe this data dir and start the node with --join ` +
      `to come back as a new member (docs/RUNBOOKS.md "A data dir with missing parts")`,
    { path: dataDir, missing: dirs },
  );
}

/** Replaces node.json atomically (write, then rename). CFN_ERR_STORAGE when it cannot be written. */
export function writeDataDirIdentity(dataDir: string, identity: DataDirIdentity): void {
  const path = join(dataDir, "node.json");
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    writeFileSync(tmp, `${JSON.stringify(identity, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, path);
  } catch (error) {
    try {
      rmSync(tmp, { force: true });
    } catch {
      // a read-only file system: nothing was written either
    }
    throw new CfnError("CFN_ERR_STORAGE", `cannot write ${path}: ${causeChain(error)}`, {
      path,
      cause: error,
    });
  }
}
