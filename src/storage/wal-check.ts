// Checking a LevelDB directory's write-ahead logs before LevelDB opens it.
//
// LevelDB replays its `NNNNNN.log` files on open with paranoid_checks off (classic-level offers no
// way to turn them on): a record that fails its checksum is dropped together with the rest of its
// 32 KiB block, the open succeeds, and the only trace is a line in the directory's LOG file, which
// the next open rotates away — while the damaged log itself is compacted and deleted. One flipped
// byte thus silently rolled back a Raft member's term, vote and acknowledged entries, and lost an
// acknowledged batch of 512 messages from a spool. So every open first reads the logs itself.
//
// The log format (LevelDB's doc/log_format.md): 32 KiB blocks of physical records, each a 7-byte
// header — masked CRC-32C of type + data (4 bytes, little-endian), data length (2), type (1: full,
// 2: first, 3: middle, 4: last fragment) — then the data. A block's last < 7 bytes are padding, a
// zero-filled area (type 0, length 0) is preallocation.
//
// What is damage and what is not: a crash, or a write that failed on a full disk (level-open.ts
// refuses every write after it), leaves at most a torn record at the END of the log, which was
// never reported written; LevelDB drops it, and so do we. A record that fails its checksum with a
// valid record after it in the same log is damage to data that was written and synced: the open is
// refused (CFN_ERR_STORAGE) unless the caller salvages, which keeps a copy of the damaged log.

import { closeSync, copyFileSync, fstatSync, openSync, readdirSync, readSync } from "node:fs";
import { join } from "node:path";

const BLOCK_BYTES = 32 * 1024;
const HEADER_BYTES = 7;
const LOG_FILE = /^[0-9]{6,}\.log$/;

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32C (Castagnoli) of bytes[start, end). */
export function crc32c(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let crc = 0xffffffff;
  for (let i = start; i < end; i++) crc = CRC32C_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** LevelDB's masked form of a stored CRC (crc32c.h: rotate right by 15, add a constant). */
function masked(crc: number): number {
  return (((crc >>> 15) | (crc << 17)) + 0xa282ead8) >>> 0;
}

/** Damage found in one log file. */
export interface LogDamage {
  file: string;
  /** Byte offset of the first record that fails its checksum (or whose length is impossible). */
  offset: number;
  /** How many records after it are intact: > 0, else it was a torn tail and no damage. */
  intactAfter: number;
  what: "checksum mismatch" | "bad record length";
}

/**
 * Reads every physical record of one log file; returns the damage (a bad record with intact ones
 * after it), or undefined when the log is whole or only its tail is torn.
 */
export function checkLogFile(path: string, file: string): LogDamage | undefined {
  const fd = openSync(path, "r");
  try {
    const size = fstatSync(fd).size;
    const block = Buffer.allocUnsafe(BLOCK_BYTES);
    let firstBad: { offset: number; what: LogDamage["what"] } | undefined;
    let intactAfter = 0;
    // One block at a time: a record never spans two.
    for (let blockStart = 0; blockStart < size; blockStart += BLOCK_BYTES) {
      const length = readFully(fd, block, Math.min(BLOCK_BYTES, size - blockStart), blockStart);
      let at = 0;
      while (at + HEADER_BYTES <= length) {
        const dataLength = block[at + 4] | (block[at + 5] << 8);
        const type = block[at + 6];
        if (type === 0 && dataLength === 0) break; // preallocated zeros: LevelDB skips the block
        const end = at + HEADER_BYTES + dataLength;
        if (end > length) {
          // Past the block: a torn tail when the file ends in this block, else a bad length.
          if (blockStart + length < size) firstBad ??= { offset: blockStart + at, what: "bad record length" };
          break;
        }
        const stored = block.readUInt32LE(at);
        if (masked(crc32c(block, at + 6, end)) !== stored) {
          // LevelDB drops the rest of the block. Reading on at the next header still finds the
          // records it drops with it when only data bytes were hit (garbage fails its checksum).
          firstBad ??= { offset: blockStart + at, what: "checksum mismatch" };
        } else if (firstBad) intactAfter++;
        at = end;
      }
    }
    if (!firstBad || intactAfter === 0) return undefined;
    return { file, offset: firstBad.offset, intactAfter, what: firstBad.what };
  } finally {
    closeSync(fd);
  }
}

function readFully(fd: number, buffer: Buffer, length: number, position: number): number {
  let done = 0;
  while (done < length) {
    const read = readSync(fd, buffer, done, length - done, position + done);
    if (read === 0) break;
    done += read;
  }
  return done;
}

/** Damage in the write-ahead logs of the LevelDB directory `dir` (none: an empty array). */
export function checkLogs(dir: string): LogDamage[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return []; // no directory yet: LevelDB creates it
  }
  const damage: LogDamage[] = [];
  for (const name of names.filter((entry) => LOG_FILE.test(entry)).sort()) {
    const found = checkLogFile(join(dir, name), name);
    if (found) damage.push(found);
  }
  return damage;
}

/** Copies each damaged log next to itself as `<file>.damaged-<ms>` before LevelDB drops its bad blocks. */
export function keepDamagedLogs(dir: string, damage: LogDamage[], nowMs = Date.now()): string[] {
  return damage.map((found) => {
    const copy = `${found.file}.damaged-${nowMs}`;
    copyFileSync(join(dir, found.file), join(dir, copy));
    return copy;
  });
}

/** One line per damaged log, for an error or a log entry. */
export function describeDamage(damage: LogDamage[]): string {
  return damage
    .map(
      (found) =>
        `${found.file}: ${found.what} at byte ${found.offset}, ${found.intactAfter} intact record(s) after it`,
    )
    .join("; ");
}
