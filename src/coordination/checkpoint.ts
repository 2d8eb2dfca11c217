// Checkpoints of round state on local files: <dir>/<roundId>/<name>.json, each written to a temp
// file and renamed (a crash leaves the old or the new version, never half of one). The master and
// every coordinator write theirs; a restarted one resumes from it. The cluster node will later
// replicate the same records through Raft; the interface is the seam (CheckpointStore).

import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** Where round state survives a process crash. */
export interface CheckpointStore {
  write(roundId: string, name: string, value: unknown): void;
  read<T>(roundId: string, name: string): T | undefined;
  /** Round ids with at least one checkpoint. */
  rounds(): string[];
  /** Names written for a round. */
  names(roundId: string): string[];
  /** Removes a finished round's checkpoints. */
  remove(roundId: string): void;
  has(roundId: string): boolean;
  /**
   * Replicated stores only (RaftCheckpointStore): true once the round is known to be removed — a
   * tombstone in the replicated state, or a write refused for it. A removed round is never
   * written again, and whoever still runs it abandons it.
   */
  isRemoved?(roundId: string): boolean;
  /**
   * Replicated stores only: resolves once a write of the record proposed so far was accepted by
   * the log ("committed"), refused because the round was removed ("removed"), refused for another
   * reason ("rejected": over a limit on every replica), or the store closed ("closed").
   */
  committed?(roundId: string, name: string): Promise<CheckpointCommit>;
}

/** What became of a write in a replicated store (CheckpointStore.committed). */
export type CheckpointCommit = "committed" | "rejected" | "removed" | "closed";

const SAFE = /^[A-Za-z0-9._-]{1,160}$/;

export class FileCheckpointStore implements CheckpointStore {
  readonly dir: string;
  private counter = 0;

  constructor(dir: string) {
    this.dir = dir;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  write(roundId: string, name: string, value: unknown): void {
    const roundDir = this.roundDir(roundId);
    mkdirSync(roundDir, { recursive: true, mode: 0o700 });
    const path = join(roundDir, `${safe(name)}.json`);
    const tmp = join(roundDir, `.${safe(name)}.${process.pid}.${++this.counter}.tmp`);
    writeFileSync(tmp, JSON.stringify(value), { mode: 0o600 });
    renameSync(tmp, path);
  }

  read<T>(roundId: string, name: string): T | undefined {
    try {
      return JSON.parse(readFileSync(join(this.roundDir(roundId), `${safe(name)}.json`), "utf8")) as T;
    } catch {
      return undefined;
    }
  }

  rounds(): string[] {
    try {
      return readdirSync(this.dir)
        .filter((name) => SAFE.test(name))
        .sort();
    } catch {
      return [];
    }
  }

  names(roundId: string): string[] {
    try {
      return readdirSync(this.roundDir(roundId))
        .filter((name) => name.endsWith(".json") && !name.startsWith("."))
        .map((name) => name.slice(0, -5));
    } catch {
      return [];
    }
  }

  has(roundId: string): boolean {
    return this.names(roundId).length > 0;
  }

  remove(roundId: string): void {
    rmSync(this.roundDir(roundId), { recursive: true, force: true });
  }

  private roundDir(roundId: string): string {
    return join(this.dir, safe(roundId));
  }
}

function safe(name: string): string {
  if (!SAFE.test(name)) throw new Error(`invariant violated: unsafe checkpoint name ${JSON.stringify(name)}`);
  return name;
}
