// Inbox depth admission on the send side (pure core). A sender keeps, per target inbox, the depth
// it last counted plus what it sent since, and recounts (two readdirs) only when that estimate
// could pass inboxDepthMax or when it has used up its window since the count. Receivers only lower
// the depth, so for ONE sending process the estimate is never below the truth and every refusal
// follows a fresh count: admission is exact.
//
// The window is max(RECOUNT_MESSAGES_MAX, headroom / RECOUNT_HEADROOM_DIVISOR) messages, where
// headroom = inboxDepthMax − counted depth: a deep but far-from-full inbox is not re-read every 64
// sends (a readdir of 30,000 names costs ~20 ms). With k concurrent sending processes, each
// sender's unseen window is at most W = max(64, inboxDepthMax / 16, batch size) messages, so the
// depth stays at most inboxDepthMax + (k − 1) · W (docs/BUS.md, "Backpressure", gives the argument).

/** Fewest messages a sender may add to an inbox between two counts. */
export const RECOUNT_MESSAGES_MAX = 64;
/** The window grows to headroom / this divisor when the inbox is far from full. */
export const RECOUNT_HEADROOM_DIVISOR = 16;

export interface DepthEstimate {
  /** Depth (queued + claimed messages) at the last count. */
  counted: number;
  /** Messages this process added since that count. */
  sentSinceCount: number;
  /** Messages this process may add before counting again. */
  window: number;
}

/** Estimate right after counting `counted` messages in an inbox. */
export function freshEstimate(counted: number, depthMax: number): DepthEstimate {
  const headroom = Math.max(0, depthMax - counted);
  return {
    counted,
    sentSinceCount: 0,
    window: Math.max(RECOUNT_MESSAGES_MAX, Math.floor(headroom / RECOUNT_HEADROOM_DIVISOR)),
  };
}

/** True when the estimate cannot decide alone and the inbox must be recounted before admitting. */
export function mustRecount(estimate: DepthEstimate | undefined, count: number, depthMax: number): boolean {
  if (!estimate) return true;
  if (estimate.sentSinceCount + count > estimate.window) return true;
  return estimate.counted + estimate.sentSinceCount + count > depthMax;
}

/** Decision after a fresh count: true when `count` more messages fit. */
export function fitsAfterCount(counted: number, count: number, depthMax: number): boolean {
  return counted + count <= depthMax;
}
