// Directory layout of a bus (docs/PROTOCOL.md, "Layout"):
//
//   <root>/<name>/bus.conf                       version=1, shards=<n>  (first opener writes it)
//   <root>/<name>/<shard>/<agent>/tmp/           files being written
//   <root>/<name>/<shard>/<agent>/inbox/         queued files
//   <root>/<name>/<shard>/<agent>/claimed/       files a consumer holds
//   <root>/<name>/<shard>/<agent>/dead/          dead letters, each with a <file>.reason
//   <root>/<name>/<shard>/<agent>/heartbeat      liveness mark (its mtime is last-seen)
//
// Every directory is created 0700. Directory existence is cached per agent: a send costs no mkdir.

import {
  existsSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { CfnError } from "../errors.js";
import { shardOf } from "./agent-id.js";

export interface AgentPaths {
  agentId: string;
  shard: number;
  dir: string;
  tmp: string;
  inbox: string;
  claimed: string;
  dead: string;
  heartbeat: string;
}

export const DIRECTORY_MODE = 0o700;
export const FILE_MODE = 0o600;

export class BusLayout {
  readonly base: string;
  readonly shards: number;
  private readonly paths = new Map<string, AgentPaths>();
  private readonly created = new Set<string>();

  constructor(base: string, shards: number) {
    this.base = base;
    this.shards = shards;
  }

  /** Paths of an agent (the id must be validated by the caller). */
  agent(agentId: string): AgentPaths {
    let paths = this.paths.get(agentId);
    if (!paths) {
      const shard = shardOf(agentId, this.shards);
      const dir = join(this.base, String(shard), agentId);
      paths = {
        agentId,
        shard,
        dir,
        tmp: join(dir, "tmp"),
        inbox: join(dir, "inbox"),
        claimed: join(dir, "claimed"),
        dead: join(dir, "dead"),
        heartbeat: join(dir, "heartbeat"),
      };
      if (this.paths.size > 100_000) this.paths.clear();
      this.paths.set(agentId, paths);
    }
    return paths;
  }

  /** Creates the agent's directories unless this process already did; `force` re-checks. */
  ensureAgent(paths: AgentPaths, force = false): void {
    if (!force && this.created.has(paths.agentId)) return;
    const existed = existsSync(paths.dir);
    const made: string[] = [];
    try {
      for (const dir of [paths.tmp, paths.inbox, paths.claimed, paths.dead]) {
        if (mkdirSync(dir, { recursive: true, mode: DIRECTORY_MODE }) !== undefined) made.push(dir);
      }
    } catch (error) {
      // No inodes left: remove what this call made rather than leave a half-made agent. rmdir only
      // removes an empty directory, so nothing a sender renamed in meanwhile is lost.
      const undo = made.reverse();
      if (!existed) undo.push(paths.dir);
      for (const dir of undo) {
        try {
          rmdirSync(dir);
        } catch {}
      }
      throw error;
    }
    if (this.created.size > 100_000) this.created.clear();
    this.created.add(paths.agentId);
  }

  /** Forgets the cached existence of an agent's directories (after they were removed). */
  forgetAgent(agentId: string): void {
    this.created.delete(agentId);
  }
}

/**
 * Creates the bus directory and returns the shard count it was created with: the first opener
 * writes bus.conf without overwriting (link), later openers read it so all processes agree.
 */
export function openBusDirectory(base: string, shards: number, unique: string): number {
  mkdirSync(base, { recursive: true, mode: DIRECTORY_MODE });
  const confPath = join(base, "bus.conf");
  const existing = readShards(confPath);
  if (existing !== undefined) {
    sweepConfTemporaries(base);
    return existing;
  }
  const tmpPath = join(base, `.bus.conf.${unique}`);
  try {
    writeFileSync(tmpPath, `version=1\nshards=${shards}\n`, { mode: FILE_MODE });
    linkSync(tmpPath, confPath);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  } finally {
    // Also when the write failed (a full bus): an empty or partial temporary is never used.
    try {
      unlinkSync(tmpPath);
    } catch {}
  }
  return readShards(confPath) ?? shards;
}

/** A `.bus.conf.<unique>` older than this is one a crashed opener left (it lives microseconds). */
const CONF_TEMPORARY_AGE_MS = 60_000;

/** Removes `.bus.conf.<unique>` temporaries left by openers that crashed before removing them. */
function sweepConfTemporaries(base: string): void {
  let names: string[];
  try {
    names = readdirSync(base);
  } catch {
    return;
  }
  const before = Date.now() - CONF_TEMPORARY_AGE_MS;
  for (const name of names) {
    if (!name.startsWith(".bus.conf.")) continue;
    const path = join(base, name);
    try {
      if (statSync(path).mtimeMs < before) unlinkSync(path);
    } catch {
      // Gone already, or not ours to remove: the next opener tries again.
    }
  }
}

/** The largest shard count a bus.conf may name (bus.shards' own bound). */
const SHARDS_MAX = 4096;

/**
 * The shard count bus.conf fixes; undefined when there is none yet. One that exists and does not
 * say `version=1` and `shards=<1..4096>` is refused: every process must agree on the shards, and
 * falling back to its own setting would strand messages where no receiver looks.
 */
function readShards(confPath: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(confPath, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
  const match = /^shards=([0-9]+)$/m.exec(text);
  const shards = match ? Number(match[1]) : Number.NaN;
  if (/^version=1$/m.test(text) && Number.isInteger(shards) && shards >= 1 && shards <= SHARDS_MAX)
    return shards;
  throw new CfnError(
    "CFN_ERR_CONFIG_INVALID",
    `${confPath} is not a bus.conf this version reads (expected "version=1" and "shards=<1..${SHARDS_MAX}>", found ${JSON.stringify(text.slice(0, 200))}): fix it, or remove the bus directory if nothing is queued in it`,
    { path: confPath },
  );
}
