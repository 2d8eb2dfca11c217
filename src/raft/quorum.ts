// Majority and joint-majority arithmetic: which index a quorum has acknowledged, and whether a
// vote is won, lost or pending. Pure functions over sets of ids.

import type { NodeId } from "./types.js";

export type VoteResult = "pending" | "lost" | "won";

/** Largest index a majority of `voters` has acknowledged. An empty config returns Infinity so
 *  that it never constrains a joint config (and commits nothing on its own: see maybeCommit). */
export function majorityCommittedIndex(voters: ReadonlySet<NodeId>, acked: (id: NodeId) => number): number {
  const n = voters.size;
  if (n === 0) return Number.POSITIVE_INFINITY;
  const indexes: number[] = [];
  for (const id of voters) indexes.push(acked(id));
  indexes.sort((a, b) => b - a);
  // Sorted descending, the (n/2 + 1)-th largest index is held by a majority.
  return indexes[Math.floor(n / 2)];
}

/** Tallies a vote; a missing entry in `votes` is a voter that has not answered yet. */
export function majorityVoteResult(
  voters: ReadonlySet<NodeId>,
  votes: ReadonlyMap<NodeId, boolean>,
): VoteResult {
  if (voters.size === 0) return "won"; // an empty config agrees to anything (joint semantics)
  let granted = 0;
  let missing = 0;
  for (const id of voters) {
    const vote = votes.get(id);
    if (vote === undefined) missing++;
    else if (vote) granted++;
  }
  const quorum = Math.floor(voters.size / 2) + 1;
  if (granted >= quorum) return "won";
  if (granted + missing >= quorum) return "pending";
  return "lost";
}

/** A configuration of incoming and outgoing voters; outgoing is empty outside joint consensus.
 *  Decisions need a majority of both. */
export interface JointVoters {
  incoming: Set<NodeId>;
  outgoing: Set<NodeId>;
}

export function jointCommittedIndex(voters: JointVoters, acked: (id: NodeId) => number): number {
  return Math.min(
    majorityCommittedIndex(voters.incoming, acked),
    majorityCommittedIndex(voters.outgoing, acked),
  );
}

export function jointVoteResult(voters: JointVoters, votes: ReadonlyMap<NodeId, boolean>): VoteResult {
  const incoming = majorityVoteResult(voters.incoming, votes);
  const outgoing = majorityVoteResult(voters.outgoing, votes);
  if (incoming === outgoing) return incoming;
  if (incoming === "lost" || outgoing === "lost") return "lost";
  return "pending";
}

/** All voter ids of a joint config, sorted (deterministic iteration). */
export function jointVoterIds(voters: JointVoters): NodeId[] {
  return [...new Set([...voters.incoming, ...voters.outgoing])].sort();
}
