// RawNode: the Raft core's public face (shaped like etcd's RawNode). Single-threaded and
// synchronous; the shell drives it:
//
//   loop:
//     on timer          → node.tick()
//     on peer message   → node.step(message)
//     on client request → node.propose(data) / proposeConfChange(cc) / readIndex(ctx)
//     while node.hasReady():
//       const rd = node.ready()
//       persist rd.hardState, rd.entries, rd.snapshot   (one batch; synced when rd.mustSync)
//       send rd.messages                                  (only after the persist step)
//       install rd.snapshot, apply rd.committedEntries    (applyConfChange for conf entries)
//       serve rd.readStates once applied >= their index
//       node.advance()

import { assert, CfnError, isCfnError } from "../errors.js";
import { encodeConfChange } from "./confchange.js";
import { type RaftConfig, resolveConfig } from "./config.js";
import { isLocalMessage, makeMessage } from "./messages.js";
import type { ProgressState } from "./progress.js";
import { Raft, type RaftLogger } from "./raft.js";
import { hashNodeId, type RandomSource, seededRandom } from "./random.js";
import type { Storage } from "./storage.js";
import {
  type ConfChange,
  type ConfState,
  EntryType,
  type HardState,
  type Message,
  MessageType,
  type NodeId,
  type Ready,
  type SoftState,
  type StateRole,
} from "./types.js";

export interface RawNodeOptions {
  /** Limits and switches; missing fields take DEFAULT_RAFT_CONFIG. */
  config: Partial<RaftConfig> & { id: NodeId };
  /** The stable log (usually a MemoryStorage the shell keeps in step with disk). */
  storage: Storage;
  /** Randomness for election timeouts; default a PRNG seeded from the node id. */
  random?: RandomSource;
  /** Role changes, membership, snapshots, transfers (e.g. `logger.child("raft")`); default silent. */
  logger?: RaftLogger;
}

/** The leader's view of one peer, for status displays (lag = leader's last index - match). */
export interface PeerProgress {
  match: number;
  next: number;
  state: ProgressState;
  isLearner: boolean;
  recentActive: boolean;
  paused: boolean;
  pendingSnapshot: number;
  inflightMsgs: number;
  inflightBytes: number;
}

export interface RaftStatus {
  id: NodeId;
  term: number;
  vote: NodeId;
  role: StateRole;
  leader: NodeId;
  commit: number;
  applied: number;
  lastIndex: number;
  firstIndex: number;
  leadTransferee: NodeId;
  config: ConfState;
  /** Per peer, sorted by id; only on the leader (empty elsewhere). */
  progress: Record<NodeId, PeerProgress>;
}

export class RawNode {
  private readonly raft: Raft;
  private prevSoftState: SoftState;
  private prevHardState: HardState;
  /** The Ready handed out and not yet advanced. */
  private pendingReady: Ready | undefined;

  constructor(options: RawNodeOptions) {
    const config = resolveConfig(options.config);
    const random = options.random ?? seededRandom(hashNodeId(config.id));
    this.raft = new Raft(config, options.storage, random, options.logger);
    this.prevSoftState = this.softState();
    // What storage already holds needs no persisting.
    this.prevHardState = this.raft.hardState();
  }

  get id(): NodeId {
    return this.raft.id;
  }

  /** Advances logical time by one tick (elections, heartbeats, CheckQuorum). */
  tick(): void {
    this.raft.tick();
  }

  /** Starts an election now (with a pre-vote when preVote is on). */
  campaign(): void {
    this.raft.step(makeMessage({ type: MessageType.Hup, from: this.raft.id }));
  }

  /**
   * Proposes `data` to be appended to the log. On a follower it is forwarded to the leader
   * (and may still be lost: watch for it among committed entries). Throws
   * CFN_ERR_PROPOSAL_DROPPED when there is no leader, a transfer is under way, or
   * uncommittedEntriesBytesMax is reached.
   */
  propose(data: Uint8Array): void {
    this.raft.step(
      makeMessage({
        type: MessageType.Propose,
        from: this.raft.id,
        entries: [{ term: 0, index: 0, type: EntryType.Normal, data }],
      }),
    );
  }

  /**
   * Proposes a membership change. One change with transition "auto" is applied simply; several
   * changes, or "explicit", go through a joint config. An empty `changes` leaves an explicit
   * joint config. Throws CFN_ERR_CONF_CHANGE on the leader when one is pending or it is invalid.
   */
  proposeConfChange(change: ConfChange): void {
    const entry = { term: 0, index: 0, type: EntryType.ConfChange, data: encodeConfChange(change) };
    this.raft.step(makeMessage({ type: MessageType.Propose, from: this.raft.id, entries: [entry] }));
  }

  /**
   * Feeds a message from a peer. Local message types and messages addressed to another node
   * are refused (CFN_ERR_INVALID_MESSAGE);
   * responses from peers outside the config and forwarded proposals that the leader drops are
   * ignored.
   */
  step(message: Message): void {
    if (isLocalMessage(message.type)) {
      throw new CfnError(
        "CFN_ERR_INVALID_MESSAGE",
        `raft: local message type ${message.type} from the network`,
      );
    }
    if (message.to !== this.raft.id) {
      throw new CfnError(
        "CFN_ERR_INVALID_MESSAGE",
        `raft: message for ${message.to} stepped into ${this.raft.id}`,
      );
    }
    if (this.raft.isFromUnknownPeer(message)) return;
    try {
      this.raft.step(message);
    } catch (error) {
      // A forwarded proposal or read the leader cannot take: the proposer times out and retries.
      if (isCfnError(error, "CFN_ERR_PROPOSAL_DROPPED") || isCfnError(error, "CFN_ERR_NOT_LEADER")) return;
      if (isCfnError(error, "CFN_ERR_CONF_CHANGE")) return;
      throw error;
    }
  }

  /**
   * Requests a linearizable read. A ReadState with the same context appears in a later Ready;
   * the read is served once the application has applied its index. Contexts must be unique
   * among pending reads. Throws CFN_ERR_NOT_LEADER when no leader is known.
   */
  readIndex(context: Uint8Array): void {
    this.raft.step(makeMessage({ type: MessageType.ReadIndex, from: this.raft.id, context }));
  }

  /** Asks the leader to hand leadership to `to` (forwarded when called on a follower). */
  transferLeader(to: NodeId): void {
    this.raft.step(makeMessage({ type: MessageType.TransferLeader, from: to }));
  }

  /** The transport could not reach `id`: stop pipelining to it. */
  reportUnreachable(id: NodeId): void {
    this.raft.step(makeMessage({ type: MessageType.Unreachable, from: id }));
  }

  /** The transport's outcome of sending a snapshot (all chunks) to `id`. */
  reportSnapshot(id: NodeId, ok: boolean): void {
    this.raft.step(makeMessage({ type: MessageType.SnapStatus, from: id, reject: !ok }));
  }

  /** Applies a committed ConfChange entry (call while applying committed entries). */
  applyConfChange(change: ConfChange): ConfState {
    return this.raft.applyConfChange(change);
  }

  hasReady(): boolean {
    const raft = this.raft;
    if (!softStateEqual(this.softState(), this.prevSoftState)) return true;
    if (!hardStateEqual(raft.hardState(), this.prevHardState)) return true;
    if (raft.log.hasPendingSnapshot()) return true;
    if (raft.messages.length > 0 || raft.readStates.length > 0) return true;
    if (raft.log.unstableEntries().length > 0) return true;
    return raft.log.hasNextCommittedEntries();
  }

  /**
   * Everything the shell must do now (see the loop at the top of this file and the Ready
   * type). The messages are handed out once; call advance() when done.
   */
  ready(): Ready {
    assert(this.pendingReady === undefined, "raw node: ready() called again before advance()");
    const raft = this.raft;
    raft.checkInvariants();
    const softState = this.softState();
    const hardState = raft.hardState();
    const rd: Ready = {
      entries: raft.log.unstableEntries().slice(),
      committedEntries: raft.log.nextCommittedEntries(raft.configLimits().maxCommittedBytesPerReady),
      messages: raft.messages,
      readStates: raft.readStates,
      mustSync: false,
    };
    if (!softStateEqual(softState, this.prevSoftState)) {
      rd.softState = softState;
      this.prevSoftState = softState;
    }
    if (!hardStateEqual(hardState, this.prevHardState)) rd.hardState = hardState;
    if (raft.log.unstable.snapshot) rd.snapshot = raft.log.unstable.snapshot;
    rd.mustSync =
      rd.entries.length > 0 ||
      rd.snapshot !== undefined ||
      hardState.term !== this.prevHardState.term ||
      hardState.vote !== this.prevHardState.vote;
    raft.messages = [];
    raft.readStates = [];
    this.pendingReady = rd;
    return rd;
  }

  /** The last Ready was persisted, sent and applied. */
  advance(): void {
    const rd = this.pendingReady;
    assert(rd !== undefined, "raw node: advance() without ready()");
    this.pendingReady = undefined;
    const raft = this.raft;
    if (rd.hardState) this.prevHardState = rd.hardState;
    if (rd.snapshot) {
      raft.log.stableSnapTo(rd.snapshot.metadata.index);
      raft.appliedTo(rd.snapshot.metadata.index);
    }
    if (rd.entries.length > 0) {
      const last = rd.entries[rd.entries.length - 1];
      raft.log.stableTo(last.index, last.term);
    }
    if (rd.committedEntries.length > 0) {
      raft.reduceUncommittedBytes(rd.committedEntries);
      raft.appliedTo(rd.committedEntries[rd.committedEntries.length - 1].index);
    }
  }

  status(): RaftStatus {
    const raft = this.raft;
    const progress: Record<NodeId, PeerProgress> = {};
    if (raft.role === "leader") {
      raft.tracker.visit((id, pr) => {
        progress[id] = {
          match: pr.match,
          next: pr.next,
          state: pr.state,
          isLearner: pr.isLearner,
          recentActive: pr.recentActive,
          paused: pr.isPaused(),
          pendingSnapshot: pr.pendingSnapshot,
          inflightMsgs: pr.inflights.count(),
          inflightBytes: pr.inflights.bytes(),
        };
      });
    }
    return {
      id: raft.id,
      term: raft.term,
      vote: raft.vote,
      role: raft.role,
      leader: raft.lead,
      commit: raft.log.committed,
      applied: raft.log.applied,
      lastIndex: raft.log.lastIndex(),
      firstIndex: raft.log.firstIndex(),
      leadTransferee: raft.leadTransferee,
      config: raft.tracker.confState(),
      progress,
    };
  }

  /** The state machine, for tests and debugging tools; not part of the stable API. */
  get internals(): Raft {
    return this.raft;
  }

  private softState(): SoftState {
    return { leader: this.raft.lead, role: this.raft.role };
  }
}

function softStateEqual(a: SoftState, b: SoftState): boolean {
  return a.leader === b.leader && a.role === b.role;
}

function hardStateEqual(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}
