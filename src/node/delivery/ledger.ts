// The receiving side's delivery ledger: per sender node, one append-only file of JSON lines at
// <dataDir>/delivery-in/<sender>.log —
//
//   {"i":{"stream":…,"first":…,"last":…,"targets":[{"to":…,"id":…},…]}}   intent: about to be written
//   {"c":{"stream":…,"seq":…}}                                              commit: cursor, all ≤ seq written
//   {"w":{"stream":…,"seq":…}}                                              mark: written into the
//                                                                            tmpfs inboxes, not yet durable
//
// All are plain write(2) calls on the event loop (no thread-pool hop, no promise): an intent is in
// the page cache before the inbox write starts, so it survives a process crash (kill -9) without an
// fsync. That is the crash the inbox itself survives (tmpfs); with `sync` (spoolSync or persistence)
// `sync()` fdatasyncs the files before the node acknowledges, for a whole-host crash.
//
// Recovery reads each file: the cursor is the last commit; the intents not covered by it
// (several, when acknowledgements were batched) form one chain whose targets were written in
// order. With persistence the commit waits for a durability round, so the receiver appends a mark
// right after each write: after a crash of the process alone (the tmpfs inboxes survived) it says
// how far the chain was written, though the agents consumed some of it meanwhile. A commit covers
// only sequences up to its cursor: intents written while a durability round ran (persistence) are
// appended before the round's commit and stay in the chain past it. A torn last line (a crash
// inside write(2)) is an intent whose inbox write never started: it is ignored. A file past
// `fileBytesMax` is rewritten to its last commit, the chain after it and the mark past it (tmp +
// rename) at the next commit.

import {
  closeSync,
  existsSync,
  fdatasync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import type { ReceiverCursor, ReceiverIntent } from "./spool.js";

export interface LedgerOptions {
  dir: string;
  /** fdatasync in sync() (survives power loss); without it sync() resolves at once. */
  sync: boolean;
  /** A ledger file is compacted to its last commit past this size, in bytes. */
  fileBytesMax: number;
}

interface SenderLedger {
  fd: number;
  bytes: number;
  dirty: boolean;
  cursor: ReceiverCursor | undefined;
  /** Intents appended since the last commit, merged (same stream, consecutive sequences). */
  pending: ReceiverIntent | undefined;
  /** The last mark past the cursor: written into the inboxes up to it (markWritten). */
  written: ReceiverCursor | undefined;
  /** The last append failed part way: the file ends in a torn line. */
  torn?: boolean;
}

/** Default for LedgerOptions.fileBytesMax: compaction rewrites one line, so this is only disk use. */
export const LEDGER_FILE_BYTES_MAX = 4 * 1024 * 1024;

export class DeliveryLedger {
  private readonly options: LedgerOptions;
  private readonly senders = new Map<string, SenderLedger>();
  private closed = false;

  private constructor(options: LedgerOptions) {
    this.options = options;
  }

  /** Opens (creating) the ledger dir and loads every sender's cursor and pending intents. */
  static open(options: LedgerOptions): DeliveryLedger {
    mkdirSync(options.dir, { recursive: true, mode: 0o700 });
    const ledger = new DeliveryLedger(options);
    for (const name of readdirSync(options.dir)) {
      if (!name.endsWith(".log")) continue;
      ledger.load(decodeURIComponent(name.slice(0, -4)));
    }
    return ledger;
  }

  /** False after close(): nothing more may be appended. */
  get isOpen(): boolean {
    return !this.closed;
  }

  cursor(from: string): ReceiverCursor | undefined {
    return this.senders.get(from)?.cursor;
  }

  /** Every sender stream's committed cursor (a removed node hands them to the senders). */
  cursors(): [string, ReceiverCursor][] {
    return [...this.senders].flatMap(([from, sender]) =>
      sender.cursor ? [[from, sender.cursor] as [string, ReceiverCursor]] : [],
    );
  }

  /** The intents written since the last commit of `from`, as one chain (crash recovery). */
  intent(from: string): ReceiverIntent | undefined {
    return this.senders.get(from)?.pending;
  }

  /** How far `from`'s chain was written into the inboxes past its cursor (markWritten), if known. */
  writtenMark(from: string): ReceiverCursor | undefined {
    return this.senders.get(from)?.written;
  }

  /** Senders with intents after their last commit. */
  intentSenders(): string[] {
    return [...this.senders].filter(([, sender]) => sender.pending).map(([from]) => from);
  }

  /** Records what is about to be written into inboxes; returns once it is in the page cache. */
  appendIntent(from: string, intent: ReceiverIntent): void {
    const sender = this.sender(from);
    this.append(sender, `{"i":${JSON.stringify(intent)}}\n`);
    extendChain(sender, intent);
  }

  /**
   * Records that everything of `from`'s chain ≤ cursor.seq is in the inboxes (tmpfs), before the
   * commit that says it is durable too (persistence: after the durability round).
   */
  markWritten(from: string, cursor: ReceiverCursor): void {
    const sender = this.sender(from);
    this.append(sender, `{"w":${JSON.stringify(cursor)}}\n`);
    sender.written = cursor;
  }

  /**
   * Moves the cursor of `from` (everything ≤ cursor.seq is written) and trims its intent chain to
   * what lies past it.
   */
  commit(from: string, cursor: ReceiverCursor): void {
    const sender = this.sender(from);
    const line = `{"c":${JSON.stringify(cursor)}}\n`;
    sender.cursor = cursor;
    sender.pending = trimChain(sender.pending, cursor);
    sender.written = markPast(sender.written, cursor);
    if (sender.bytes + line.length > this.options.fileBytesMax) this.rewrite(from, sender, line);
    else this.append(sender, line);
  }

  /** With `sync`: fdatasyncs every file appended to since the last call. */
  async sync(): Promise<void> {
    if (!this.options.sync) return;
    const dirty = [...this.senders.values()].filter((sender) => sender.dirty);
    for (const sender of dirty) sender.dirty = false;
    await Promise.all(
      dirty.map(
        (sender) =>
          new Promise<void>((resolve, reject) =>
            fdatasync(sender.fd, (error) => (error ? reject(error) : resolve())),
          ),
      ),
    );
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const sender of this.senders.values()) closeSync(sender.fd);
    this.senders.clear();
  }

  private path(from: string): string {
    return join(this.options.dir, `${encodeURIComponent(from)}.log`);
  }

  private sender(from: string): SenderLedger {
    let sender = this.senders.get(from);
    if (!sender) {
      if (this.closed) throw new Error("invariant violated: delivery ledger used after close");
      sender = {
        fd: openSync(this.path(from), "a", 0o600),
        bytes: 0,
        dirty: false,
        cursor: undefined,
        pending: undefined,
        written: undefined,
      };
      this.senders.set(from, sender);
    }
    return sender;
  }

  private append(sender: SenderLedger, line: string): void {
    // After a write that failed part way (ENOSPC), the next record starts on a line of its own: a
    // torn line must not swallow it (load() skips the torn one).
    const bytes = Buffer.from(sender.torn ? `\n${line}` : line);
    let offset = 0;
    try {
      while (offset < bytes.length) offset += writeSync(sender.fd, bytes, offset);
    } catch (error) {
      if (offset > 0) sender.torn = true;
      sender.bytes += offset;
      throw error;
    }
    sender.torn = false;
    sender.bytes += bytes.length;
    sender.dirty = true;
  }

  /** Replaces the file by its last commit and the chain after it; the rename is atomic for a process crash. */
  private rewrite(from: string, sender: SenderLedger, commitLine: string): void {
    const path = this.path(from);
    const tmp = `${path}.tmp`;
    const fd = openSync(tmp, "w", 0o600);
    let line = sender.pending ? `${commitLine}{"i":${JSON.stringify(sender.pending)}}\n` : commitLine;
    if (sender.written) line += `{"w":${JSON.stringify(sender.written)}}\n`;
    try {
      const bytes = Buffer.from(line);
      for (let offset = 0; offset < bytes.length; ) offset += writeSync(fd, bytes, offset);
      if (this.options.sync) fsyncSync(fd);
    } catch (error) {
      // The old file stays (the commit goes there instead, or fails there too).
      closeSync(fd);
      rmSync(tmp, { force: true });
      if (!isErrno(error)) throw error;
      this.append(sender, commitLine);
      return;
    }
    renameSync(tmp, path);
    closeSync(sender.fd);
    sender.fd = fd;
    sender.bytes = Buffer.byteLength(line);
    sender.dirty = false;
  }

  private load(from: string): void {
    const path = this.path(from);
    if (!existsSync(path)) return;
    const text = readFileSync(path, "utf8");
    const sender = this.sender(from);
    sender.bytes = Buffer.byteLength(text);
    // A torn last line must not swallow the next record appended after it.
    if (text.length > 0 && !text.endsWith("\n")) this.append(sender, "\n");
    for (const line of text.split("\n")) {
      let record: { i?: ReceiverIntent; c?: ReceiverCursor; w?: ReceiverCursor };
      try {
        record = JSON.parse(line);
      } catch {
        continue; // the empty tail, or a line torn by a crash inside write(2)
      }
      if (record.c) {
        sender.cursor = record.c;
        sender.pending = trimChain(sender.pending, record.c);
        sender.written = markPast(sender.written, record.c);
      } else if (record.i) {
        extendChain(sender, record.i);
      } else if (record.w) {
        sender.written = record.w;
      }
    }
  }
}

/** The part of a chain past `cursor` (none when the cursor covers it or is of another stream). */
function trimChain(chain: ReceiverIntent | undefined, cursor: ReceiverCursor): ReceiverIntent | undefined {
  if (!chain || chain.stream !== cursor.stream || chain.last <= cursor.seq) return undefined;
  if (chain.first > cursor.seq) return chain;
  const first = cursor.seq + 1;
  return { ...chain, first, targets: chain.targets.slice(first - chain.first) };
}

/** The mark if it lies past `cursor` (of the same stream), else none. */
function markPast(mark: ReceiverCursor | undefined, cursor: ReceiverCursor): ReceiverCursor | undefined {
  return mark && mark.stream === cursor.stream && mark.seq > cursor.seq ? mark : undefined;
}

/** Appends an intent to the sender's chain (same stream, next sequence) or starts a new chain. */
function extendChain(sender: SenderLedger, intent: ReceiverIntent): void {
  const chain = sender.pending;
  if (chain && chain.stream === intent.stream && chain.last + 1 === intent.first) {
    chain.last = intent.last;
    for (const target of intent.targets) chain.targets.push(target);
  } else {
    sender.pending = { ...intent, targets: [...intent.targets] };
  }
}

function isErrno(error: unknown): boolean {
  return typeof (error as NodeJS.ErrnoException)?.code === "string";
}
