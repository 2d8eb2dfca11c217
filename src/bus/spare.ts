// The sender's spare file (docs/PROTOCOL.md, "Sending"; docs/BUS.md, "Wake-up latency"): an empty
// file created ahead of time in <bus>/tmp/, so that the critical path of the next send is write +
// rename only; the open (the costliest of a send's system calls after an idle spell) is done after
// the previous send, off the time a receiver waits. A bus holds at most one spare.
//
//   <bus>/tmp/spare_<pid>_<UNIQ>      an empty file, 0600, open for writing by process <pid>
//
// The file is created with O_EXCL (never an existing one), renamed into an inbox by a send under
// the inbox's queued name, and removed when the bus closes or its process exits. A spare left by a
// process that died (kill -9) is removed by the next process that opens the bus.

import { closeSync, mkdirSync, readdirSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { isProcessAlive } from "./clock.js";
import type { FileIo } from "./file-io.js";
import { DIRECTORY_MODE, FILE_MODE } from "./layout.js";

/** Name of the bus-level directory of spare files. */
const SPARE_DIR = "tmp";
const SPARE_NAME = /^spare_([0-9]{1,10})_[A-Za-z0-9.-]{1,160}$/;

/** Spares held by buses of this process, removed when it exits (one listener for all). */
const held = new Set<SpareFile>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const spare of held) spare.discard();
  });
}

/** Removes the spares of processes that no longer exist. Returns how many were removed. */
export function sweepStaleSpares(busDir: string): number {
  let names: string[];
  try {
    names = readdirSync(join(busDir, SPARE_DIR));
  } catch {
    return 0;
  }
  let removed = 0;
  for (const name of names) {
    const match = SPARE_NAME.exec(name);
    if (!match || Number(match[1]) === process.pid || isProcessAlive(Number(match[1]))) continue;
    try {
      unlinkSync(join(busDir, SPARE_DIR, name));
      removed++;
    } catch {}
  }
  return removed;
}

export class SpareFile {
  private readonly dir: string;
  private fd = -1;
  private path = "";
  /** Set once the directory was created by this process (or found). */
  private dirReady = false;

  constructor(
    busDir: string,
    private readonly io: FileIo,
    private readonly nextUnique: () => string,
  ) {
    this.dir = join(busDir, SPARE_DIR);
  }

  /**
   * Writes `text` into the spare, renames it to `finalPath` and closes it. False (nothing
   * delivered, no spare held any longer) when there was no spare or a step failed: the caller then
   * writes the file the ordinary way, which reports the error if it persists.
   */
  deliver(finalPath: string, text: string): boolean {
    if (this.fd < 0) return false;
    const fd = this.fd;
    const path = this.path;
    this.fd = -1;
    held.delete(this);
    try {
      this.io.writeFdAndRename(fd, path, finalPath, text);
      return true;
    } catch {
      return false;
    }
  }

  /** Creates the next spare unless one is held. Failures only mean the next send has none. */
  refill(): void {
    if (this.fd >= 0) return;
    const path = `${this.dir}/spare_${process.pid}_${this.nextUnique()}`;
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        if (!this.dirReady) {
          mkdirSync(this.dir, { recursive: true, mode: DIRECTORY_MODE });
          this.dirReady = true;
        }
        this.fd = this.io.openSpare(path, FILE_MODE);
        this.path = path;
        installExitHook();
        held.add(this);
        return;
      } catch (error) {
        // The directory went away (the bus was removed): create it again once.
        if ((error as NodeJS.ErrnoException).code !== "ENOENT") return;
        this.dirReady = false;
      }
    }
  }

  /** Closes and removes the spare, if one is held. */
  discard(): void {
    if (this.fd < 0) return;
    held.delete(this);
    try {
      closeSync(this.fd);
    } catch {}
    try {
      unlinkSync(this.path);
    } catch {}
    this.fd = -1;
  }
}
