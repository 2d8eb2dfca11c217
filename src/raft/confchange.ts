// Membership changes as pure functions from (config, progress) to a new (config, progress).
//
//  - simple:     one voter added/removed (any number of learner changes) without a joint phase;
//                safe because any majority of the old and the new config intersect.
//  - enterJoint: C_old → C_old,new; decisions need majorities of both until leaveJoint.
//  - leaveJoint: C_old,new → C_new; outgoing voters that were demoted become learners.
//
// Errors are CFN_ERR_CONF_CHANGE (the application asked for something not allowed now).

import { CfnError } from "../errors.js";
import { Progress } from "./progress.js";
import {
  checkConfigInvariants,
  cloneTrackerConfig,
  emptyTrackerConfig,
  isJoint,
  type TrackerConfig,
} from "./tracker.js";
import {
  type ConfChange,
  type ConfChangeSingle,
  ConfChangeType,
  type ConfState,
  type NodeId,
} from "./types.js";

export interface ChangerContext {
  /** The leader's last log index; new peers start probing from there. */
  lastIndex: number;
  inflightMsgsMax: number;
  inflightBytesMax: number;
}

export interface ChangeResult {
  config: TrackerConfig;
  progress: Map<NodeId, Progress>;
}

function refuse(message: string): never {
  throw new CfnError("CFN_ERR_CONF_CHANGE", `conf change: ${message}`);
}

/** Copies the config and the progress map; Progress objects are cloned so that a failed
 *  change leaves the originals untouched. */
function copy(config: TrackerConfig, progress: ReadonlyMap<NodeId, Progress>): ChangeResult {
  const copied = new Map<NodeId, Progress>();
  for (const [id, pr] of progress) copied.set(id, cloneProgress(pr));
  return { config: cloneTrackerConfig(config), progress: copied };
}

function cloneProgress(pr: Progress): Progress {
  const clone = new Progress({
    match: pr.match,
    next: pr.next,
    inflightMsgsMax: pr.inflights.msgsMax,
    inflightBytesMax: pr.inflights.bytesMax,
    isLearner: pr.isLearner,
  });
  clone.state = pr.state;
  clone.pendingSnapshot = pr.pendingSnapshot;
  clone.recentActive = pr.recentActive;
  clone.msgAppFlowPaused = pr.msgAppFlowPaused;
  clone.inflights = pr.inflights.clone();
  return clone;
}

function initProgress(result: ChangeResult, context: ChangerContext, id: NodeId, isLearner: boolean): void {
  // A new member may be far behind; probe from our last index. It counts as recently active so
  // that CheckQuorum does not step the leader down before the newcomer answers.
  const pr = new Progress({
    match: 0,
    next: Math.max(context.lastIndex, 1),
    inflightMsgsMax: context.inflightMsgsMax,
    inflightBytesMax: context.inflightBytesMax,
    isLearner,
  });
  pr.recentActive = true;
  result.progress.set(id, pr);
  if (isLearner) result.config.learners.add(id);
  else result.config.voters.incoming.add(id);
}

function makeVoter(result: ChangeResult, context: ChangerContext, id: NodeId): void {
  const pr = result.progress.get(id);
  if (!pr) {
    initProgress(result, context, id, false);
    return;
  }
  pr.isLearner = false;
  result.config.learners.delete(id);
  result.config.learnersNext.delete(id);
  result.config.voters.incoming.add(id);
}

function makeLearner(result: ChangeResult, context: ChangerContext, id: NodeId): void {
  const pr = result.progress.get(id);
  if (!pr) {
    initProgress(result, context, id, true);
    return;
  }
  if (pr.isLearner) return;
  // Demote: leave the incoming voters. If still an outgoing voter it must keep voting there
  // until the joint config is left, so it becomes a learner only then (learnersNext).
  remove(result, id);
  result.progress.set(id, pr);
  if (result.config.voters.outgoing.has(id)) {
    result.config.learnersNext.add(id);
  } else {
    pr.isLearner = true;
    result.config.learners.add(id);
  }
}

function remove(result: ChangeResult, id: NodeId): void {
  if (!result.progress.has(id)) return;
  result.config.voters.incoming.delete(id);
  result.config.learners.delete(id);
  result.config.learnersNext.delete(id);
  // An outgoing voter keeps its progress until the joint config is left.
  if (!result.config.voters.outgoing.has(id)) result.progress.delete(id);
}

function apply(result: ChangeResult, context: ChangerContext, changes: readonly ConfChangeSingle[]): void {
  for (const change of changes) {
    if (typeof change.nodeId !== "string" || change.nodeId === "")
      refuse("node id must be a non-empty string");
    switch (change.type) {
      case ConfChangeType.AddVoter:
        makeVoter(result, context, change.nodeId);
        break;
      case ConfChangeType.AddLearner:
        makeLearner(result, context, change.nodeId);
        break;
      case ConfChangeType.RemoveNode:
        remove(result, change.nodeId);
        break;
      default:
        refuse(`unknown change type ${String((change as ConfChangeSingle).type)}`);
    }
  }
  if (result.config.voters.incoming.size === 0) refuse("removed all voters");
}

function checked(result: ChangeResult): ChangeResult {
  checkConfigInvariants(result.config, result.progress);
  return result;
}

/** Applies changes that alter at most one voter, without a joint phase. */
export function simpleChange(
  config: TrackerConfig,
  progress: ReadonlyMap<NodeId, Progress>,
  context: ChangerContext,
  changes: readonly ConfChangeSingle[],
): ChangeResult {
  if (isJoint(config)) refuse("cannot apply a simple change while in a joint config");
  const result = copy(config, progress);
  apply(result, context, changes);
  let changed = 0;
  for (const id of config.voters.incoming) if (!result.config.voters.incoming.has(id)) changed++;
  for (const id of result.config.voters.incoming) if (!config.voters.incoming.has(id)) changed++;
  if (changed > 1) refuse("more than one voter changed without entering a joint config");
  return checked(result);
}

/** Enters the joint config C_old,new. */
export function enterJoint(
  config: TrackerConfig,
  progress: ReadonlyMap<NodeId, Progress>,
  context: ChangerContext,
  autoLeave: boolean,
  changes: readonly ConfChangeSingle[],
): ChangeResult {
  if (isJoint(config)) refuse("already in a joint config");
  if (config.voters.incoming.size === 0) refuse("cannot make a zero-voter config joint");
  const result = copy(config, progress);
  result.config.voters.outgoing = new Set(result.config.voters.incoming);
  apply(result, context, changes);
  result.config.autoLeave = autoLeave;
  return checked(result);
}

/** Leaves the joint config: C_old,new → C_new. */
export function leaveJoint(config: TrackerConfig, progress: ReadonlyMap<NodeId, Progress>): ChangeResult {
  if (!isJoint(config)) refuse("cannot leave a non-joint config");
  const result = copy(config, progress);
  for (const id of result.config.learnersNext) {
    result.config.learners.add(id);
    result.progress.get(id)!.isLearner = true;
  }
  result.config.learnersNext.clear();
  for (const id of result.config.voters.outgoing) {
    if (!result.config.voters.incoming.has(id) && !result.config.learners.has(id)) result.progress.delete(id);
  }
  result.config.voters.outgoing = new Set();
  result.config.autoLeave = false;
  return checked(result);
}

/** Dispatches a ConfChange: empty → leave joint; one change with "auto" → simple; otherwise
 *  joint (auto-leave when transition is "auto"). */
export function applyConfChangeTo(
  config: TrackerConfig,
  progress: ReadonlyMap<NodeId, Progress>,
  context: ChangerContext,
  change: ConfChange,
): ChangeResult {
  if (change.changes.length === 0) return leaveJoint(config, progress);
  if (usesJoint(change))
    return enterJoint(config, progress, context, change.transition === "auto", change.changes);
  return simpleChange(config, progress, context, change.changes);
}

export function usesJoint(change: ConfChange): boolean {
  return change.changes.length > 1 || change.transition === "explicit";
}

/** Rebuilds config and progress from a ConfState (restart or snapshot install). */
export function restoreConfig(state: ConfState, context: ChangerContext): ChangeResult {
  const result: ChangeResult = { config: emptyTrackerConfig(), progress: new Map() };
  const add = (id: NodeId, isLearner: boolean) => {
    if (result.progress.has(id)) return;
    const pr = new Progress({
      match: 0,
      next: Math.max(context.lastIndex, 1),
      inflightMsgsMax: context.inflightMsgsMax,
      inflightBytesMax: context.inflightBytesMax,
      isLearner,
    });
    pr.recentActive = true;
    result.progress.set(id, pr);
  };
  for (const id of state.voters) {
    result.config.voters.incoming.add(id);
    add(id, false);
  }
  for (const id of state.votersOutgoing) {
    result.config.voters.outgoing.add(id);
    add(id, false);
  }
  for (const id of state.learners) {
    result.config.learners.add(id);
    add(id, true);
  }
  for (const id of state.learnersNext) {
    result.config.learnersNext.add(id);
    add(id, false);
  }
  result.config.autoLeave = state.votersOutgoing.length > 0 && state.autoLeave;
  return checked(result);
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

/** ConfChange ⇄ entry data. JSON keeps it readable in logs and stable across versions. */
export function encodeConfChange(change: ConfChange): Uint8Array {
  return textEncoder.encode(JSON.stringify({ changes: change.changes, transition: change.transition }));
}

/** Throws CFN_ERR_INVALID_MESSAGE when `data` is not an encoded ConfChange. */
export function decodeConfChange(data: Uint8Array): ConfChange {
  let parsed: Partial<ConfChange>;
  try {
    parsed = JSON.parse(textDecoder.decode(data)) as Partial<ConfChange>;
  } catch {
    throw new CfnError("CFN_ERR_INVALID_MESSAGE", "conf change entry data is not valid JSON");
  }
  const changes = parsed?.changes ?? [];
  const transition = parsed?.transition ?? "auto";
  if (!Array.isArray(changes) || (transition !== "auto" && transition !== "explicit")) {
    throw new CfnError("CFN_ERR_INVALID_MESSAGE", "conf change entry data has the wrong shape");
  }
  return { changes, transition };
}

export function describeConfChange(change: ConfChange): string {
  if (change.changes.length === 0) return "leave-joint";
  const names: Record<number, string> = { 0: "v", 1: "r", 2: "l" };
  const parts = change.changes.map((c) => `${names[c.type]}${c.nodeId}`);
  return parts.join(" ") + (usesJoint(change) ? ` (joint ${change.transition})` : "");
}
