// fs.watch on one inbox, used only as a wake-up and as a hint of which names arrived. inotify drops
// events past its queue limit (16,384) and libuv drops the overflow notice itself, so the names
// reported here are trusted only while the watch has run without a gap since the receiver's last
// readdir; anything else makes the receiver rescan (docs/BUS.md, "Receiving efficiently").

import { type FSWatcher, watch } from "node:fs";
import type { Logger } from "../obs/logger.js";

/** Names remembered between two receives; past this the reported names are incomplete: rescan. */
export const ARRIVALS_MAX = 64;
/** Own claims remembered so their departure events are not taken for arrivals. */
export const OWN_CLAIMS_MAX = 4096;

export class InboxWatch {
  /** Names reported since the receiver last consumed them (arrivals, not yet tried). */
  arrivals: string[] = [];
  /**
   * False when `arrivals` may miss a name: the watch was off at some point since the last scan,
   * or more than ARRIVALS_MAX names arrived, or an event came without a name.
   */
  complete = false;
  /** Inbox names this mailbox claimed whose departure event has not been seen yet. */
  private readonly ownClaims = new Set<string>();
  private watcher: FSWatcher | undefined;
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

  /** Remembers an own claim, whose departure from the inbox inotify reports like an arrival. */
  claimed(fileName: string): void {
    if (this.watcher === undefined) return;
    if (this.ownClaims.size >= OWN_CLAIMS_MAX) this.ownClaims.clear();
    this.ownClaims.add(fileName);
  }

  start(): void {
    if (this.watcher || !this.wanted) return;
    try {
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
   * Stops watching while the receiver works through a backlog: inotify would otherwise cost two
   * callbacks per file (the sender's rename in, our claim out). start() re-arms it.
   */
  pause(): void {
    if (!this.watcher) return;
    this.watcher.close();
    this.watcher = undefined;
    this.arrivals = [];
    this.ownClaims.clear();
    this.complete = false;
  }

  /** Stops for good (mailbox closed). */
  stop(): void {
    this.wanted = false;
    this.pause();
    this.wake?.();
  }

  /** Resolves on a reported arrival, after `waitMs`, or on stop(). */
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
    } else if (this.ownClaims.delete(fileName)) {
      return; // our own claim leaving the inbox: nothing arrived
    } else if (this.arrivals.length < ARRIVALS_MAX) {
      this.arrivals.push(fileName);
    } else {
      this.complete = false;
    }
    this.wake?.();
  }
}
