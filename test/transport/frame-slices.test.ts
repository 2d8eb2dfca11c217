// Received frames are handled in slices of FRAME_SLICE_MS per turn of the event loop: a backlog
// (a peer back from a partition) no longer holds the loop, so timers (Raft's ticks) run between
// slices; frames keep their order, and the frames of other channels (Raft, pings) never wait.

import { describe, expect, it } from "vitest";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { MessageType, makeMessage } from "../../src/raft/index.js";
import { encodeFrame } from "../../src/transport/frame.js";
import { FRAME_SLICE_MS, TransportHandlers } from "../../src/transport/handlers.js";
import { TransportMetrics } from "../../src/transport/transport-metrics.js";

const HANDLER_MS = 5;

function busyFor(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // a frame handler writing inboxes synchronously
  }
}

const heartbeat = makeMessage({ type: MessageType.Heartbeat, from: "a", to: "b", term: 1 });

describe("frame handling in slices", () => {
  it("hands a backlog over in slices, in order, with timers and Raft frames in between", async () => {
    const handlers = new TransportHandlers("b", silentLogger, new TransportMetrics(new Metrics()));
    const handled: number[] = [];
    handlers.onFrame(
      "deliver",
      (payload) => {
        handled.push(payload as number);
        busyFor(HANDLER_MS);
      },
      { bulk: true },
    );
    const raftSeenAfter: number[] = [];
    handlers.onMessages(() => raftSeenAfter.push(handled.length));
    // Another channel (the node's pings): never behind the deliveries that wait.
    const pingSeenAfter: number[] = [];
    handlers.onFrame("node", () => pingSeenAfter.push(handled.length));
    let timerSawHandled = -1;
    setTimeout(() => {
      timerSawHandled = handled.length;
    }, 0);

    const frames = 20;
    for (let n = 0; n < frames; n++) handlers.receive(encodeFrame("deliver", n), "a");
    handlers.receive(encodeFrame("raft", [heartbeat]), "a");
    handlers.receive(encodeFrame("node", { t: "ping" }), "a");
    // The first slice: frames until FRAME_SLICE_MS is spent, each taking at least HANDLER_MS.
    const firstSlice = handled.length;
    expect(firstSlice).toBeGreaterThanOrEqual(1);
    expect(firstSlice).toBeLessThanOrEqual(Math.ceil(FRAME_SLICE_MS / HANDLER_MS));
    expect(raftSeenAfter).toEqual([firstSlice]); // not behind the waiting frames
    expect(pingSeenAfter).toEqual([firstSlice]);

    await new Promise<void>((resolve) => {
      const check = () => (handled.length === frames ? resolve() : setImmediate(check));
      check();
    });
    expect(handled).toEqual(Array.from({ length: frames }, (_, n) => n));
    // The timer ran while frames still waited: the event loop turned between slices.
    expect(timerSawHandled).toBeGreaterThanOrEqual(firstSlice);
    expect(timerSawHandled).toBeLessThan(frames);
  });

  it("handles a frame at once while the turn's slice has time left", () => {
    const handlers = new TransportHandlers("b", silentLogger, new TransportMetrics(new Metrics()));
    const handled: number[] = [];
    handlers.onFrame("deliver", (payload) => handled.push(payload as number), { bulk: true });
    handlers.receive(encodeFrame("deliver", 1), "a");
    handlers.receive(encodeFrame("deliver", 2), "a");
    expect(handled).toEqual([1, 2]);
  });
});
