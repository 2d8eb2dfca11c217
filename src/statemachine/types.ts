// The replicated state machine port: what a Raft shell applies committed entries to. The Raft
// log decides the order; the state machine must turn that order into the same state on every
// node, so `apply` is a pure function of (state, entry): no clock, no randomness, no I/O.

import type { Entry } from "../raft/types.js";

/**
 * A deterministic state machine fed by the Raft log.
 *
 * Promises:
 * - `apply` is called once per committed entry, in index order, with no gaps after the last
 *   `restore`; two replicas that applied the same entries hold byte-identical `snapshot()`s.
 * - `apply` never throws for application bytes it cannot decode: a malformed command is still a
 *   committed entry, so it yields a result (an error value) on every node alike.
 * - `restore(snapshot())` reproduces the state exactly, including dedup sessions.
 */
export interface StateMachine<Result> {
  /**
   * Applies one committed entry and returns what the proposer should be told. Entries with empty
   * data (a new leader's no-op) and configuration changes still advance `appliedIndex` and return
   * `undefined`.
   */
  apply(entry: Entry): Result | undefined;
  /** The index of the last entry applied (or restored through a snapshot); 0 at start. */
  readonly appliedIndex: number;
  /**
   * Serializes the whole state, `appliedIndex` included, deterministically: equal states give
   * equal bytes, so replicas can be compared byte for byte.
   */
  snapshot(): Uint8Array;
  /** Replaces the whole state with the output of some replica's `snapshot()`. */
  restore(data: Uint8Array): void;
}
