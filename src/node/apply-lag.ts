// When a node counts as "catching up" for /readyz: not whenever applied < commit — an entry
// committed and not yet applied is there at any moment under writes, on the leader too, and a
// probe that happened to land then flapped a healthy node out of its load balancer — but when it
// has not applied, within APPLY_GRACE_MS, what it knew committed at the start of that window, or
// is more than APPLY_LAG_ENTRIES_MAX entries behind (a node restarting far behind is not ready at
// its first probe).

/** What was committed this long ago must be applied by now. */
export const APPLY_GRACE_MS = 500;
/** A node this many committed entries behind its applied index is catching up at once. */
export const APPLY_LAG_ENTRIES_MAX = 100;

export class ApplyLagWatch {
  /** The commit index seen when the current lag was first seen, and when. */
  private target: { commit: number; sinceMs: number } | undefined;

  /** Whether a node with these indexes is catching up, given the probes seen before. */
  catchingUp(applied: number, commit: number, nowMs: number): boolean {
    if (applied >= commit) {
      this.target = undefined;
      return false;
    }
    if (commit - applied > APPLY_LAG_ENTRIES_MAX) return true;
    // Applied past what was committed when the lag was seen: it keeps up; watch the new commit.
    if (!this.target || applied >= this.target.commit) this.target = { commit, sinceMs: nowMs };
    return nowMs - this.target.sinceMs >= APPLY_GRACE_MS;
  }
}
