// What the persistence mirror and the delivery spool do with a stored record that does not open
// (CFN_ERR_DECRYPT: altered on disk, or sealed with a key this node no longer has): it is set
// aside with its reason — never delivered, never a crash — and counted in the log. And how a key
// file is read at start (readKeyFileBytes): never waiting on a FIFO, only a regular file.

import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";
import { writeDeadLetter } from "../bus/dead-letter.js";
import { CfnError, isCfnError } from "../errors.js";
import type { Logger } from "../obs/logger.js";

/** Most bytes a key file may hold (a key is 32 raw bytes, 64 hex digits or 44 base64 characters). */
export const KEY_FILE_BYTES_MAX = 4096;

/**
 * The bytes of the key file at `path`, checked on the file opened (no race with a swap of the
 * name): a regular file (a symlink to one is followed; a FIFO, directory, socket or device is
 * refused — opened with O_NONBLOCK, so a FIFO never blocks the start), not readable by group or
 * others, at most KEY_FILE_BYTES_MAX bytes. Every refusal is CFN_ERR_KEY_FILE naming the path.
 * The caller (record-cipher.ts readKeyFile) parses the key from the bytes.
 */
export function readKeyFileBytes(path: string): Buffer {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    throw new CfnError(
      "CFN_ERR_KEY_FILE",
      `cannot read encryption key file ${path}: ${(error as Error).message}`,
      { path },
    );
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) {
      const kind = stat.isFIFO()
        ? "a FIFO"
        : stat.isDirectory()
          ? "a directory"
          : stat.isSocket()
            ? "a socket"
            : "a device";
      throw new CfnError(
        "CFN_ERR_KEY_FILE",
        `encryption key file ${path} is ${kind}, not a regular file; it must be a file of 32 bytes (mode 600)`,
        { path },
      );
    }
    if ((stat.mode & 0o077) !== 0) {
      throw new CfnError(
        "CFN_ERR_KEY_FILE",
        `encryption key file ${path} has mode ${(stat.mode & 0o777).toString(8)}; it must be 600 (chmod 600 ${path})`,
        { path },
      );
    }
    if (stat.size > KEY_FILE_BYTES_MAX) {
      throw new CfnError(
        "CFN_ERR_KEY_FILE",
        `encryption key file ${path} must hold 32 bytes (raw, 64 hex digits or base64); it holds ${stat.size} bytes`,
        { path },
      );
    }
    const buffer = Buffer.allocUnsafe(KEY_FILE_BYTES_MAX + 1);
    let length = 0;
    for (;;) {
      const read = readSync(fd, buffer, length, buffer.length - length, length);
      length += read;
      if (read === 0 || length === buffer.length) break;
    }
    return Buffer.from(buffer.subarray(0, length));
  } catch (error) {
    if (isCfnError(error)) throw error;
    throw new CfnError(
      "CFN_ERR_KEY_FILE",
      `cannot read encryption key file ${path}: ${(error as Error).message}`,
      { path },
    );
  } finally {
    closeSync(fd);
  }
}

/** The reason of an unopenable record (the CfnError's message), or rethrows anything else. */
export function unreadableReason(error: unknown): string {
  if (isCfnError(error, "CFN_ERR_DECRYPT")) return error.message;
  throw error;
}

/**
 * Writes a mirrored message that cannot be decrypted into the agent's dead-letter dir, as the
 * bus does: the stored (sealed) text as <name>, its reason as <name>.reason.
 */
export function deadLetterUnreadable(
  deadDir: string,
  agent: string,
  name: string,
  stored: string,
  error: unknown,
  logger: Logger,
): void {
  const reason = unreadableReason(error);
  writeDeadLetter(deadDir, name, stored, { cause: "undecryptable", reason, agent });
  logger.error("mirrored message cannot be decrypted; moved to dead-letter", { agent, name, reason });
}
