// fs.watch on one inbox, used only as a wake-up and as a hint of which names arrived. inotify drops
// events past its queue limit (16,384) and libuv drops the overflow notice itself, so the names
// reported here are trusted only while the watch has run without a gap since the receiver's last
// readdir; anything else makes the receiver rescan (docs/BUS.md, "Receiving efficiently").

import { type FSWatcher, statSync, watch } from "node:fs";
import type { Logger } from "../obs/logger.js";

/** Names remembered between two receives; past this the reported names are incomplete: rescan. */
export const ARRIVALS_MAX = 64;
/** Own claims remembered so that their events are not taken for arrivals; past it, forgotten. */
export const OWN_CLAIMS_MAX = 4096;
/** Names whose arrival event was read and that this mailbox did not claim; past it, forgotten. */
export const ARRIVALS_SEEN_MAX = 4096;

export class InboxWatch {
  /** Names reported since the receiver last consumed them (arrivals, not yet tried). */
  arrivals: string[] = [];
  /**
   * False when `arrivals` may miss a name: the watch was off at some point since the last scan,
   * or more than ARRIVALS_MAX names arrived, or an event came without a name.
   */
  complete = false;
  /**
   * Inbox names this mailbox claimed, with the number of their events not read yet: 1 (the
   * departure, our rename out) when the arrival event had been read before the claim, else 2.
   * Behind a receiver working through a backlog, inotify's events lag by thousands of files, so a
   * file found by a listing is often claimed before its arrival event comes in; dropping only one
   * event per claim took the other for a new arrival, a claim that found nothing (up to one per
   * message in a throughput run, docs/PERFORMANCE.md).
   */
  private readonly ownClaims = new Map<string, number>();
  /** Names whose arrival event was read and that this mailbox has not claimed (yet). */
  private readonly arrivalsSeen = new Set<string>();
  private watcher: FSWatcher | undefined;
  /**
   * Inode and creation time of the directory the running watch was put on. inotify watches an
   * inode, not a path: a directory removed and created again under the same path is not watched
   * until start() again. (The creation time tells a new directory that reuses a freed inode
   * number apart, where the filesystem records one.)
   */
  private watchedIno: number | undefined;
  private watchedBirthMs: number | undefined;
  private wanted: boolean;
  private wake: (() => void) | undefined;
  private readonly dir: string;
  private readonly logger: Logger;

  constructor(dir: string, logger: Logger, wanted: boolean) {
    this.dir = dir;
    this.logger = logger;
    this.wanted = wanted;
    if (wanted) this.start();
  }

  /** The watch runs now. */
  get active(): boolean {
    return this.watcher !== undefined;
  }

  /** The watch was wanted but is paused (a backlog); re-arm with start() and rescan. */
  get paused(): boolean {
    return this.wanted && this.watcher === undefined;
  }

  /** The receiver listed the inbox: what was reported before is covered by that listing. */
  listed(): void {
    this.arrivals = [];
    this.complete = this.watcher !== undefined;
  }

  /**
   * Remembers an own claim, whose events inotify reports like arrivals. Also while paused: a watch
   * closed from inside its own callback keeps libuv's kernel watch, so its events can still come
   * to the watch that start() opens next.
   */
  claimed(fileName: string): void {
    if (!this.wanted) return;
    if (this.ownClaims.size >= OWN_CLAIMS_MAX) this.ownClaims.clear();
    this.ownClaims.set(fileName, this.arrivalsSeen.delete(fileName) ? 1 : 2);
  }

  start(): void {
    if (this.watcher || !this.wanted) return;
    try {
      const watched = statSync(this.dir);
      this.watchedIno = watched.ino;
      this.watchedBirthMs = watched.birthtimeMs;
      this.watcher = watch(this.dir, { persistent: false }, (_event, fileName) => this.onEvent(fileName));
      this.watcher.on("error", (error) => {
        this.logger.warn("inbox watch failed; polling every rescanIntervalMs", { dir: this.dir, error });
        this.stop();
        this.complete = false;
      });
    } catch (error) {
      this.logger.warn("cannot watch inbox; polling every rescanIntervalMs", { dir: this.dir, error });
      this.wanted = false;
    }
  }

  /**
   * True when the watch runs on a directory that is no longer the one at its path (removed, or
   * removed and created again): its events will not come. One stat; the caller rate-limits it.
   */
  replaced(): boolean {
    if (!this.watcher) return false;
    try {
      const now = statSync(this.dir);
      return now.ino !== this.watchedIno || now.birthtimeMs !== this.watchedBirthMs;
    } catch {
      return true;
    }
  }

  /** Puts the watch on the directory now at its path (after replaced(), or new directories). */
  restart(): void {
    if (!this.wanted) return;
    this.pause();
    this.start();
  }

  /**
   * Stops watching while the receiver works through a backlog: inotify would otherwise cost two
   * callbacks per file (the sender's rename in, our claim out). start() re-arms it.
   */
  pause(): void {
    if (!this.watcher) return;
    this.watcher.close();
    this.watcher = undefined;
    this.arrivals = [];
    this.complete = false;
  }

  /** Stops for good (mailbox closed). */
  stop(): void {
    this.wanted = false;
    this.pause();
    this.wake?.();
  }

  /** Ends a wait() now (a caller's abort), as an arrival would. */
  interrupt(): void {
    this.wake?.();
  }

  /** Resolves on a reported arrival, after `waitMs`, on stop() or on interrupt(). */
  wait(waitMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, waitMs);
      const self = this;
      function done(): void {
        clearTimeout(timer);
        if (self.wake === done) self.wake = undefined;
        resolve();
      }
      this.wake = done;
    });
  }

  private onEvent(fileName: string | Buffer | null): void {
    if (typeof fileName !== "string" || fileName.length === 0) {
      this.complete = false;
      this.wake?.();
      return;
    }
    const pending = this.ownClaims.get(fileName);
    if (pending !== undefined) {
      // An event of a file we claimed (its departure, or its late arrival): nothing new.
      if (pending > 1) this.ownClaims.set(fileName, pending - 1);
      else this.ownClaims.delete(fileName);
      return;
    }
    if (this.arrivalsSeen.size >= ARRIVALS_SEEN_MAX) this.arrivalsSeen.clear();
    this.arrivalsSeen.add(fileName);
    if (this.arrivals.length < ARRIVALS_MAX) this.arrivals.push(fileName);
    else this.complete = false;
    this.wake?.();
  }
}
