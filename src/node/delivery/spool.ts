// The delivery spool of a node (LevelDB, classic-level, at <dataDir>/spool): what makes
// cross-node delivery survive a crash on both ends.
//
// Sending side: a message drained from the local bus is written here (group commit: one batch per
// flush, synced when spoolSync) BEFORE its bus file is removed, under `o!<dest>!<seq>` with a
// per-destination sequence that never restarts. It is deleted once the owner node acknowledged it.
// Sequences are reserved in blocks ahead of use (`r!<dest>`, always fsynced, even without
// spoolSync): a frame may carry a sequence whose message write is still pending, but never one
// beyond a durable reservation, so a node restarted after any crash starts past every sequence
// it may have handed out and the owner never takes a new message for a duplicate. The receiving side's cursors and intents live in the delivery ledger
// (ledger.ts); `c!` keys of older data dirs are still read as a starting cursor.
//
// Keys:  meta!stream          this node's outbound stream id (random, created once)
//        r!<dest>             highest sequence reserved for <dest> (fsynced before use)
//        n!<dest>             next sequence for <dest> (older versions; read only)
//        o!<dest>!<seq:16>    spooled messages seq, seq+1, … (JSON array of wire messages: one
//                             record per drained batch; older versions wrote one object per seq)
//        c!<from>             receiver cursor {stream, seq} (older versions; read only)

import { randomUUID } from "node:crypto";
import type { ClassicLevel } from "classic-level";
import { CfnError } from "../../errors.js";
import type { Logger } from "../../obs/logger.js";
import { PLAINTEXT_CODEC, type SealedRecordCodec } from "../../security/record-cipher.js";
import { closeLevel, openLevel } from "../../storage/level-open.js";
import { exactPayload } from "./exact-payload.js";
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
/**
 * Sequences per destination reserved by one synced write. The next block is reserved once half
 * of the current one is handed out, so under steady traffic no frame waits for the disk; a restart
 * skips at most this many unused sequences (the owner is told by the frame's watermark).
 */
export const SEQ_RESERVE_BLOCK_MESSAGES = 8192;

function seqKey(dest: string, seq: number): string {
  return `o!${dest}!${String(seq).padStart(SEQ_DIGITS, "0")}`;
}

export class DeliverySpool {
  readonly path: string;
  readonly streamId: string;
  private readonly db: Db;
  private readonly sync: boolean;
  private readonly nextSeq = new Map<string, number>();
  /** Per destination: the highest sequence whose reservation is durable. */
  private readonly reserved = new Map<string, number>();
  /** Per destination: the reservation being written, if any. */
  private readonly reserving = new Map<string, { upTo: number; done: Promise<void> }>();
  private readonly cursors = new Map<string, ReceiverCursor>();
  private readonly recordsByDest = new Map<string, { first: number; last: number; bytes: number }[]>();
  /** Group commit: operations issued while a batch is being written go out as the next batch. */
  private queuedOps: SpoolOp[] = [];
  private queuedWaiters: { resolve: () => void; reject: (error: unknown) => void }[] = [];
  private queuedSync = false;
  private writing: Promise<void> | undefined;
  /** Deletes of acknowledged records not yet queued (see SPOOL_DELETE_DELAY_MS). */
  private deferredDeletes: SpoolOp[] = [];
  private deleteTimer: NodeJS.Timeout | undefined;
  private spooled = 0;
  private spooledBytes = 0;
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
    // A data dir of an older version has `n!` only: it sent no sequence before its write landed.
    for await (const [key, value] of this.db.iterator({ gte: "n!", lt: "n!\xff" })) {
      const dest = key.slice(2);
      this.nextSeq.set(dest, Math.max(this.nextSeq.get(dest) ?? 1, Number(value)));
      this.reserved.set(dest, Math.max(this.reserved.get(dest) ?? 0, Number(value) - 1));
    }
    for await (const [key, value] of this.db.iterator({ gte: "r!", lt: "r!\xff" })) {
      const dest = key.slice(2);
      this.nextSeq.set(dest, Math.max(this.nextSeq.get(dest) ?? 1, Number(value) + 1));
      this.reserved.set(dest, Math.max(this.reserved.get(dest) ?? 0, Number(value)));
    }
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
        // Stored as JSON, which kept the payload exact; it travels on as exactly (exact-payload.ts).
        message.payload = exactPayload(message.payload);
        list.push({ dest, seq: first + index, message });
      });
      result.set(dest, list);
      this.records(dest).push({ first, last: first + messages.length - 1, bytes: value.length });
      this.spooledBytes += value.length;
      count += messages.length;
    }
    this.spooled = count;
    return result;
  }

  /** Messages in the spool now. */
  get size(): number {
    return this.spooled;
  }

  /** Bytes of the spooled records now (as stored: JSON, sealed when encrypted). */
  get bytes(): number {
    return this.spooledBytes;
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
   * Assigns sequences now and queues the write. `sendable` settles once every assigned sequence is
   * covered by a durable reservation (undefined: already covered): the caller may stream the
   * messages from then on, and waits for `durable` before it drops its own copy (the bus file).
   * Group commit: every append and delete issued while a LevelDB batch is being written goes out
   * as the next single batch (synced when `sync`, or when it carries a reservation), so under load
   * there is one write (and one fsync) per flush, not per drain. Batches complete in the order
   * they were issued.
   */
  appendNow(items: { dest: string; message: WireMessage }[]): {
    spooled: SpooledMessage[];
    durable: Promise<void>;
    sendable: Promise<void> | undefined;
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
    const issued: { dest: string; upTo: number }[] = [];
    const waitFor: string[] = [];
    for (const [dest, run] of runs) {
      const next = this.nextSeq.get(dest) as number;
      const first = next - run.length;
      const key = seqKey(dest, first);
      const value = this.codec.seal(JSON.stringify(run), key);
      this.records(dest).push({ first, last: next - 1, bytes: value.length });
      this.spooledBytes += value.length;
      ops.push({ type: "put", key, value });
      const reserved = this.reserved.get(dest) ?? 0;
      const reserving = this.reserving.get(dest);
      const covered = reserving ? reserving.upTo : reserved;
      if (next - 1 > covered || (!reserving && next - 1 > reserved - SEQ_RESERVE_BLOCK_MESSAGES / 2)) {
        const upTo = Math.max(next - 1, covered) + SEQ_RESERVE_BLOCK_MESSAGES;
        ops.push({ type: "put", key: `r!${dest}`, value: String(upTo) });
        issued.push({ dest, upTo });
      }
      if (next - 1 > reserved) waitFor.push(dest);
    }
    this.spooled += items.length;
    const durable = this.enqueue(ops, this.sync || issued.length > 0);
    for (const { dest, upTo } of issued) {
      const done = durable.then(
        () => {
          if (upTo > (this.reserved.get(dest) ?? 0)) this.reserved.set(dest, upTo);
          if (this.reserving.get(dest)?.upTo === upTo) this.reserving.delete(dest);
        },
        (error) => {
          if (this.reserving.get(dest)?.upTo === upTo) this.reserving.delete(dest);
          throw error;
        },
      );
      done.catch(() => undefined); // the caller of appendNow sees the failure through sendable
      this.reserving.set(dest, { upTo, done });
    }
    const waits = waitFor.map((dest) => (this.reserving.get(dest) as { done: Promise<void> }).done);
    const sendable =
      waits.length === 0
        ? undefined
        : waits.length === 1
          ? waits[0]
          : Promise.all(waits).then(() => undefined);
    return { spooled, durable, sendable };
  }

  /** The highest sequence of `dest` whose reservation is durable (frames may carry up to it). */
  reservedUpTo(dest: string): number {
    return this.reserved.get(dest) ?? 0;
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
      this.spooledBytes -= records[done].bytes;
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
  private records(dest: string): { first: number; last: number; bytes: number }[] {
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
    // Hands back the unused part of each reservation: after a clean stop the next incarnation
    // carries on with the next sequence, with no gap for the owner to skip.
    const release: SpoolOp[] = [];
    for (const [dest, next] of this.nextSeq)
      if ((this.reserved.get(dest) ?? 0) > next - 1)
        release.push({ type: "put", key: `r!${dest}`, value: String(next - 1) });
    if (release.length > 0) await this.db.batch(release, { sync: true }).catch(() => undefined);
    await closeLevel(this.db, this.path);
  }

  private assertOpen(): void {
    if (this.closed) throw new CfnError("CFN_ERR_CLOSED", "the delivery spool is closed");
  }
}
