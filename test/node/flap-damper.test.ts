// Member liveness damping (src/node/routing/flap-damper.ts): a member whose link flaps waits
// longer before it counts as back; one that goes down once comes back at once.

import { describe, expect, it } from "vitest";
import { FLAP_UP_DELAY_MAX_MS, FLAP_WINDOW_MS, FlapDamper } from "../../src/node/routing/flap-damper.js";
import {
  encodeRoutingCommand,
  planMemberStates,
  type RoutingCommand,
  RoutingStateMachine,
} from "../../src/node/routing/index.js";
import { EntryType } from "../../src/raft/types.js";

const DOWN_AFTER_MS = 800;
const HEALTH_INTERVAL_MS = 200;

describe("flap damper", () => {
  it("lets a member that went down once come back at once", () => {
    const damper = new FlapDamper(DOWN_AFTER_MS);
    damper.cameUp("n2", 0);
    damper.wentDown("n2", FLAP_WINDOW_MS + 1); // it stayed up for a whole window: no flap
    expect(damper.isBack("n2", 0)).toBe(true);
    const fresh = new FlapDamper(DOWN_AFTER_MS);
    fresh.wentDown("n3", 5); // never seen come back: a restart
    expect(fresh.isBack("n3", 0)).toBe(true);
  });

  it("doubles the up delay of a member that keeps going down soon after it came back, up to the cap", () => {
    const damper = new FlapDamper(DOWN_AFTER_MS);
    let now = 0;
    const delays: number[] = [];
    for (let flap = 0; flap < 8; flap++) {
      damper.cameUp("n2", now);
      now += 1_000;
      damper.wentDown("n2", now);
      delays.push(damper.upDelayOf("n2"));
      now += 1_000;
    }
    expect(delays).toEqual([800, 1_600, 3_200, 6_400, 12_800, 25_600, 30_000, 30_000]);
    expect(FLAP_UP_DELAY_MAX_MS).toBe(30_000);
    expect(damper.isBack("n2", 29_999)).toBe(false);
    expect(damper.isBack("n2", 30_000)).toBe(true);
  });

  it("a link down and up every second for a minute: a handful of state changes instead of one per flap", () => {
    const changes = (damped: boolean): number => {
      const machine = new RoutingStateMachine();
      let index = 0;
      const apply = (command: RoutingCommand) =>
        machine.apply({
          term: 1,
          index: ++index,
          type: EntryType.Normal,
          data: encodeRoutingCommand(command),
        });
      for (const id of ["n1", "n2"])
        apply({
          op: "member.upsert",
          id,
          peerUrl: `ws://127.0.0.1:1/${id}`,
          apiUrl: `http://127.0.0.1:1/${id}`,
        });
      const damper = new FlapDamper(DOWN_AFTER_MS);
      let lastHeard = 0;
      let heardSince = 0;
      let count = 0;
      for (let now = 0; now <= 60_000; now += 100) {
        const linkUp = Math.floor(now / 1_000) % 2 === 0;
        if (linkUp && now % HEALTH_INTERVAL_MS === 0) {
          if (now - lastHeard > 2 * HEALTH_INTERVAL_MS) heardSince = now; // as ControlPlane tracks it
          lastHeard = now;
        }
        const alive = new Set(["n1", ...(now - lastHeard <= DOWN_AFTER_MS ? ["n2"] : [])]);
        const heardFor = now - lastHeard > 2 * HEALTH_INTERVAL_MS ? 0 : now - heardSince;
        const view = damped ? { alive, isBack: (id: string) => damper.isBack(id, heardFor) } : { alive };
        for (const command of planMemberStates(machine.state, view)) {
          apply(command);
          count++;
          if (command.op === "member.state" && command.state === "down") damper.wentDown(command.id, now);
          if (command.op === "member.state" && command.state === "active") damper.cameUp(command.id, now);
        }
      }
      return count;
    };
    const undamped = changes(false);
    const damped = changes(true);
    expect(undamped).toBeGreaterThanOrEqual(50); // the tester saw 59 in a minute
    expect(damped).toBeLessThanOrEqual(6);
  });
});
