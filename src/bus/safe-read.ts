// Reading an inbox entry outside the receive path (the persistence mirror, the delivery
// receiver's crash recovery) as carefully as a claim reads it (claim-reader.ts): an inbox is
// writable by every agent of the host, so an entry may be a FIFO (an open would wait for a writer
// forever), a symlink to a file outside the bus, a directory or a device, or a file far larger
// than any sender writes. Such an entry is never waited on, never followed and never read past
// the bus's bound for its name: the caller skips it, and the receiver that claims it moves it to
// dead-letter with the reason.

import { isUtf8 } from "node:buffer";
import { closeSync, fstatSync, readSync } from "node:fs";
import { BATCH_OVERHEAD_BYTES, NOT_UTF8_REASON } from "./claim-reader.js";
import { NOT_A_REGULAR_FILE, openRegularFile } from "./file-io.js";

/**
 * Why an entry was not read: not a regular file (FIFO, symlink, directory, device), too large, or
 * not UTF-8 (decoding would replace bytes: what is kept or restored would differ from the file).
 */
export type UnreadableEntry = "not_regular" | "oversized" | "not_utf8";

export type EntryRead =
  | { ok: true; text: string }
  /** The entry is gone (claimed, acknowledged, or moved on meanwhile). */
  | { ok: false; problem: "gone" }
  | { ok: false; problem: UnreadableEntry; reason: string };

/**
 * N of a queued (P_T_N_UNIQ_D) or claimed (P_T_N_UNIQ_D_DEADLINE_PID) name, as the bus parses it
 * (one to nine digits, no leading zero); 1 for any other name.
 */
export function messageCountOfName(fileName: string): number {
  const first = fileName.indexOf("_");
  const second = first < 0 ? -1 : fileName.indexOf("_", first + 1);
  const third = second < 0 ? -1 : fileName.indexOf("_", second + 1);
  if (third < 0) return 1;
  const digits = fileName.slice(second + 1, third);
  return /^[1-9][0-9]{0,8}$/.test(digits) ? Number(digits) : 1;
}

/**
 * The most bytes the bus reads of a file named `fileName` (ClaimReader.read): messageBytesMax for
 * a single message, N × (messageBytesMax + BATCH_OVERHEAD_BYTES) for a batch of N.
 */
export function fileBytesMaxOf(fileName: string, messageBytesMax: number): number {
  const count = messageCountOfName(fileName);
  return count === 1 ? messageBytesMax : count * (messageBytesMax + BATCH_OVERHEAD_BYTES);
}

/**
 * The UTF-8 text of the regular file at `path` if it holds at most `bytesMax` bytes. Opened with
 * O_RDONLY | O_NOFOLLOW | O_NONBLOCK, checked with fstat, read at most bytesMax + 1 bytes: never
 * blocks on a FIFO, never follows a symlink, never loads more than the bound. Errors other than
 * a vanished entry (ENOENT) are thrown.
 */
export function readInboxEntry(path: string, bytesMax: number): EntryRead {
  let fd: number;
  try {
    fd = openRegularFile(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return { ok: false, problem: "gone" };
    throw error;
  }
  if (fd === NOT_A_REGULAR_FILE)
    return {
      ok: false,
      problem: "not_regular",
      reason: "not a regular file (a FIFO, directory, device or symlink)",
    };
  try {
    const size = fstatSync(fd).size;
    if (size > bytesMax)
      return { ok: false, problem: "oversized", reason: `file of ${size} bytes exceeds ${bytesMax}` };
    // Read to the end, at most one byte more than the bound: a file that grew since the fstat
    // (written in place, not renamed in) is read on to its end or caught, never loaded past it.
    let buffer = Buffer.allocUnsafe(Math.min(size, bytesMax) + 1);
    let length = 0;
    for (;;) {
      const read = readSync(fd, buffer, length, buffer.length - length, length);
      if (read === 0) break;
      length += read;
      if (length > bytesMax) break;
      if (length === buffer.length) {
        const bigger = Buffer.allocUnsafe(Math.min(buffer.length * 2, bytesMax + 1));
        buffer.copy(bigger, 0, 0, length);
        buffer = bigger;
      }
    }
    if (length > bytesMax)
      return { ok: false, problem: "oversized", reason: `file exceeds ${bytesMax} bytes` };
    if (!isUtf8(buffer.subarray(0, length)))
      return { ok: false, problem: "not_utf8", reason: NOT_UTF8_REASON };
    return { ok: true, text: buffer.toString("utf8", 0, length) };
  } finally {
    closeSync(fd);
  }
}
