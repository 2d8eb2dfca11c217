// Damping a member whose link flaps. The leader marks a member down after nodeDownAfterMs of
// silence and active again as soon as it hears it: a link down and up every second (tested
// between network namespaces) made it commit 59 member state changes in a minute, each one
// moving that member's agents between up and down. The damper makes a member that went down
// again soon after it came back wait longer before it counts as back: it must be heard without a
// gap for an up delay that doubles with each such flap (from nodeDownAfterMs up to
// FLAP_UP_DELAY_MAX_MS), and is forgotten once the member stayed up for FLAP_WINDOW_MS. A member
// that goes down once (a restart, a crash) comes back as before, without delay. Leader-local
// state: a new leader starts without history, as the liveness view does.

/** A member that goes down within this long of coming back is flapping, ms. */
export const FLAP_WINDOW_MS = 60_000;
/** Longest up delay of a flapping member, ms. */
export const FLAP_UP_DELAY_MAX_MS = 30_000;
/** Most members tracked (the membership is far smaller; a bound all the same). */
export const FLAP_MEMBERS_MAX = 4096;

interface MemberHistory {
  /** When the leader last marked it active, ms since the epoch. */
  upAtMs: number;
  /** How long it must be heard without a gap before it counts as back, ms (0: at once). */
  upDelayMs: number;
}

export class FlapDamper {
  private readonly history = new Map<string, MemberHistory>();

  constructor(private readonly downAfterMs: number) {}

  /** The leader marks `id` down at `nowMs`. */
  wentDown(id: string, nowMs: number): void {
    const history = this.history.get(id);
    if (!history) return; // never seen come back: its first return is not delayed
    const flapping = nowMs - history.upAtMs < FLAP_WINDOW_MS;
    history.upDelayMs = flapping
      ? Math.min(FLAP_UP_DELAY_MAX_MS, Math.max(this.downAfterMs, 2 * history.upDelayMs))
      : 0;
  }

  /** The leader marks `id` active at `nowMs`. */
  cameUp(id: string, nowMs: number): void {
    const history = this.history.get(id);
    if (history) {
      history.upAtMs = nowMs;
      return;
    }
    if (this.history.size >= FLAP_MEMBERS_MAX)
      this.history.delete(this.history.keys().next().value as string);
    this.history.set(id, { upAtMs: nowMs, upDelayMs: 0 });
  }

  /** True when `id`, heard without a gap for `heardForMs`, counts as back. */
  isBack(id: string, heardForMs: number): boolean {
    return heardForMs >= (this.history.get(id)?.upDelayMs ?? 0);
  }

  /** The up delay `id` must wait, ms (status, tests). */
  upDelayOf(id: string): number {
    return this.history.get(id)?.upDelayMs ?? 0;
  }

  /** Forgets members no longer in the membership. */
  retain(members: ReadonlySet<string>): void {
    for (const id of this.history.keys()) if (!members.has(id)) this.history.delete(id);
  }
}
