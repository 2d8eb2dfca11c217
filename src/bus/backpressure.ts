// Inbox depth admission on the send side (pure core). A sender keeps, per target inbox, the depth
// it last counted plus what it sent since, and recounts (two readdirs) only when that estimate
// could pass inboxDepthMax or when it has sent RECOUNT_MESSAGES_MAX messages since the count.
// Receivers only lower the depth, so for ONE sending process the estimate is never below the truth
// and every refusal follows a fresh count: admission is exact.
//
// With k concurrent sending processes, each sender's unseen window is at most
// W = max(RECOUNT_MESSAGES_MAX, batch size) messages, so the depth stays at most
// inboxDepthMax + (k − 1) · W (docs/BUS.md, "Backpressure" gives the argument).

/** Messages a sender may add to an inbox between two counts. */
export const RECOUNT_MESSAGES_MAX = 64;

export interface DepthEstimate {
  /** Depth (queued + claimed messages) at the last count. */
  counted: number;
  /** Messages this process added since that count. */
  sentSinceCount: number;
}

/** True when the estimate cannot decide alone and the inbox must be recounted before admitting. */
export function mustRecount(estimate: DepthEstimate | undefined, count: number, depthMax: number): boolean {
  if (!estimate) return true;
  if (estimate.sentSinceCount + count > RECOUNT_MESSAGES_MAX) return true;
  return estimate.counted + estimate.sentSinceCount + count > depthMax;
}

/** Decision after a fresh count: true when `count` more messages fit. */
export function fitsAfterCount(counted: number, count: number, depthMax: number): boolean {
  return counted + count <= depthMax;
}
