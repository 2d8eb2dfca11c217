// The leader's tracker of membership and per-peer progress: the current (possibly joint)
// configuration, a Progress per member, and the votes of an ongoing election.

import { assert } from "../errors.js";
import type { Progress } from "./progress.js";
import {
  type JointVoters,
  jointCommittedIndex,
  jointVoteResult,
  jointVoterIds,
  type VoteResult,
} from "./quorum.js";
import type { ConfState, NodeId } from "./types.js";

export interface TrackerConfig {
  voters: JointVoters;
  /** Learners; never also voters (incoming or outgoing). */
  learners: Set<NodeId>;
  /** Outgoing voters that become learners when the joint config is left. */
  learnersNext: Set<NodeId>;
  autoLeave: boolean;
}

export function emptyTrackerConfig(): TrackerConfig {
  return {
    voters: { incoming: new Set(), outgoing: new Set() },
    learners: new Set(),
    learnersNext: new Set(),
    autoLeave: false,
  };
}

export function cloneTrackerConfig(config: TrackerConfig): TrackerConfig {
  return {
    voters: { incoming: new Set(config.voters.incoming), outgoing: new Set(config.voters.outgoing) },
    learners: new Set(config.learners),
    learnersNext: new Set(config.learnersNext),
    autoLeave: config.autoLeave,
  };
}

export function isJoint(config: TrackerConfig): boolean {
  return config.voters.outgoing.size > 0;
}

export function confStateOf(config: TrackerConfig): ConfState {
  return {
    voters: [...config.voters.incoming].sort(),
    learners: [...config.learners].sort(),
    votersOutgoing: [...config.voters.outgoing].sort(),
    learnersNext: [...config.learnersNext].sort(),
    autoLeave: config.autoLeave,
  };
}

export function describeConfig(config: TrackerConfig): string {
  const voters = `(${[...config.voters.incoming].sort().join(" ")})`;
  let text = isJoint(config)
    ? `voters=${voters}&&(${[...config.voters.outgoing].sort().join(" ")})`
    : `voters=${voters}`;
  if (config.learners.size > 0) text += ` learners=(${[...config.learners].sort().join(" ")})`;
  if (config.learnersNext.size > 0) text += ` learners_next=(${[...config.learnersNext].sort().join(" ")})`;
  if (config.autoLeave) text += " autoleave";
  return text;
}

export class ProgressTracker {
  config: TrackerConfig = emptyTrackerConfig();
  progress = new Map<NodeId, Progress>();
  private readonly votes = new Map<NodeId, boolean>();

  /** Index acknowledged by a (joint) quorum of voters. */
  committed(): number {
    return jointCommittedIndex(this.config.voters, (id) => this.progress.get(id)?.match ?? 0);
  }

  /** Whether a quorum of voters was recently active (CheckQuorum). */
  quorumActive(): boolean {
    const active = new Map<NodeId, boolean>();
    for (const [id, pr] of this.progress) if (!pr.isLearner) active.set(id, pr.recentActive);
    return jointVoteResult(this.config.voters, active) === "won";
  }

  /** Whether `ids` (e.g. the acks of a read) form a quorum. */
  isQuorum(ids: Iterable<NodeId>): boolean {
    const votes = new Map<NodeId, boolean>();
    for (const id of ids) votes.set(id, true);
    return jointVoteResult(this.config.voters, votes) === "won";
  }

  /** True when this config has exactly one voter and it is `id`. */
  isSingleton(id: NodeId): boolean {
    const ids = this.voterIds();
    return ids.length === 1 && ids[0] === id && !isJoint(this.config);
  }

  voterIds(): NodeId[] {
    return jointVoterIds(this.config.voters);
  }

  isVoter(id: NodeId): boolean {
    return this.config.voters.incoming.has(id) || this.config.voters.outgoing.has(id);
  }

  /** All members, sorted, so that message order is deterministic. */
  sortedIds(): NodeId[] {
    return [...this.progress.keys()].sort();
  }

  visit(fn: (id: NodeId, pr: Progress) => void): void {
    for (const id of this.sortedIds()) fn(id, this.progress.get(id)!);
  }

  resetVotes(): void {
    this.votes.clear();
  }

  recordVote(id: NodeId, granted: boolean): void {
    if (!this.votes.has(id)) this.votes.set(id, granted);
  }

  tallyVotes(): { granted: number; rejected: number; result: VoteResult } {
    let granted = 0;
    let rejected = 0;
    for (const id of this.voterIds()) {
      const vote = this.votes.get(id);
      if (vote === true) granted++;
      else if (vote === false) rejected++;
    }
    return { granted, rejected, result: jointVoteResult(this.config.voters, this.votes) };
  }

  confState(): ConfState {
    return confStateOf(this.config);
  }

  /** Structural invariants between config and progress; a failure is a bug. */
  checkInvariants(): void {
    checkConfigInvariants(this.config, this.progress);
  }
}

export function checkConfigInvariants(config: TrackerConfig, progress: ReadonlyMap<NodeId, Progress>): void {
  const { incoming, outgoing } = config.voters;
  for (const ids of [incoming, outgoing, config.learners, config.learnersNext]) {
    for (const id of ids) assert(progress.has(id), `tracker: no progress for member ${id}`);
  }
  for (const id of config.learnersNext) {
    assert(outgoing.has(id), `tracker: ${id} is in learnersNext but not an outgoing voter`);
    assert(!progress.get(id)!.isLearner, `tracker: ${id} is in learnersNext but marked learner`);
  }
  for (const id of config.learners) {
    assert(!incoming.has(id) && !outgoing.has(id), `tracker: ${id} is both learner and voter`);
    assert(progress.get(id)!.isLearner, `tracker: learner ${id} not marked learner`);
  }
  for (const id of progress.keys()) {
    assert(
      incoming.has(id) || outgoing.has(id) || config.learners.has(id) || config.learnersNext.has(id),
      `tracker: progress for non-member ${id}`,
    );
  }
  if (outgoing.size === 0) {
    assert(config.learnersNext.size === 0, "tracker: learnersNext outside a joint config");
    assert(!config.autoLeave, "tracker: autoLeave outside a joint config");
  }
}
