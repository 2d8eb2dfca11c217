// The delivery spool of a node (LevelDB, classic-level, at <dataDir>/spool): what makes
// cross-node delivery survive a crash on both ends.
//
// Sending side: a message drained from the local bus is written here (one batch per drain, synced
// when spoolSync) BEFORE its bus file is removed, under `o!<dest>!<seq>` with a per-destination
// sequence that never restarts (`n!<dest>` is written in the same batch). It is deleted once the
// owner node acknowledged it. Receiving side: per sender node, the delivery cursor (stream id and
// last sequence written into the inbox) and, while a batch is being written, an intent record
// naming what is being written, so a restart can tell which of those messages landed.
//
// Keys:  meta!stream          this node's outbound stream id (random, created once)
//        n!<dest>             next sequence for <dest>
//        o!<dest>!<seq:16>    a spooled message (JSON wire message)
//        c!<from>             receiver cursor {stream, seq}
//        i!<from>             receiver intent {stream, first, last, ids}

import { randomUUID } from "node:crypto";
import { resolve } from "node:path";
import { ClassicLevel } from "classic-level";
import { CfnError } from "../../errors.js";
import type { Logger } from "../../obs/logger.js";
import type { WireMessage } from "./wire.js";

type Db = ClassicLevel<string, string>;

/** One message in the spool, bound to a destination node with its stream sequence. */
export interface SpooledMessage {
  dest: string;
  seq: number;
  message: WireMessage;
}

export interface ReceiverCursor {
  stream: string;
  seq: number;
}

export interface ReceiverIntent {
  stream: string;
  first: number;
  last: number;
  /** (agent, message id) pairs being written into inboxes. */
  targets: { to: string; id: string }[];
}

export interface SpoolOptions {
  path: string;
  /** fsync appends (survives power loss) rather than only process crashes. */
  sync: boolean;
  logger: Logger;
}

/** Paths open in this process: classic-level's LOCK does not guard a second open in one process. */
const openPaths = new Set<string>();

const SEQ_DIGITS = 16;

function seqKey(dest: string, seq: number): string {
  return `o!${dest}!${String(seq).padStart(SEQ_DIGITS, "0")}`;
}

export class DeliverySpool {
  readonly path: string;
  readonly streamId: string;
  private readonly db: Db;
  private readonly sync: boolean;
  private readonly nextSeq = new Map<string, number>();
  private readonly cursors = new Map<string, ReceiverCursor>();
  private readonly intents = new Map<string, ReceiverIntent>();
  private appendChain: Promise<unknown> = Promise.resolve();
  private spooled = 0;
  private closed = false;

  private constructor(db: Db, path: string, streamId: string, sync: boolean) {
    this.db = db;
    this.path = path;
    this.streamId = streamId;
    this.sync = sync;
  }

  /** Opens (creating) the spool; CFN_ERR_DATA_DIR_LOCKED when it is open elsewhere. */
  static async open(options: SpoolOptions): Promise<DeliverySpool> {
    const path = resolve(options.path);
    if (openPaths.has(path))
      throw new CfnError("CFN_ERR_DATA_DIR_LOCKED", `spool ${path} is already open in this process`, {
        path,
      });
    openPaths.add(path);
    const db: Db = new ClassicLevel<string, string>(path, { keyEncoding: "utf8", valueEncoding: "utf8" });
    try {
      try {
        await db.open({ createIfMissing: true });
      } catch (error) {
        const code = (error as { code?: string }).code;
        const cause = (error as { cause?: { code?: string } }).cause?.code;
        if (code === "LEVEL_LOCKED" || cause === "LEVEL_LOCKED") {
          throw new CfnError("CFN_ERR_DATA_DIR_LOCKED", `spool ${path} is locked by another process`, {
            path,
          });
        }
        throw new CfnError("CFN_ERR_STORAGE", `cannot open spool ${path}: ${String(error)}`, { path });
      }
      let streamId = await db.get("meta!stream");
      if (streamId === undefined) {
        streamId = randomUUID();
        await db.put("meta!stream", streamId, { sync: true });
      }
      const spool = new DeliverySpool(db, path, streamId, options.sync);
      await spool.loadMeta();
      return spool;
    } catch (error) {
      openPaths.delete(path);
      await db.close().catch(() => undefined);
      throw error;
    }
  }

  private async loadMeta(): Promise<void> {
    for await (const [key, value] of this.db.iterator({ gte: "n!", lt: "n!\xff" }))
      this.nextSeq.set(key.slice(2), Number(value));
    for await (const [key, value] of this.db.iterator({ gte: "c!", lt: "c!\xff" }))
      this.cursors.set(key.slice(2), JSON.parse(value));
    for await (const [key, value] of this.db.iterator({ gte: "i!", lt: "i!\xff" }))
      this.intents.set(key.slice(2), JSON.parse(value));
  }

  /** Every spooled (unacknowledged) message, per destination in sequence order. */
  async loadOutbound(): Promise<Map<string, SpooledMessage[]>> {
    const result = new Map<string, SpooledMessage[]>();
    let count = 0;
    for await (const [key, value] of this.db.iterator({ gte: "o!", lt: "o!\xff" })) {
      const at = key.lastIndexOf("!");
      const dest = key.slice(2, at);
      const seq = Number(key.slice(at + 1));
      const list = result.get(dest) ?? [];
      list.push({ dest, seq, message: JSON.parse(value) as WireMessage });
      result.set(dest, list);
      count++;
    }
    this.spooled = count;
    return result;
  }

  /** Messages in the spool now. */
  get size(): number {
    return this.spooled;
  }

  /**
   * Durably appends messages (one batch, synced when configured) and resolves with their
   * sequences. Appends are serialized, so sequences become durable in order.
   */
  async append(items: { dest: string; message: WireMessage }[]): Promise<SpooledMessage[]> {
    const { spooled, durable } = this.appendNow(items);
    await durable;
    return spooled;
  }

  /**
   * Assigns sequences now and starts the write: the caller may stream the messages at once and
   * wait for `durable` before it drops its own copy (the bus file). Writes are serialized.
   */
  appendNow(items: { dest: string; message: WireMessage }[]): {
    spooled: SpooledMessage[];
    durable: Promise<void>;
  } {
    this.assertOpen();
    const spooled: SpooledMessage[] = [];
    const ops: { type: "put"; key: string; value: string }[] = [];
    const touched = new Set<string>();
    for (const item of items) {
      const seq = this.nextSeq.get(item.dest) ?? 1;
      this.nextSeq.set(item.dest, seq + 1);
      touched.add(item.dest);
      spooled.push({ dest: item.dest, seq, message: item.message });
      ops.push({ type: "put", key: seqKey(item.dest, seq), value: JSON.stringify(item.message) });
    }
    for (const dest of touched)
      ops.push({ type: "put", key: `n!${dest}`, value: String(this.nextSeq.get(dest)) });
    this.spooled += items.length;
    const durable = this.serialize(() => this.db.batch(ops, { sync: this.sync }));
    return { spooled, durable };
  }

  /** Deletes acknowledged messages of `dest` with sequence in [from, to]. Not synced: a lost delete only resends. */
  async remove(dest: string, from: number, to: number): Promise<void> {
    if (this.closed || to < from) return;
    const ops: { type: "del"; key: string }[] = [];
    for (let seq = from; seq <= to; seq++) ops.push({ type: "del", key: seqKey(dest, seq) });
    this.spooled = Math.max(0, this.spooled - ops.length);
    // Through the chain: a delete must never overtake the put it deletes.
    await this.serialize(() => this.db.batch(ops));
  }

  private serialize(write: () => Promise<void>): Promise<void> {
    const next = this.appendChain.then(write);
    this.appendChain = next.catch(() => undefined);
    return next;
  }

  cursor(from: string): ReceiverCursor | undefined {
    return this.cursors.get(from);
  }

  /** Sender nodes with an unfinished write (crash recovery). */
  intentSenders(): string[] {
    return [...this.intents.keys()];
  }

  intent(from: string): ReceiverIntent | undefined {
    return this.intents.get(from);
  }

  /** Records what is about to be written into inboxes (survives a process crash once resolved). */
  async writeIntent(from: string, intent: ReceiverIntent): Promise<void> {
    this.assertOpen();
    this.intents.set(from, intent);
    await this.db.put(`i!${from}`, JSON.stringify(intent));
  }

  /** Moves the cursor past a written batch and clears its intent, in one batch. */
  async commitCursor(from: string, cursor: ReceiverCursor): Promise<void> {
    if (this.closed) return;
    this.cursors.set(from, cursor);
    this.intents.delete(from);
    await this.db.batch([
      { type: "put", key: `c!${from}`, value: JSON.stringify(cursor) },
      { type: "del", key: `i!${from}` },
    ]);
  }

  /** Waits for every append issued so far. */
  async flush(): Promise<void> {
    await this.appendChain;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.appendChain.catch(() => undefined);
    try {
      await this.db.close();
    } finally {
      openPaths.delete(this.path);
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new CfnError("CFN_ERR_CLOSED", "the delivery spool is closed");
  }
}
