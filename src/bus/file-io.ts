// The file steps of the bus's hot path, each one call: a send's write + rename (into a file it
// opens, or into a spare opened ahead, src/bus/spare.ts), a claim's rename + read, an ack's
// unlink. Two implementations make the same system calls with the same flags, so the files are
// identical: the Node-API helper (src/native/bus-io.c, built by `npm run build`), which saves
// node:fs's per-call JavaScript wrapper (≈ a fifth of a message's CPU on this VM), and node:fs
// itself, used when the helper is not built, cannot load, or the bus is configured with
// `nativeIo: false`. Only the helper also claims and acknowledges relative to directory
// descriptors (renameat, openat, unlinkat, which node:fs lacks); with node:fs a mailbox uses paths
// for those too. Errors are thrown like node:fs's (code, errno, syscall, path). The helper's
// one call outside the bus, setIdleScheduling, is loaded here too (src/node/background-threads.ts).

import {
  closeSync,
  constants,
  fstatSync,
  openSync,
  readSync,
  renameSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { createRequire } from "node:module";
import { constants as osConstants } from "node:os";
import { getSystemErrorMap } from "node:util";
import { BUS_IO_ADDON } from "../native/bus-io-build.js";

export interface FileIo {
  /** True for the Node-API helper. */
  readonly native: boolean;
  /**
   * Creates (or truncates) `tmpPath` with `mode`, writes `text` as UTF-8, renames it to `finalPath`
   * and closes it (the rename first: the file is complete once written, and the receiver's inotify
   * event, raised by the rename, does not wait for the close). On failure `tmpPath` is removed and
   * the error thrown.
   */
  writeAndRename(tmpPath: string, finalPath: string, text: string, mode: number): void;
  /**
   * Renames `fromPath` to `toPath` and reads the renamed file from its start into `buffer`, until
   * its end or a full buffer: a short read is the end (a regular file whose writer finished before
   * renaming it), so a small file costs one read. Returns the bytes read (buffer.length: there may
   * be more), or -1 when `fromPath` does not exist (another consumer renamed it first). The helper
   * closes the file's descriptor on its next call rather than before returning (off a receiver's
   * wake-up path); flush() closes it.
   */
  renameAndRead(fromPath: string, toPath: string, buffer: Buffer): number;
  /**
   * Creates a new empty file at `path` (O_WRONLY | O_CREAT | O_EXCL: never an existing one) with
   * `mode` and returns its descriptor: a sender's spare (src/bus/spare.ts).
   */
  openSpare(path: string, mode: number): number;
  /**
   * Writes `text` into the spare file open as `fd` at `sparePath`, renames it to `finalPath` and
   * closes `fd` (the rename first, as writeAndRename). On failure the spare is removed, `fd` closed
   * and the error thrown.
   */
  writeFdAndRename(fd: number, sparePath: string, finalPath: string, text: string): void;
  unlink(path: string): void;
  /**
   * Opens the directory at `path` for the *At calls below and returns its descriptor (close it with
   * closeSync), or -1 where those calls are not available (node:fs has no renameat): the caller
   * then keeps using paths. Throws like node:fs when the directory cannot be opened.
   */
  openDirectory(path: string): number;
  /**
   * renameAndRead with each file named relative to a directory descriptor from openDirectory: the
   * kernel resolves one name instead of the whole path (docs/BUS.md, "Directory descriptors").
   * Names are single path components. Same results as renameAndRead.
   */
  renameAndReadAt(fromDir: number, fromName: string, toDir: number, toName: string, buffer: Buffer): number;
  /** unlink of `name` in the directory open as `dir`. */
  unlinkAt(dir: number, name: string): void;
  /** Closes a descriptor held from the last renameAndRead, if any. */
  flush(): void;
}

const OPEN_WRITE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC;
const OPEN_SPARE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL;

/** Writes all of `text` to `fd` as UTF-8 (a short write, e.g. a full tmpfs, continues from bytes). */
function writeAll(fd: number, text: string): void {
  // writeSync encodes the string in C++.
  let written = writeSync(fd, text);
  const length = Buffer.byteLength(text);
  if (written < length) {
    const bytes = Buffer.from(text);
    while (written < length) written += writeSync(fd, bytes, written, length - written);
  }
}

/** The JavaScript implementation (node:fs). */
export const nodeFileIo: FileIo = {
  native: false,
  writeAndRename(tmpPath, finalPath, text, mode) {
    let fd: number;
    try {
      fd = openSync(tmpPath, OPEN_WRITE_FLAGS, mode);
    } catch (error) {
      try {
        unlinkSync(tmpPath); // O_TRUNC may have found a file of an earlier failed attempt
      } catch {}
      throw error;
    }
    nodeFileIo.writeFdAndRename(fd, tmpPath, finalPath, text);
  },
  renameAndRead(fromPath, toPath, buffer) {
    try {
      renameSync(fromPath, toPath);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return -1;
      throw error;
    }
    const fd = openRegularFile(toPath);
    if (fd === NOT_A_REGULAR_FILE) return NOT_A_REGULAR_FILE;
    try {
      let total = 0;
      while (total < buffer.length) {
        const count = readSync(fd, buffer, total, buffer.length - total, total);
        total += count;
        if (count === 0 || total < buffer.length) break;
      }
      return total;
    } finally {
      closeSync(fd);
    }
  },
  openSpare(path, mode) {
    return openSync(path, OPEN_SPARE_FLAGS, mode);
  },
  writeFdAndRename(fd, sparePath, finalPath, text) {
    try {
      try {
        writeAll(fd, text);
        renameSync(sparePath, finalPath);
      } finally {
        closeSync(fd);
      }
    } catch (error) {
      try {
        unlinkSync(sparePath);
      } catch {}
      throw error;
    }
  },
  unlink(path) {
    unlinkSync(path);
  },
  openDirectory() {
    return -1;
  },
  renameAndReadAt() {
    throw new Error("renameAndReadAt needs the compiled helper (openDirectory returned -1)");
  },
  unlinkAt() {
    throw new Error("unlinkAt needs the compiled helper (openDirectory returned -1)");
  },
  flush() {},
};

interface BusIoAddon {
  writeAndRename(tmpPath: string, finalPath: string, text: string, mode: number): number;
  renameAndRead(fromPath: string, toPath: string, buffer: Buffer): number;
  openSpare(path: string, mode: number): number;
  writeFdAndRename(fd: number, sparePath: string, finalPath: string, text: string): number;
  unlink(path: string): number;
  openDirectory(path: string): number;
  renameAndReadAt(fromDir: number, fromName: string, toDir: number, toName: string, buffer: Buffer): number;
  unlinkAt(dir: number, name: string): number;
  flush(): number;
  setIdleScheduling(tid: number): number;
}

/** The system call each failure step of src/native/bus-io.c names. */
const NATIVE_STEPS = ["", "open", "write", "rename", "read", "unlink", "argument", "sched_setscheduler"];
const STEP_RENAME = 3;
/** bus-io.c: the claimed name is no regular file (FIFO, directory, device, symlink). */
const STEP_NOT_REGULAR = 8;
/** renameAndRead's answer for a claimed entry that is no regular file: never opened for reading. */
export const NOT_A_REGULAR_FILE = -2;
/** Read-only, without blocking on a FIFO and without following a symlink. */
const OPEN_READ_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW;

/**
 * Opens `path` for reading if it is a regular file (what senders write); NOT_A_REGULAR_FILE for
 * a FIFO, directory, device or symlink, which is neither waited on nor followed.
 */
export function openRegularFile(path: string): number {
  let fd: number;
  try {
    fd = openSync(path, OPEN_READ_FLAGS);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ELOOP") return NOT_A_REGULAR_FILE;
    throw error;
  }
  try {
    if (fstatSync(fd).isFile()) return fd;
  } catch (error) {
    closeSync(fd);
    throw error;
  }
  closeSync(fd);
  return NOT_A_REGULAR_FILE;
}
const ENOENT = osConstants.errno.ENOENT;

/** An error shaped like node:fs's from a failure code of the helper: -(step × 65536 + errno). */
export function nativeError(code: number, path: string, dest?: string): NodeJS.ErrnoException {
  const step = Math.floor(-code / 65536);
  const errno = -code % 65536;
  const [name, description] = getSystemErrorMap().get(-errno) ?? [`E${errno}`, "unknown error"];
  const syscall = NATIVE_STEPS[step] ?? "unknown";
  const target = dest === undefined ? `'${path}'` : `'${path}' -> '${dest}'`;
  const error = new Error(`${name}: ${description}, ${syscall} ${target}`) as NodeJS.ErrnoException;
  error.errno = -errno;
  error.code = name;
  error.syscall = syscall;
  error.path = path;
  if (dest !== undefined) (error as NodeJS.ErrnoException & { dest: string }).dest = dest;
  return error;
}

function nativeFileIo(addon: BusIoAddon): FileIo {
  return {
    native: true,
    writeAndRename(tmpPath, finalPath, text, mode) {
      const code = addon.writeAndRename(tmpPath, finalPath, text, mode);
      if (code !== 0) {
        const rename = Math.floor(-code / 65536) === STEP_RENAME;
        throw nativeError(code, tmpPath, rename ? finalPath : undefined);
      }
    },
    renameAndRead(fromPath, toPath, buffer) {
      const result = addon.renameAndRead(fromPath, toPath, buffer);
      if (result >= 0) return result;
      if (result === -(STEP_RENAME * 65536 + ENOENT)) return -1;
      if (Math.floor(-result / 65536) === STEP_NOT_REGULAR) return NOT_A_REGULAR_FILE;
      throw nativeError(result, Math.floor(-result / 65536) === STEP_RENAME ? fromPath : toPath);
    },
    openSpare(path, mode) {
      const result = addon.openSpare(path, mode);
      if (result < 0) throw nativeError(result, path);
      return result;
    },
    writeFdAndRename(fd, sparePath, finalPath, text) {
      const code = addon.writeFdAndRename(fd, sparePath, finalPath, text);
      if (code !== 0) {
        const rename = Math.floor(-code / 65536) === STEP_RENAME;
        throw nativeError(code, sparePath, rename ? finalPath : undefined);
      }
    },
    unlink(path) {
      const code = addon.unlink(path);
      if (code !== 0) throw nativeError(code, path);
    },
    openDirectory(path) {
      const result = addon.openDirectory(path);
      if (result < 0) throw nativeError(result, path);
      return result;
    },
    renameAndReadAt(fromDir, fromName, toDir, toName, buffer) {
      const result = addon.renameAndReadAt(fromDir, fromName, toDir, toName, buffer);
      if (result >= 0) return result;
      if (result === -(STEP_RENAME * 65536 + ENOENT)) return -1;
      if (Math.floor(-result / 65536) === STEP_NOT_REGULAR) return NOT_A_REGULAR_FILE;
      throw nativeError(result, Math.floor(-result / 65536) === STEP_RENAME ? fromName : toName);
    },
    unlinkAt(dir, name) {
      const code = addon.unlinkAt(dir, name);
      if (code !== 0) throw nativeError(code, name);
    },
    flush() {
      addon.flush();
    },
  };
}

let loaded: { io: FileIo | undefined; addon?: BusIoAddon; reason?: string } | undefined;

/** The Node-API helper, or undefined (with the reason in nativeFileIoProblem()). Loaded once. */
export function loadNativeFileIo(): FileIo | undefined {
  if (!loaded) {
    try {
      const addon = createRequire(import.meta.url)(BUS_IO_ADDON) as BusIoAddon;
      if (typeof addon.renameAndReadAt !== "function" || typeof addon.setIdleScheduling !== "function")
        throw new Error("the built helper is out of date (npm run build compiles it again)");
      loaded = { io: nativeFileIo(addon), addon };
    } catch (error) {
      loaded = { io: undefined, reason: (error as Error).message.split("\n", 1)[0] };
    }
  }
  return loaded.io;
}

/**
 * Puts thread `tid` of this process under SCHED_IDLE through the helper (Linux). Throws a
 * node:fs-shaped error (syscall sched_setscheduler) on failure, or when the helper is missing.
 */
export function setIdleScheduling(tid: number): void {
  loadNativeFileIo();
  const addon = loaded?.addon;
  if (!addon) throw new Error(`the compiled helper is not available: ${loaded?.reason ?? "not loaded"}`);
  const code = addon.setIdleScheduling(tid);
  if (code !== 0) throw nativeError(code, `/proc/self/task/${tid}`);
}

/** Why the helper is not in use, once loadNativeFileIo() returned undefined. */
export function nativeFileIoProblem(): string | undefined {
  return loaded?.reason;
}

/** The implementation a bus uses: the helper when wanted and available, else node:fs. */
export function chooseFileIo(wantNative: boolean): FileIo {
  return (wantNative && loadNativeFileIo()) || nodeFileIo;
}
