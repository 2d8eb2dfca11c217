// The delivery spool of a node (LevelDB, classic-level, at <dataDir>/spool): what makes
// cross-node delivery survive a crash on both ends.
//
// Sending side: a message drained from the local bus is written here (group commit: one batch per
// flush, synced when spoolSync) BEFORE its bus file is removed, under `o!<dest>!<seq>` with a per-destination
// sequence that never restarts (`n!<dest>` is written in the same batch). It is deleted once the
// owner node acknowledged it. The receiving side's cursors and intents live in the delivery ledger
// (ledger.ts); `c!` keys of older data dirs are still read as a starting cursor.
//
// Keys:  meta!stream          this node's outbound stream id (random, created once)
//        n!<dest>             next sequence for <dest>
//        o!<dest>!<seq:16>    spooled messages seq, seq+1, … (JSON array of wire messages: one
//                             record per drained batch; older versions wrote one object per seq)
//        c!<from>             receiver cursor {stream, seq} (older versions; read only)

import { randomUUID } from "node:crypto";
import type { ClassicLevel } from "classic-level";
import { CfnError } from "../../errors.js";
import type { Logger } from "../../obs/logger.js";
import { PLAINTEXT_CODEC, type SealedRecordCodec } from "../../security/record-cipher.js";
import { closeLevel, openLevel } from "../../storage/level-open.js";
import type { WireMessage } from "./wire.js";

type Db = ClassicLevel<string, string>;
type SpoolOp = { type: "put"; key: string; value: string } | { type: "del"; key: string };

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
  /** Encryption at rest (security.encryptionKeyFile): seals spooled messages; plaintext when absent. */
  codec?: SealedRecordCodec;
}

const SEQ_DIGITS = 16;
/**
 * Deletes of acknowledged records wait this long for the next append to ride along with (one
 * LevelDB batch, one thread-pool round trip and one wake-up of the event loop fewer per message at
 * light load); past it they go out alone. A delete lost in a crash only resends (the owner drops
 * the copy by its cursor).
 */
export const SPOOL_DELETE_DELAY_MS = 200;
/** Deferred deletes past this many go out at once. */
export const SPOOL_DELETES_DEFERRED_MAX = 4096;

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
  private readonly recordsByDest = new Map<string, { first: number; last: number }[]>();
  /** Group commit: operations issued while a batch is being written go out as the next batch. */
  private queuedOps: SpoolOp[] = [];
  private queuedWaiters: { resolve: () => void; reject: (error: unknown) => void }[] = [];
  private queuedSync = false;
  private writing: Promise<void> | undefined;
  /** Deletes of acknowledged records not yet queued (see SPOOL_DELETE_DELAY_MS). */
  private deferredDeletes: SpoolOp[] = [];
  private deleteTimer: NodeJS.Timeout | undefined;
  private spooled = 0;
  private closed = false;

  private constructor(
    db: Db,
    path: string,
    streamId: string,
    sync: boolean,
    private readonly codec: SealedRecordCodec = PLAINTEXT_CODEC,
  ) {
    this.db = db;
    this.path = path;
    this.streamId = streamId;
    this.sync = sync;
  }

  /** Opens (creating) the spool; CFN_ERR_DATA_DIR_LOCKED when it is open elsewhere. */
  static async open(options: SpoolOptions): Promise<DeliverySpool> {
    const { db, path } = await openLevel(options.path, "spool", "utf8");
    try {
      let streamId = await db.get("meta!stream");
      if (streamId === undefined) {
        streamId = randomUUID();
        await db.put("meta!stream", streamId, { sync: true });
      }
      const spool = new DeliverySpool(db, path, streamId, options.sync, options.codec);
      await spool.loadMeta();
      return spool;
    } catch (error) {
      await closeLevel(db, path).catch(() => undefined);
      throw error;
    }
  }

  private async loadMeta(): Promise<void> {
    for await (const [key, value] of this.db.iterator({ gte: "n!", lt: "n!\xff" }))
      this.nextSeq.set(key.slice(2), Number(value));
    for await (const [key, value] of this.db.iterator({ gte: "c!", lt: "c!\xff" }))
      this.cursors.set(key.slice(2), JSON.parse(value));
  }

  /** Every spooled (unacknowledged) message, per destination in sequence order. */
  async loadOutbound(): Promise<Map<string, SpooledMessage[]>> {
    const result = new Map<string, SpooledMessage[]>();
    let count = 0;
    for await (const [key, value] of this.db.iterator({ gte: "o!", lt: "o!\xff" })) {
      const at = key.lastIndexOf("!");
      const dest = key.slice(2, at);
      const first = Number(key.slice(at + 1));
      // Sealed records were checked at start (src/security/spool-scrub.ts).
      const parsed = JSON.parse(this.codec.open(value, key)) as WireMessage | WireMessage[];
      // A record is a run of consecutive sequences (one message in data dirs of older versions).
      const messages = Array.isArray(parsed) ? parsed : [parsed];
      const list = result.get(dest) ?? [];
      messages.forEach((message, index) => {
        list.push({ dest, seq: first + index, message });
      });
      result.set(dest, list);
      this.records(dest).push({ first, last: first + messages.length - 1 });
      count += messages.length;
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
   * Assigns sequences now and queues the write: the caller may stream the messages at once and
   * wait for `durable` before it drops its own copy (the bus file). Group commit: every append and
   * delete issued while a LevelDB batch is being written goes out as the next single batch (synced
   * when `sync`), so under load there is one write — and one fsync — per flush, not per drain.
   * Batches complete in the order they were issued.
   */
  appendNow(items: { dest: string; message: WireMessage }[]): {
    spooled: SpooledMessage[];
    durable: Promise<void>;
  } {
    this.assertOpen();
    const spooled: SpooledMessage[] = [];
    const runs = new Map<string, WireMessage[]>();
    for (const item of items) {
      const seq = this.nextSeq.get(item.dest) ?? 1;
      this.nextSeq.set(item.dest, seq + 1);
      spooled.push({ dest: item.dest, seq, message: item.message });
      let run = runs.get(item.dest);
      if (!run) {
        run = [];
        runs.set(item.dest, run);
      }
      run.push(item.message);
    }
    // One record per destination: the run of sequences this call assigned (first = next - length).
    const ops: SpoolOp[] = [];
    for (const [dest, run] of runs) {
      const next = this.nextSeq.get(dest) as number;
      const first = next - run.length;
      this.records(dest).push({ first, last: next - 1 });
      const key = seqKey(dest, first);
      ops.push({ type: "put", key, value: this.codec.seal(JSON.stringify(run), key) });
      ops.push({ type: "put", key: `n!${dest}`, value: String(next) });
    }
    this.spooled += items.length;
    const durable = this.enqueue(ops, this.sync);
    return { spooled, durable };
  }

  /**
   * Forgets acknowledged messages of `dest` with sequence in [from, to]: deletes every record
   * wholly acknowledged. A record acknowledged in part stays until its last message is; after a
   * restart its acknowledged head is sent again and dropped by the owner's cursor. Not synced: a
   * lost delete only resends.
   */
  async remove(dest: string, from: number, to: number): Promise<void> {
    if (this.closed || to < from) return;
    const ops: SpoolOp[] = [];
    const records = this.records(dest);
    let done = 0;
    while (done < records.length && records[done].last <= to) {
      ops.push({ type: "del", key: seqKey(dest, records[done].first) });
      done++;
    }
    if (done > 0) records.splice(0, done);
    this.spooled = Math.max(0, this.spooled - (to - from + 1));
    if (ops.length === 0) return;
    // Deferred, then through the queue: a delete never overtakes the put it deletes (that put was
    // queued before the record could be acknowledged).
    for (const op of ops) this.deferredDeletes.push(op);
    if (this.deferredDeletes.length >= SPOOL_DELETES_DEFERRED_MAX) {
      await this.flushDeletes();
      return;
    }
    if (!this.deleteTimer) {
      this.deleteTimer = setTimeout(
        () => void this.flushDeletes().catch(() => undefined),
        SPOOL_DELETE_DELAY_MS,
      );
      this.deleteTimer.unref();
    }
  }

  /** Queues the deferred deletes now (enqueue takes them); resolves once they are written. */
  private flushDeletes(): Promise<void> {
    clearTimeout(this.deleteTimer);
    this.deleteTimer = undefined;
    return this.deferredDeletes.length === 0 ? Promise.resolve() : this.enqueue([], false);
  }

  /** Per destination: the spooled records (runs of sequences) in order, oldest first. */
  private records(dest: string): { first: number; last: number }[] {
    let list = this.recordsByDest.get(dest);
    if (!list) {
      list = [];
      this.recordsByDest.set(dest, list);
    }
    return list;
  }

  private enqueue(ops: SpoolOp[], sync: boolean): Promise<void> {
    // Deferred deletes ride along with this batch (their timer is then moot).
    if (this.deferredDeletes.length > 0) {
      for (const op of this.deferredDeletes) this.queuedOps.push(op);
      this.deferredDeletes = [];
      clearTimeout(this.deleteTimer);
      this.deleteTimer = undefined;
    }
    for (const op of ops) this.queuedOps.push(op);
    if (sync) this.queuedSync = true;
    const done = new Promise<void>((resolve, reject) => this.queuedWaiters.push({ resolve, reject }));
    // The batch starts on a microtask, after the caller's synchronous work: a forwarder streams the
    // messages it just spooled before LevelDB's batch preparation (≈ 50–100 µs on an idle node)
    // runs, and appends issued in the same turn join one batch.
    this.writing ??= Promise.resolve().then(() => this.writeQueued());
    return done;
  }

  private async writeQueued(): Promise<void> {
    while (this.queuedOps.length > 0) {
      const ops = this.queuedOps;
      const waiters = this.queuedWaiters;
      const sync = this.queuedSync;
      this.queuedOps = [];
      this.queuedWaiters = [];
      this.queuedSync = false;
      try {
        await this.db.batch(ops, { sync });
        for (const waiter of waiters) waiter.resolve();
      } catch (error) {
        for (const waiter of waiters) waiter.reject(error);
      }
    }
    this.writing = undefined;
  }

  /** The receiver cursor a data dir of an older version kept here (the ledger took over). */
  cursor(from: string): ReceiverCursor | undefined {
    return this.cursors.get(from);
  }

  /** Waits for every append and delete issued so far. */
  async flush(): Promise<void> {
    await this.flushDeletes();
    while (this.writing) await this.writing;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.flush();
    await closeLevel(this.db, this.path);
  }

  private assertOpen(): void {
    if (this.closed) throw new CfnError("CFN_ERR_CLOSED", "the delivery spool is closed");
  }
}
