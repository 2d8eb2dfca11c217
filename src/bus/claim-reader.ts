// Reading a claimed file with the fewest syscalls: one read into a reusable buffer of
// messageBytesMax + 1 bytes settles a single-message file in three calls (open, read, close); only
// a file that fills the buffer (a batch) costs an fstat and more reads. Oversized files are refused
// before more than the limit is read.

import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";
import type { DeadLetterCause } from "./dead-letter.js";

/** Largest read buffer kept between reads (a batch may need more, once). */
export const READ_BUFFER_BYTES_KEPT = 8 * 1024 * 1024;
/** Extra bytes allowed per message of a batch file for its wrapper. */
export const BATCH_OVERHEAD_BYTES = 64;

export type ReadProblem = { cause: DeadLetterCause; reason: string };

export class ClaimReader {
  private buffer: Buffer;
  private readonly messageBytesMax: number;

  constructor(messageBytesMax: number) {
    this.messageBytesMax = messageBytesMax;
    this.buffer = Buffer.allocUnsafe(messageBytesMax + 1);
  }

  /** The text of the file at `path`, which names `count` messages, or why it is refused. */
  read(path: string, count: number): string | ReadProblem {
    const bytesMax =
      count === 1 ? this.messageBytesMax : count * (this.messageBytesMax + BATCH_OVERHEAD_BYTES);
    const fd = openSync(path, constants.O_RDONLY);
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
      return buffer.toString("utf8", 0, length);
    } finally {
      closeSync(fd);
    }
  }
}
