// The leader's view of member liveness (src/node/control.ts alive()): a member goes down when
// nothing was heard from it for downAfterMs — but a stall of the leader's own process (stopped,
// its VM paused) is not the members' silence: their pings wait unread on its sockets, and judging
// on the stale view moved healthy members' teams away. Here the stall is real: the test's own
// thread is blocked (Atomics.wait), timers and frames included.

import { afterEach, describe, expect, it } from "vitest";
import { CONTROL_CHANNEL, ControlPlane } from "../../src/node/control.js";
import { NodeMetrics } from "../../src/node/node-metrics.js";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import type { Transport } from "../../src/transport/index.js";
import { waitFor } from "./harness.js";

const HEALTH_INTERVAL_MS = 50;
const DOWN_AFTER_MS = 500;
const closers: (() => void)[] = [];
afterEach(() => {
  for (const close of closers.splice(0)) close();
});

/** A control plane for n1 whose peers' pings the test delivers (`pinging` says whose). */
function controlWithPeers(peers: string[]) {
  let deliver: ((payload: unknown, from: string) => void) | undefined;
  const transport = {
    onFrame: (channel: string, handler: (payload: unknown, from: string) => void) => {
      if (channel === CONTROL_CHANNEL) deliver = handler;
    },
    sendFrame: () => true,
  } as unknown as Transport;
  const control = new ControlPlane({
    nodeId: "n1",
    host: {} as never,
    transport,
    logger: silentLogger,
    metrics: new NodeMetrics(new Metrics()),
    peers: () => peers,
    healthIntervalMs: HEALTH_INTERVAL_MS,
    proposalTimeoutMs: 1_000,
  });
  control.start();
  const pinging = new Set(peers);
  const pinger = setInterval(() => {
    for (const peer of pinging) deliver?.({ t: "ping" }, peer);
  }, HEALTH_INTERVAL_MS);
  closers.push(() => {
    clearInterval(pinger);
    control.close();
  });
  return { control, pinging };
}

function stallThisThread(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

describe("member liveness on the leader", () => {
  it("keeps members that were pinging alive across a stall of the leader's own process", async () => {
    const { control } = controlWithPeers(["n2", "n3"]);
    await waitFor("both heard", () => control.lastHeard("n2") && control.lastHeard("n3"));
    stallThisThread(DOWN_AFTER_MS * 2);
    // Right at the resume, before any queued ping is read: nobody is judged on the stale view.
    expect([...control.alive(["n2", "n3"], DOWN_AFTER_MS)].sort()).toEqual(["n1", "n2", "n3"]);
  });

  it("still marks a member down that stays silent for downAfterMs once the leader runs again", async () => {
    const { control, pinging } = controlWithPeers(["n2", "n3"]);
    await waitFor("both heard", () => control.lastHeard("n2") && control.lastHeard("n3"));
    stallThisThread(DOWN_AFTER_MS * 2);
    pinging.delete("n3");
    expect(control.alive(["n2", "n3"], DOWN_AFTER_MS).has("n3")).toBe(true);
    const down = await waitFor("n3 down", () => {
      const alive = control.alive(["n2", "n3"], DOWN_AFTER_MS);
      return alive.has("n3") ? undefined : alive;
    });
    expect([...down].sort()).toEqual(["n1", "n2"]);
  });

  it("marks a silent member down without any stall", async () => {
    const { control, pinging } = controlWithPeers(["n2", "n3"]);
    await waitFor("both heard", () => control.lastHeard("n2") && control.lastHeard("n3"));
    pinging.delete("n2");
    const startedMs = Date.now();
    await waitFor("n2 down", () => !control.alive(["n2", "n3"], DOWN_AFTER_MS).has("n2"));
    expect(Date.now() - startedMs).toBeGreaterThanOrEqual(DOWN_AFTER_MS - HEALTH_INTERVAL_MS);
    expect(control.alive(["n2", "n3"], DOWN_AFTER_MS).has("n3")).toBe(true);
  });
});
