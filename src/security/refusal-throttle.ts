// How many refused requests per source address get their own audit entry and warn line. A client
// that hammers the API with refused requests (no token, a wrong one, a forbidden route) would
// otherwise write a synced audit entry per request — thousands per second — and push the real
// entries out of the log (security.auditEntriesMax). Per address, at most `perSecondMax`
// refusals a second are recorded one by one; the rest are counted, and once their second is
// over one summary says how many refusals from that address were suppressed. Only refusals pass
// through here: an authorized request is never suppressed.

/** Suppressed refusals of one address in one window, reported once the window is over. */
export interface SuppressedRefusals {
  remote: string;
  suppressed: number;
  /** Times of the first and last suppressed refusal (epoch ms). */
  firstMs: number;
  lastMs: number;
  /** Suppressed refusals by reason (token, forbidden). */
  reasons: Record<string, number>;
  /** Principals named by the suppressed requests (at most PRINCIPALS_SHOWN_MAX). */
  principals: string[];
}

export interface RefusalThrottleOptions {
  perSecondMax: number;
  now: () => number;
  onSuppressed: (summary: SuppressedRefusals) => void;
  /** Addresses tracked at once; refusals from further addresses share one bucket. */
  remotesMax?: number;
}

const WINDOW_MS = 1000;
/** Beyond this many addresses in one window, the rest share OVERFLOW_REMOTE's bucket. */
export const REFUSAL_REMOTES_MAX = 10_000;
export const OVERFLOW_REMOTE = "(other addresses)";
const PRINCIPALS_SHOWN_MAX = 8;

interface Window {
  startMs: number;
  recorded: number;
  suppressed?: SuppressedRefusals;
}

export class RefusalThrottle {
  private readonly options: RefusalThrottleOptions;
  private readonly windows = new Map<string, Window>();
  private timer: NodeJS.Timeout | undefined;

  constructor(options: RefusalThrottleOptions) {
    this.options = options;
  }

  /** True: record this refusal (audit entry, warn line); false: it is counted in a summary. */
  admit(remote: string, principal: string, reason: string): boolean {
    const now = this.options.now();
    const remotesMax = this.options.remotesMax ?? REFUSAL_REMOTES_MAX;
    const key = this.windows.has(remote) || this.windows.size < remotesMax ? remote : OVERFLOW_REMOTE;
    let window = this.windows.get(key);
    if (window && now - window.startMs >= WINDOW_MS) {
      this.report(window);
      window = undefined;
    }
    if (!window) {
      window = { startMs: now, recorded: 0 };
      this.windows.set(key, window);
      this.startSweeping();
    }
    if (window.recorded < this.options.perSecondMax) {
      window.recorded++;
      return true;
    }
    window.suppressed ??= {
      remote: key,
      suppressed: 0,
      firstMs: now,
      lastMs: now,
      reasons: {},
      principals: [],
    };
    const suppressed = window.suppressed;
    suppressed.suppressed++;
    suppressed.lastMs = now;
    suppressed.reasons[reason] = (suppressed.reasons[reason] ?? 0) + 1;
    if (!suppressed.principals.includes(principal) && suppressed.principals.length < PRINCIPALS_SHOWN_MAX)
      suppressed.principals.push(principal);
    return false;
  }

  /** Reports windows that are over (every window with `all`) and forgets them. */
  sweep(all = false): void {
    const now = this.options.now();
    for (const [key, window] of this.windows) {
      if (!all && now - window.startMs < WINDOW_MS) continue;
      this.windows.delete(key);
      this.report(window);
    }
    if (this.windows.size === 0) this.stopSweeping();
  }

  /** Reports what is still counted (at shutdown) and stops the timer. */
  close(): void {
    this.sweep(true);
    this.stopSweeping();
  }

  private report(window: Window): void {
    const summary = window.suppressed;
    window.suppressed = undefined;
    if (summary) this.options.onSuppressed(summary);
  }

  private startSweeping(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.sweep(), WINDOW_MS);
    this.timer.unref();
  }

  private stopSweeping(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
