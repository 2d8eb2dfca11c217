// /readyz's "catching up" (src/node/apply-lag.ts): a node with an entry committed and not yet
// applied at the moment of a probe is not catching up — under writes that is every moment — but
// one that does not apply, within APPLY_GRACE_MS, what was committed when its lag was first seen
// is, and so is one far behind at once.

import { describe, expect, it } from "vitest";
import { APPLY_GRACE_MS, APPLY_LAG_ENTRIES_MAX, ApplyLagWatch } from "../../src/node/apply-lag.js";

describe("apply lag for readiness", () => {
  it("is not catching up while applying keeps passing what was committed, however long the writes go on", () => {
    const watch = new ApplyLagWatch();
    // Every probe, for 10 grace windows, lands while one entry is committed and not applied yet.
    for (let t = 0, index = 1; t <= APPLY_GRACE_MS * 10; t += 50, index += 5)
      expect(watch.catchingUp(index, index + 1, t)).toBe(false);
  });

  it("is catching up once what was committed a grace window ago is still not applied, and ready again when it is", () => {
    const watch = new ApplyLagWatch();
    expect(watch.catchingUp(10, 12, 0)).toBe(false);
    expect(watch.catchingUp(11, 14, APPLY_GRACE_MS - 1)).toBe(false);
    expect(watch.catchingUp(11, 15, APPLY_GRACE_MS)).toBe(true);
    // It applied what was committed at 0: it moves, so the window starts again from 15.
    expect(watch.catchingUp(12, 15, APPLY_GRACE_MS * 2)).toBe(false);
    expect(watch.catchingUp(14, 16, APPLY_GRACE_MS * 3)).toBe(true);
    expect(watch.catchingUp(16, 16, APPLY_GRACE_MS * 3 + 1)).toBe(false);
  });

  it("is catching up at once when more than APPLY_LAG_ENTRIES_MAX entries behind", () => {
    const watch = new ApplyLagWatch();
    expect(watch.catchingUp(0, APPLY_LAG_ENTRIES_MAX + 1, 0)).toBe(true);
    expect(new ApplyLagWatch().catchingUp(0, APPLY_LAG_ENTRIES_MAX, 0)).toBe(false);
  });
});
