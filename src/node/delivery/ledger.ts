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
//
// A write that fails (ENOSPC, EIO: an append, a new sender's file, an fdatasync) is the ledger's
// last: it may have left a torn line, and an fdatasync that failed leaves the page cache's state
// unknown, so the ledger takes no more writes (CFN_ERR_STORAGE, path and cause) and tells
// `onFailure` once — a node stops, as for a LevelDB handle that failed (src/storage/level-open.ts).
// What the torn record claimed was never acted on: an intent's inbox write starts after it returns,
// an ack after the commit's. The next open reads up to the torn line and ignores it.

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
import { CfnError } from "../../errors.js";
import { causeChain } from "../../storage/level-open.js";
import type { ReceiverCursor, ReceiverIntent } from "./spool.js";

export interface LedgerOptions {
  dir: string;
  /** fdatasync in sync() (survives power loss); without it sync() resolves at once. */
  sync: boolean;
  /** A ledger file is compacted to its last commit past this size, in bytes. */
  fileBytesMax: number;
  /** Told once, with the CFN_ERR_STORAGE, when a write fails and the ledger stops taking writes. */
  onFailure?: (error: CfnError) => void;
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
  /** The first write that failed: every later one is refused with it. */
  private failure: CfnError | undefined;

  private constructor(options: LedgerOptions) {
    this.options = options;
  }

  /**
   * Opens (creating) the ledger dir and loads every sender's cursor and pending intents; writes
   * nothing else (a data dir on a full disk opens). CFN_ERR_STORAGE when it cannot be read.
   */
  static open(options: LedgerOptions): DeliveryLedger {
    const ledger = new DeliveryLedger(options);
    try {
      mkdirSync(options.dir, { recursive: true, mode: 0o700 });
      for (const name of readdirSync(options.dir)) {
        if (!name.endsWith(".log")) continue;
        ledger.load(decodeURIComponent(name.slice(0, -4)));
      }
    } catch (error) {
      ledger.close();
      throw new CfnError(
        "CFN_ERR_STORAGE",
        `cannot open the delivery ledger ${options.dir}: ${causeChain(error)}`,
        { path: options.dir, cause: error },
      );
    }
    return ledger;
  }

  /** False after close() or a failed write: nothing more may be appended (and nothing acknowledged). */
  get isOpen(): boolean {
    return !this.closed && this.failure === undefined;
  }

  /** The CFN_ERR_STORAGE of the write that failed, once one did. */
  get failed(): CfnError | undefined {
    return this.failure;
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

  /** With `sync`: fdatasyncs every file appended to since the last call (a failure is the ledger's last write). */
  async sync(): Promise<void> {
    if (this.failure) throw this.failure;
    if (!this.options.sync) return;
    const dirty = [...this.senders.entries()].filter(([, sender]) => sender.dirty);
    for (const [, sender] of dirty) sender.dirty = false;
    await Promise.all(
      dirty.map(
        ([from, sender]) =>
          new Promise<void>((resolve, reject) =>
            fdatasync(sender.fd, (error) => {
              if (!error) return resolve();
              // Closed under the call (shutdown): that says nothing about the disk.
              if (this.closed) return reject(error);
              reject(this.fail(from, error));
            }),
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
      if (this.failure) throw this.failure;
      try {
        sender = this.addSender(from, openSync(this.path(from), "a", 0o600));
      } catch (error) {
        throw this.fail(from, error);
      }
    }
    return sender;
  }

  private addSender(from: string, fd: number): SenderLedger {
    const sender: SenderLedger = {
      fd,
      bytes: 0,
      dirty: false,
      cursor: undefined,
      pending: undefined,
      written: undefined,
    };
    this.senders.set(from, sender);
    return sender;
  }

  private append(sender: SenderLedger, line: string): void {
    if (this.failure) throw this.failure;
    // After a torn last line (read back by load()), the next record starts on a line of its own:
    // the torn line must not swallow it.
    const bytes = Buffer.from(sender.torn ? `\n${line}` : line);
    let offset = 0;
    try {
      while (offset < bytes.length) offset += writeSync(sender.fd, bytes, offset);
    } catch (error) {
      if (offset > 0) sender.torn = true;
      sender.bytes += offset;
      throw this.fail(this.senderOf(sender), error);
    }
    sender.torn = false;
    sender.bytes += bytes.length;
    sender.dirty = true;
  }

  /** The sender whose file `sender` is (for the path in a failure). */
  private senderOf(sender: SenderLedger): string {
    for (const [from, candidate] of this.senders) if (candidate === sender) return from;
    throw new Error("invariant violated: a delivery ledger file of no sender");
  }

  /**
   * Records the ledger's first failed write (later ones are refused with it) and tells onFailure;
   * returns the CFN_ERR_STORAGE to throw.
   */
  private fail(from: string, error: unknown): CfnError {
    if (this.failure) return this.failure;
    const path = this.path(from);
    this.failure = new CfnError(
      "CFN_ERR_STORAGE",
      `delivery ledger ${path}: a write failed (${causeChain(error)}); it may have left a torn record, so the ledger takes no more writes — free the disk and start again`,
      { path, cause: error },
    );
    this.options.onFailure?.(this.failure);
    return this.failure;
  }

  /** Replaces the file by its last commit and the chain after it; the rename is atomic for a process crash. */
  private rewrite(from: string, sender: SenderLedger, commitLine: string): void {
    if (this.failure) throw this.failure;
    const path = this.path(from);
    const tmp = `${path}.tmp`;
    let line = sender.pending ? `${commitLine}{"i":${JSON.stringify(sender.pending)}}\n` : commitLine;
    if (sender.written) line += `{"w":${JSON.stringify(sender.written)}}\n`;
    let fd: number | undefined;
    try {
      fd = openSync(tmp, "w", 0o600);
      const bytes = Buffer.from(line);
      for (let offset = 0; offset < bytes.length; ) offset += writeSync(fd, bytes, offset);
      if (this.options.sync) fsyncSync(fd);
      renameSync(tmp, path);
    } catch (error) {
      // The old file stays (the commit goes there instead, or fails there too: the ledger's failure).
      if (fd !== undefined) closeSync(fd);
      rmSync(tmp, { force: true });
      if (!isErrno(error)) throw error;
      this.append(sender, commitLine);
      return;
    }
    closeSync(sender.fd);
    sender.fd = fd;
    sender.bytes = Buffer.byteLength(line);
    sender.dirty = false;
    sender.torn = false;
  }

  private load(from: string): void {
    const path = this.path(from);
    if (!existsSync(path)) return;
    const text = readFileSync(path, "utf8");
    // Opened here, not through sender(): a failure to open refuses the open (open()), it is not
    // a failed write of a running ledger.
    const sender = this.addSender(from, openSync(path, "a", 0o600));
    sender.bytes = Buffer.byteLength(text);
    // A torn last line must not swallow the next record appended after it (append() starts that
    // one with a newline; nothing is written here, so a data dir on a full disk still opens).
    if (text.length > 0 && !text.endsWith("\n")) sender.torn = true;
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
