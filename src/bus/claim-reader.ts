// Claiming and reading a file with the fewest calls: the claim's rename and one read into a
// reusable buffer of messageBytesMax + 1 bytes are one FileIo step (src/bus/file-io.ts) for a
// single-message file; only a file that fills the buffer (a batch) is opened again for an fstat and
// more reads. Oversized files are refused before more than the limit is read.

import { isUtf8 } from "node:buffer";
import { closeSync, fstatSync, readSync } from "node:fs";
import type { DeadLetterCause } from "./dead-letter.js";
import { type FileIo, NOT_A_REGULAR_FILE, openRegularFile } from "./file-io.js";

/** Largest read buffer kept between reads (a batch may need more, once). */
export const READ_BUFFER_BYTES_KEPT = 8 * 1024 * 1024;
/** Extra bytes allowed per message of a batch file for its wrapper. */
export const BATCH_OVERHEAD_BYTES = 64;

export type ReadProblem = { cause: DeadLetterCause; reason: string };

/** Why a file that is not UTF-8 is refused (PROTOCOL.md §4: every file is UTF-8 JSON). */
export const NOT_UTF8_REASON =
  "not valid UTF-8: decoding would replace bytes and deliver a message other than the one written";

const NOT_UTF8: ReadProblem = { cause: "malformed", reason: NOT_UTF8_REASON };

/** The UTF-8 text of buffer[0, length), or why it is refused. */
function utf8Text(buffer: Buffer, length: number): string | ReadProblem {
  if (!isUtf8(buffer.subarray(0, length))) return NOT_UTF8;
  return buffer.toString("utf8", 0, length);
}

/** An inbox entry that is no regular file: no sender writes one; never read, never followed. */
const NOT_REGULAR: ReadProblem = {
  cause: "foreign",
  reason: "not a regular file (a FIFO, directory, device or symlink): not written by a sender",
};

export class ClaimReader {
  private buffer: Buffer;
  private readonly messageBytesMax: number;
  private readonly io: FileIo;

  constructor(messageBytesMax: number, io: FileIo) {
    this.messageBytesMax = messageBytesMax;
    this.io = io;
    this.buffer = Buffer.allocUnsafe(messageBytesMax + 1);
  }

  /**
   * Claims `inboxPath` by renaming it to `claimedPath` and returns the text of the file, which names
   * `count` messages, or why it is refused; null when another consumer claimed it first.
   */
  claim(inboxPath: string, claimedPath: string, count: number): string | ReadProblem | null {
    return this.text(this.io.renameAndRead(inboxPath, claimedPath, this.buffer), claimedPath, count);
  }

  /**
   * claim() with both names relative to directory descriptors (FileIo.openDirectory): the inbox's
   * `fromDir` and the claims' `toDir`, where `claimedPath` is `claimedName` in `toDir`.
   */
  claimAt(
    fromDir: number,
    fileName: string,
    toDir: number,
    claimedName: string,
    claimedPath: string,
    count: number,
  ): string | ReadProblem | null {
    const length = this.io.renameAndReadAt(fromDir, fileName, toDir, claimedName, this.buffer);
    return this.text(length, claimedPath, count);
  }

  /** The text of a claim whose rename + read returned `length` (-1: the file was gone). */
  private text(length: number, claimedPath: string, count: number): string | ReadProblem | null {
    if (length === NOT_A_REGULAR_FILE) return NOT_REGULAR;
    if (length < 0) return null;
    // A file that filled the buffer is a batch or oversized: read it again with its size known.
    if (length === this.buffer.length) return this.read(claimedPath, count);
    // The buffer may have grown past messageBytesMax + 1 for an earlier batch (read() keeps up to
    // READ_BUFFER_BYTES_KEPT): a file it held whole is checked against its own bound all the same.
    const bytesMax = this.bytesMaxOf(count);
    if (length > bytesMax)
      return { cause: "oversized", reason: `file of ${length} bytes exceeds ${bytesMax}` };
    return utf8Text(this.buffer, length);
  }

  /** The most bytes of a file that names `count` messages. */
  private bytesMaxOf(count: number): number {
    return count === 1 ? this.messageBytesMax : count * (this.messageBytesMax + BATCH_OVERHEAD_BYTES);
  }

  /** The text of the (claimed) file at `path`, which names `count` messages, or why it is refused. */
  read(path: string, count: number): string | ReadProblem {
    const bytesMax = this.bytesMaxOf(count);
    const fd = openRegularFile(path);
    if (fd === NOT_A_REGULAR_FILE) return NOT_REGULAR;
    try {
      let buffer = this.buffer;
      let length = readSync(fd, buffer, 0, buffer.length, 0);
      if (length === buffer.length) {
        const size = fstatSync(fd).size;
        if (size > bytesMax)
          return { cause: "oversized", reason: `file of ${size} bytes exceeds ${bytesMax}` };
        if (size >= buffer.length) {
          buffer = Buffer.allocUnsafe(size + 1);
          this.buffer.copy(buffer, 0, 0, length);
          if (size + 1 <= READ_BUFFER_BYTES_KEPT) this.buffer = buffer;
        }
        for (;;) {
          const read = readSync(fd, buffer, length, buffer.length - length, length);
          if (read === 0) break;
          length += read;
          if (length > bytesMax) return { cause: "oversized", reason: `file exceeds ${bytesMax} bytes` };
          if (length === buffer.length) {
            const bigger = Buffer.allocUnsafe(buffer.length * 2);
            buffer.copy(bigger, 0, 0, length);
            buffer = bigger;
          }
        }
      }
      if (length > bytesMax)
        return { cause: "oversized", reason: `file of ${length} bytes exceeds ${bytesMax}` };
      return utf8Text(buffer, length);
    } finally {
      closeSync(fd);
    }
  }
}
