// Optional message persistence (`node.persistence`): tmpfs inboxes mirrored to disk, so that
// after a whole-host restart (tmpfs emptied) every message that was waiting is put back.
//
// - Messages the node writes into local inboxes from other nodes are mirrored (one synced LevelDB
//   batch per durability round of the receiver, off its write path) before the node acknowledges
//   them to the sender: no window for what was acknowledged. A round copies the inbox and the
//   claimed dir (an agent may have claimed a message before the round ran: until it acknowledges
//   it, a host crash must not lose it), and waits for any sweep write in flight whose files it
//   skipped as already known; a failed write forgets what it carried, so the next round copies it.
// - Messages agents send each other on this host do not pass through the node; a sweep every
//   flushIntervalMs copies new inbox files (window: one sweep interval).
// - The same sweep drops mirror entries whose file left the inbox and the claimed dir
//   (acknowledged by the consumer). Files parked for a full inbox (delivery/park.ts) count as in
//   the inbox: mirrored, kept, and restored into the inbox.
// - At start, every mirrored file absent from its agent's inbox and claimed dir is written back
//   under its original name (maildir discipline: tmp/ then rename), so order is kept — but only
//   when the bus did not outlive the node: after a crash of the node process alone the tmpfs still
//   holds every message, and a mirrored file missing from it was consumed (acknowledged after the
//   last sweep), so putting it back would deliver it twice. The bus dir carries a marker,
//   `mirror-token`, with the mirror's token (random, one per data dir) and the host's boot id,
//   written once a restore finished: present with that token and the current boot id → the bus
//   survived, nothing to restore. (The boot id covers a bus root on a disk, whose marker outlives a
//   power loss that took recent inbox files; where there is no boot id, every start restores.)
//
// - Inbox entries are read as a claim reads them (src/bus/safe-read.ts): a FIFO is never waited
//   on, a symlink never followed, a file larger than the bus reads for its name (messageBytesMax,
//   or N × (messageBytesMax + 64) for a batch of N) never loaded, bytes that are not UTF-8 never
//   decoded into other text. Such an entry is not mirrored —
//   counted in cfn_node_mirror_skipped_files_total and logged once; the receiver that claims it
//   dead-letters it with the reason.
//
// Stored in a LevelDB at <dataDir>/mirror:  m!<agent>!<file prefix P_T_N_UNIQ> → file text,
// and t!token → the token.

import { randomUUID } from "node:crypto";
import { mkdirSync, readdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ClassicLevel } from "classic-level";
import type { Bus } from "../bus/index.js";
import { fileBytesMaxOf, readInboxEntry } from "../bus/safe-read.js";
import { CfnError, isCfnError } from "../errors.js";
import type { Logger } from "../obs/logger.js";
import { deadLetterUnreadable, unreadableReason } from "../security/at-rest.js";
import { PLAINTEXT_CODEC, type SealedRecordCodec } from "../security/record-cipher.js";
import { closeLevel, openLevel } from "../storage/level-open.js";
import { parkDirOf } from "./delivery/park.js";
import { NodeMetrics } from "./node-metrics.js";

type Db = ClassicLevel<string, string>;
type MirrorOp = { type: "put"; key: string; value: string } | { type: "del"; key: string };

export interface InboxMirrorOptions {
  bus: Bus;
  path: string;
  logger: Logger;
  /** Interval of the sweep that mirrors local sends and prunes consumed messages, ms. */
  flushIntervalMs: number;
  /** Agents whose inbox is mirrored: this node's own (not the proxies of remote agents). */
  shouldMirror: (agentId: string) => boolean;
  /** Encryption at rest (security.encryptionKeyFile): seals stored texts; plaintext when absent. */
  codec?: SealedRecordCodec;
  /** The node's metrics; by default those of the bus's registry (the node's, shared). */
  metrics?: NodeMetrics;
}

/** The marker in the bus dir: the bus holds what the mirror restored or saw since (restore()). */
export const MIRROR_MARKER = "mirror-token";
const TOKEN_KEY = "t!token";

/** P_T_N_UNIQ: the part of a queued or claimed name that identifies the file. */
function prefixOf(name: string): string | undefined {
  if (!name.endsWith(".json") || name.startsWith(".")) return undefined; // .<name>: a park file being written
  const fields = name.slice(0, -5).split("_");
  if (fields.length !== 5 && fields.length !== 7) return undefined;
  return fields.slice(0, 4).join("_");
}

export class InboxMirror {
  private readonly options: InboxMirrorOptions;
  private readonly logger: Logger;
  private readonly db: Db;
  private readonly path: string;
  /** Mirrored entries, agent → prefixes (an index of the db). */
  private readonly mirrored = new Map<string, Set<string>>();
  private timer: NodeJS.Timeout | undefined;
  /** Entries not mirrored (not a regular file, oversized), agent → prefixes: logged once, not read again. */
  private readonly skipped = new Map<string, Set<string>>();
  private readonly metrics: NodeMetrics;
  /** Mirror writes in flight: a round that skips a file as known waits for the write carrying it. */
  private readonly writes = new Set<Promise<void>>();
  private sweeping = false;
  private restoreDone = false;
  private survived = false;
  private closed = false;
  /** This data dir's token, written into the bus dir's marker once restored. */
  private readonly token: string;

  private constructor(db: Db, path: string, token: string, options: InboxMirrorOptions) {
    this.db = db;
    this.path = path;
    this.token = token;
    this.options = options;
    this.logger = options.logger.child("mirror");
    this.metrics = options.metrics ?? new NodeMetrics(options.bus.metrics);
  }

  static async open(options: InboxMirrorOptions): Promise<InboxMirror> {
    const { db, path } = await openLevel(options.path, "mirror", "utf8");
    let token: string;
    try {
      token = (await db.get(TOKEN_KEY)) ?? randomUUID();
      await db.put(TOKEN_KEY, token, { sync: true });
    } catch (error) {
      await closeLevel(db, path).catch(() => undefined);
      throw isCfnError(error)
        ? error
        : new CfnError("CFN_ERR_STORAGE", `cannot read mirror ${path}: ${String(error)}`);
    }
    const mirror = new InboxMirror(db, path, token, options);
    for await (const key of db.keys({ gte: "m!", lt: "m!\xff" })) {
      const [, agent, prefix] = key.split("!");
      mirror.index(agent).add(prefix);
    }
    return mirror;
  }

  /**
   * Puts back every mirrored message missing from its inbox; returns how many. Nothing when the
   * bus outlived the node (its marker holds this mirror's token): what is missing was consumed.
   */
  async restore(): Promise<number> {
    const { bus } = this.options;
    const marker = join(bus.dir, MIRROR_MARKER);
    const bootId = readBootId();
    const stamp = `${this.token} ${bootId ?? "no-boot-id"}\n`;
    if (bootId !== undefined && readText(marker) === stamp) {
      // Nothing to put back, but the records must still be readable with this configuration: a
      // record sealed with a key this node lacks, or encryption turned off while sealed records
      // remain, refuses the start (CFN_ERR_KEY_FILE) as after a host restart, not at the next one.
      await this.checkKeys();
      this.logger.info("the bus outlived the node process: nothing to restore", { entries: this.size });
      this.survived = true;
      this.restoreDone = true;
      return 0;
    }
    let restored = 0;
    for (const [agent, prefixes] of this.mirrored) {
      const present = this.presentPrefixes(agent);
      const paths = bus.layout.agent(agent);
      for (const prefix of prefixes) {
        if (present.has(prefix)) continue;
        const key = `m!${agent}!${prefix}`;
        const stored = await this.db.get(key);
        if (stored === undefined) continue;
        bus.layout.ensureAgent(paths, true);
        const name = `${prefix}_0.json`;
        let text: string;
        try {
          text = (this.options.codec ?? PLAINTEXT_CODEC).open(stored, key);
        } catch (error) {
          // Altered on disk or sealed with an unknown key: dead-lettered with the reason, not restored.
          deadLetterUnreadable(paths.dead, agent, name, stored, error, this.logger);
          this.metrics.mirrorUndecryptable.inc();
          prefixes.delete(prefix);
          await this.db.del(key);
          continue;
        }
        const tmp = join(paths.tmp, name);
        writeFileSync(tmp, text, { mode: 0o600 });
        renameSync(tmp, join(paths.inbox, name));
        restored++;
      }
    }
    // Only now: a crash during the restore restores again at the next start (it skips what is back).
    mkdirSync(bus.dir, { recursive: true, mode: 0o700 });
    writeFileSync(`${marker}.tmp`, stamp, { mode: 0o600 });
    renameSync(`${marker}.tmp`, marker);
    this.restoreDone = true;
    return restored;
  }

  /** Opens every record once: CFN_ERR_KEY_FILE propagates; an altered one waits for a restore. */
  private async checkKeys(): Promise<void> {
    const codec = this.options.codec ?? PLAINTEXT_CODEC;
    for await (const [key, stored] of this.db.iterator({ gte: "m!", lt: "m!\xff" })) {
      try {
        codec.open(stored, key);
      } catch (error) {
        unreadableReason(error); // rethrows all but CFN_ERR_DECRYPT
      }
    }
  }

  /** After restore(): true when the bus outlived the node (no host restart), so nothing was restored. */
  get busSurvived(): boolean {
    return this.survived;
  }

  start(): void {
    this.timer = setInterval(() => void this.sweep(), this.options.flushIntervalMs);
    this.timer.unref();
  }

  /**
   * Mirrors the inbox files of `agents` (synced) — called by the receiver before it acknowledges
   * messages it wrote, so an acknowledged message is on disk. The inboxes are read synchronously
   * in the call (the receiver relies on it: its ledger fsync starts after); only the write is awaited.
   */
  async mirrorAgents(agents: Iterable<string>): Promise<void> {
    const ops: MirrorOp[] = [];
    for (const agent of new Set(agents)) this.collectNew(agent, ops);
    const pending = [...this.writes];
    if (ops.length > 0) pending.push(this.write(ops));
    await Promise.all(pending);
  }

  /** One synced batch; on failure the index forgets its puts (copied again) and keeps its deletes. */
  private write(ops: MirrorOp[]): Promise<void> {
    const written = this.db.batch(ops, { sync: true }).catch((error: unknown) => {
      for (const op of ops) {
        const [, agent, prefix] = op.key.split("!");
        if (op.type === "put") this.index(agent).delete(prefix);
        else this.index(agent).add(prefix);
      }
      throw error;
    });
    this.writes.add(written);
    void written.then(
      () => this.writes.delete(written),
      () => this.writes.delete(written),
    );
    return written;
  }

  /** One sweep: mirror new files of every local agent, prune consumed ones. */
  async sweep(): Promise<void> {
    if (this.sweeping || this.closed) return;
    this.sweeping = true;
    try {
      const ops: MirrorOp[] = [];
      const agents = this.options.bus.listAgents();
      for (const agent of agents) if (this.options.shouldMirror(agent)) this.collectNew(agent, ops);
      // Until restore() finished (a start refused by a missing key), absent files are not consumed.
      for (const [agent, prefixes] of this.restoreDone ? this.mirrored : []) {
        const present = this.presentPrefixes(agent);
        for (const prefix of prefixes) {
          if (present.has(prefix)) continue;
          prefixes.delete(prefix);
          ops.push({ type: "del", key: `m!${agent}!${prefix}` });
        }
      }
      // A skipped entry that left (dead-lettered by its receiver, removed) is forgotten.
      for (const [agent, prefixes] of this.skipped) {
        const present = this.presentPrefixes(agent);
        for (const prefix of prefixes) if (!present.has(prefix)) prefixes.delete(prefix);
        if (prefixes.size === 0) this.skipped.delete(agent);
      }
      if (ops.length > 0 && !this.closed) await this.write(ops);
    } catch (error) {
      this.logger.warn("mirror sweep failed", { error });
    } finally {
      this.sweeping = false;
    }
  }

  /** Entries mirrored now. */
  get size(): number {
    let total = 0;
    for (const prefixes of this.mirrored.values()) total += prefixes.size;
    return total;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    if (this.timer) clearInterval(this.timer);
    await this.sweep();
    this.closed = true;
    await closeLevel(this.db, this.path);
  }

  /**
   * Copies the files of `agent` not mirrored yet: its park (delivery/park.ts) first, then the
   * inbox, then the claimed dir, so a file moved on between two reads is found in the next.
   */
  private collectNew(agent: string, ops: MirrorOp[]): void {
    const { bus } = this.options;
    const paths = bus.layout.agent(agent);
    const known = this.index(agent);
    const skipped = this.skipped.get(agent);
    for (const dir of [parkDirOf(bus, agent), paths.inbox, paths.claimed]) {
      let names: string[];
      try {
        names = readdirSync(dir);
      } catch {
        continue;
      }
      for (const name of names) {
        const prefix = prefixOf(name);
        if (!prefix || known.has(prefix) || skipped?.has(prefix)) continue;
        let text: string;
        try {
          const read = readInboxEntry(join(dir, name), fileBytesMaxOf(name, bus.config.messageBytesMax));
          if (!read.ok) {
            if (read.problem !== "gone") this.skip(agent, prefix, name, read.problem, read.reason);
            continue; // gone: claimed meanwhile (read from claimed/ next), or acknowledged: consumed
          }
          text = read.text;
        } catch {
          continue; // unreadable now (permissions, I/O): tried again in the next round
        }
        known.add(prefix);
        const key = `m!${agent}!${prefix}`;
        ops.push({ type: "put", key, value: (this.options.codec ?? PLAINTEXT_CODEC).seal(text, key) });
      }
    }
  }

  /** An entry not mirrored: counted and logged once; its receiver dead-letters it with the reason. */
  private skip(agent: string, prefix: string, file: string, problem: string, reason: string): void {
    let prefixes = this.skipped.get(agent);
    if (!prefixes) {
      prefixes = new Set();
      this.skipped.set(agent, prefixes);
    }
    prefixes.add(prefix);
    this.metrics.mirrorSkipped.inc({ reason: problem });
    this.logger.warn("inbox entry not mirrored; its receiver moves it to dead-letter when it claims it", {
      agent,
      file,
      reason,
    });
  }

  private presentPrefixes(agent: string): Set<string> {
    const paths = this.options.bus.layout.agent(agent);
    const present = new Set<string>();
    for (const dir of [parkDirOf(this.options.bus, agent), paths.inbox, paths.claimed]) {
      let names: string[] = [];
      try {
        names = readdirSync(dir);
      } catch {
        continue;
      }
      for (const name of names) {
        const prefix = prefixOf(name);
        if (prefix) present.add(prefix);
      }
    }
    return present;
  }

  private index(agent: string): Set<string> {
    let set = this.mirrored.get(agent);
    if (!set) {
      set = new Set();
      this.mirrored.set(agent, set);
    }
    return set;
  }
}

/** The kernel's id of this boot (Linux), or undefined. */
function readBootId(): string | undefined {
  return readText("/proc/sys/kernel/random/boot_id")?.trim() || undefined;
}

/** A small file's text, or undefined when it cannot be read (absent, no regular file, large). */
function readText(path: string): string | undefined {
  try {
    const read = readInboxEntry(path, 4096); // the bus dir's marker: never a FIFO's wait
    return read.ok ? read.text : undefined;
  } catch {
    return undefined;
  }
}
