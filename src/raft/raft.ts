// The Raft state machine: roles, elections (PreVote, CheckQuorum), replication with per-peer
// flow control, ReadIndex, leadership transfer, membership and snapshots. Deterministic and
// free of I/O: input is step()/tick(), output accumulates in `messages`, `readStates` and the
// log's unstable part, which RawNode packs into a Ready.
//
// The structure follows the Raft paper and etcd-io/raft; names and shape are our own.
//
// Why one file of this size: everything here reads and writes the same private state (term,
// role, log, tracker) in one step, and TypeScript has no package-private access; splitting
// the class would make that state public. The self-contained parts live in their own files:
// log.ts/unstable.ts (the log), tracker.ts/progress.ts/inflights.ts/quorum.ts (peers and
// quorums), confchange.ts (membership), read-only.ts (reads), snapshot-assembler.ts (chunks).
// Sections below: sending · role changes · ticks · step (generic term rules) · leader ·
// reads and lease · append/heartbeat responses · transfer · candidate · follower ·
// log and commit · membership · invariants.

import { assert, CfnError, isCfnError } from "../errors.js";
import {
  applyConfChangeTo,
  type ChangeResult,
  type ChangerContext,
  decodeConfChange,
  encodeConfChange,
  restoreConfig,
} from "./confchange.js";
import type { RaftConfig } from "./config.js";
import { entriesBytes, payloadBytes } from "./entry-size.js";
import { RaftLog } from "./log.js";
import { isResponseMessage, makeMessage, voteResponseType } from "./messages.js";
import { Progress } from "./progress.js";
import { jointCommittedIndex, type VoteResult } from "./quorum.js";
import type { RandomSource } from "./random.js";
import { ReadOnly } from "./read-only.js";
import { chunkSnapshot, SnapshotAssembler } from "./snapshot-assembler.js";
import type { Storage } from "./storage.js";
import { isJoint, ProgressTracker } from "./tracker.js";
import {
  type ConfChange,
  type ConfState,
  type Entry,
  EntryType,
  type HardState,
  type Message,
  MessageType,
  type NodeId,
  type ReadState,
  type Snapshot,
  type StateRole,
} from "./types.js";

type CampaignType = "pre-election" | "election" | "transfer";

/** The logging the core does: role changes, membership, snapshots, transfers. Structurally
 *  compatible with src/obs's Logger (pass `logger.child("raft")`); the default drops all. */
export interface RaftLogger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
}

const silent: RaftLogger = { debug() {}, info() {}, warn() {} };

function dropped(reason: string): CfnError {
  return new CfnError("CFN_ERR_PROPOSAL_DROPPED", `proposal dropped: ${reason}`, { reason });
}

export class Raft {
  readonly id: NodeId;
  term = 0;
  vote: NodeId = "";
  role: StateRole = "follower";
  /** Known leader of `term`, or "". */
  lead: NodeId = "";
  /** This node is a learner in the current config (never campaigns). */
  isLearner = false;
  readonly log: RaftLog;
  readonly tracker = new ProgressTracker();

  /** Outgoing messages since the last Ready. */
  messages: Message[] = [];
  /** Read requests whose index is known since the last Ready. */
  readStates: ReadState[] = [];

  /** Target of an ongoing leadership transfer, or "". */
  leadTransferee: NodeId = "";
  /** Index of the latest conf change appended by this leader; only one may be unapplied. */
  pendingConfIndex = 0;
  /** Payload bytes appended by this leader and not yet applied (backpressure). */
  uncommittedBytes = 0;

  private readOnly = new ReadOnly();
  /** ReadIndex requests that arrived before this leader committed an entry of its term. */
  private pendingReadIndexMessages: Message[] = [];
  private readonly assembler = new SnapshotAssembler();

  /** Ticks since the last election timeout reset (followers) or CheckQuorum round (leader). */
  electionElapsed = 0;
  private heartbeatElapsed = 0;
  /** Ticks since this Raft was created: the leader's clock for lease reads. */
  private ticks = 0;
  /** After a TimeoutNow the target may win without waiting for leases: no lease reads then. */
  private timeoutNowSentInTerm = false;
  /** In lease mode a (re)started node refuses votes for its first election timeout: it may
   *  have acknowledged a leader's heartbeat just before a crash and must honour that lease. */
  private readonly startupVoteLeaseTicks: number;
  randomizedElectionTimeout = 0;

  private readonly config: RaftConfig;
  private readonly random: RandomSource;
  private readonly logger: RaftLogger;

  constructor(config: RaftConfig, storage: Storage, random: RandomSource, logger: RaftLogger = silent) {
    this.config = config;
    this.logger = logger;
    this.id = config.id;
    this.random = random;
    this.startupVoteLeaseTicks = config.readOnlyOption === "lease" ? config.electionTimeoutTicks : 0;
    this.log = new RaftLog(storage);
    const { hardState, confState } = storage.initialState();
    this.switchToConfig(restoreConfig(confState, this.changerContext()));
    if (hardState.term !== 0 || hardState.vote !== "" || hardState.commit !== 0) this.loadState(hardState);
    if (config.applied > 0) {
      this.log.appliedTo(config.applied);
      this.replayAppliedConfChanges(config.applied);
    }
    this.becomeFollower(this.term, "");
  }

  /**
   * On restart the stored ConfState is the snapshot's; conf changes applied after the snapshot
   * (up to `applied`) are not delivered again, so the core re-applies them from the log itself.
   */
  private replayAppliedConfChanges(applied: number): void {
    // The stored ConfState already includes every change up to the snapshot index; the log may
    // still hold entries behind the snapshot (compaction lags it for slow followers), and those
    // must not be applied twice.
    const first = Math.max(this.log.firstIndex(), this.log.storage.snapshot().metadata.index + 1);
    if (applied < first) return;
    for (const entry of this.log.slice(first, applied + 1, Number.MAX_SAFE_INTEGER)) {
      if (entry.type !== EntryType.ConfChange) continue;
      this.switchToConfig(
        applyConfChangeTo(
          this.tracker.config,
          this.tracker.progress,
          this.changerContext(),
          decodeConfChange(entry.data),
        ),
      );
    }
  }

  private loadState(state: HardState): void {
    assert(
      state.commit >= this.log.committed && state.commit <= this.log.lastIndex(),
      `raft: stored commit ${state.commit} outside [${this.log.committed}, ${this.log.lastIndex()}]`,
    );
    this.log.committed = state.commit;
    this.term = state.term;
    this.vote = state.vote;
  }

  hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  /** The resolved config (read-only). */
  configLimits(): Readonly<RaftConfig> {
    return this.config;
  }

  private changerContext(): ChangerContext {
    return {
      lastIndex: this.log.lastIndex(),
      inflightMsgsMax: this.config.inflightMsgsMax,
      inflightBytesMax: this.config.inflightBytesMax,
    };
  }

  // ---------------------------------------------------------------------------------------
  // Sending

  private send(m: Message): void {
    if (m.from === "") m.from = this.id;
    const t = m.type;
    if (
      t === MessageType.Vote ||
      t === MessageType.VoteResp ||
      t === MessageType.PreVote ||
      t === MessageType.PreVoteResp
    ) {
      // Votes carry the term they are for (PreVote: term + 1), set by the caller.
      assert(m.term !== 0, `raft: ${t} sent without a term`);
    } else if (t !== MessageType.Propose && t !== MessageType.ReadIndex) {
      // Forwarded proposals and reads keep term 0: the receiver treats them as local.
      m.term = this.term;
    }
    this.messages.push(m);
  }

  /** Sends an append (or a snapshot when the needed entries are compacted) if flow control
   *  allows. With `sendIfEmpty` an append without entries still goes out (it carries commit). */
  private maybeSendAppend(to: NodeId, sendIfEmpty: boolean): boolean {
    const pr = this.tracker.progress.get(to);
    if (!pr || pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    let prevTerm: number;
    let entries: Entry[];
    try {
      prevTerm = this.log.term(prevIndex);
      // With a full window (reached after a heartbeat response unpaused it) send no entries:
      // the empty append probes whether the messages in flight were lost.
      entries = pr.inflights.full() ? [] : this.log.entries(pr.next, this.config.msgBytesMax);
    } catch (error) {
      if (isCfnError(error, "CFN_ERR_COMPACTED")) return this.maybeSendSnapshot(to, pr);
      throw error;
    }
    if (entries.length === 0 && !sendIfEmpty) return false;
    this.send(
      makeMessage({
        type: MessageType.App,
        to,
        index: prevIndex,
        logTerm: prevTerm,
        entries,
        commit: this.log.committed,
      }),
    );
    pr.sentEntries(entries.length, entriesBytes(entries));
    pr.sentCommitIndex(this.log.committed);
    return true;
  }

  private sendAppend(to: NodeId): void {
    this.maybeSendAppend(to, true);
  }

  private maybeSendSnapshot(to: NodeId, pr: Progress): boolean {
    // An inactive peer would only waste the bandwidth; it gets one when it answers again.
    if (!pr.recentActive) return false;
    let snapshot: Snapshot;
    try {
      snapshot = this.log.snapshot();
    } catch (error) {
      // The application is producing a snapshot; try again on a later heartbeat response.
      if (isCfnError(error, "CFN_ERR_UNAVAILABLE")) return false;
      throw error;
    }
    assert(snapshot.metadata.index > 0, "raft: need a non-empty snapshot to send");
    pr.becomeSnapshot(snapshot.metadata.index);
    const base = makeMessage({ type: MessageType.Snap, from: this.id, to, term: this.term });
    for (const chunk of chunkSnapshot(base, snapshot, this.config.snapshotChunkBytes)) this.send(chunk);
    return true;
  }

  private sendHeartbeat(to: NodeId, context: Uint8Array | undefined): void {
    // Never advance a follower's commit past what it is known to hold.
    const pr = this.tracker.progress.get(to)!;
    const commit = Math.min(pr.match, this.log.committed);
    pr.sentCommitIndex(commit);
    const m = makeMessage({ type: MessageType.Heartbeat, to, commit, index: this.ticks });
    if (context) m.context = context;
    this.send(m);
  }

  private bcastAppend(): void {
    this.tracker.visit((id) => {
      if (id !== this.id) this.sendAppend(id);
    });
  }

  private bcastHeartbeat(): void {
    this.bcastHeartbeatWithContext(this.readOnly.lastPendingRequestContext());
  }

  private bcastHeartbeatWithContext(context: Uint8Array | undefined): void {
    this.tracker.visit((id) => {
      if (id !== this.id) this.sendHeartbeat(id, context);
    });
  }

  private sendTimeoutNow(to: NodeId): void {
    this.timeoutNowSentInTerm = true;
    this.send(makeMessage({ type: MessageType.TimeoutNow, to }));
  }

  // ---------------------------------------------------------------------------------------
  // Role changes

  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = "";
    }
    this.lead = "";
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.resetRandomizedElectionTimeout();
    this.abortLeaderTransfer();
    this.tracker.resetVotes();
    const lastIndex = this.log.lastIndex();
    for (const [id, old] of this.tracker.progress) {
      const pr = new Progress({
        match: id === this.id ? lastIndex : 0,
        next: lastIndex + 1,
        inflightMsgsMax: this.config.inflightMsgsMax,
        inflightBytesMax: this.config.inflightBytesMax,
        isLearner: old.isLearner,
      });
      pr.recentActive = id === this.id;
      this.tracker.progress.set(id, pr);
    }
    this.pendingConfIndex = 0;
    this.uncommittedBytes = 0;
    this.timeoutNowSentInTerm = false;
    this.readOnly = new ReadOnly();
    this.pendingReadIndexMessages = [];
  }

  private resetRandomizedElectionTimeout(): void {
    const base = this.config.electionTimeoutTicks;
    const jitter = Math.min(base - 1, Math.max(0, Math.floor(this.random() * base)));
    this.randomizedElectionTimeout = base + jitter;
  }

  becomeFollower(term: number, lead: NodeId): void {
    const wasRole = this.role;
    const wasTerm = this.term;
    this.reset(term);
    this.lead = lead;
    this.role = "follower";
    if (wasRole !== "follower" || wasTerm !== term) {
      this.logger.info("became follower", { id: this.id, term, leader: lead, from: wasRole });
    }
  }

  private becomePreCandidate(): void {
    assert(this.role !== "leader", "raft: leader cannot become pre-candidate");
    // A pre-candidate changes neither term nor vote: it only asks whether it could win.
    this.tracker.resetVotes();
    this.lead = "";
    this.role = "pre_candidate";
    this.logger.info("became pre-candidate", { id: this.id, term: this.term });
  }

  private becomeCandidate(): void {
    assert(this.role !== "leader", "raft: leader cannot become candidate");
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = "candidate";
    this.logger.info("became candidate", { id: this.id, term: this.term });
  }

  private becomeLeader(): void {
    assert(this.role !== "follower", "raft: follower cannot become leader directly");
    this.reset(this.term);
    this.lead = this.id;
    this.role = "leader";
    this.logger.info("became leader", { id: this.id, term: this.term, lastIndex: this.log.lastIndex() });
    const self = this.tracker.progress.get(this.id)!;
    self.becomeReplicate();
    self.recentActive = true;
    // Conservatively treat any conf change in the log as pending until applied.
    this.pendingConfIndex = this.log.lastIndex();
    // The no-op of the new term: committing it commits every earlier entry (Raft §5.4.2).
    const appended = this.appendEntries([
      { term: 0, index: 0, type: EntryType.Normal, data: new Uint8Array(0) },
    ]);
    assert(appended, "raft: the leader's empty entry must always be accepted");
  }

  private promotable(): boolean {
    const pr = this.tracker.progress.get(this.id);
    return pr !== undefined && !pr.isLearner && !this.log.hasPendingSnapshot();
  }

  private hasUnappliedConfChanges(): boolean {
    if (this.log.applied >= this.log.committed) return false;
    const lo = Math.max(this.log.applied + 1, this.log.firstIndex());
    const entries = this.log.slice(lo, this.log.committed + 1, Number.MAX_SAFE_INTEGER);
    return entries.some((e) => e.type === EntryType.ConfChange);
  }

  private hup(campaignType: CampaignType): void {
    if (this.role === "leader") return;
    if (!this.promotable()) return;
    // A node must not campaign with a config it has not applied yet: it may count the wrong
    // voters.
    if (this.hasUnappliedConfChanges()) return;
    this.campaign(campaignType);
  }

  private campaign(campaignType: CampaignType): void {
    if (!this.promotable()) return;
    let voteType: MessageType;
    let term: number;
    if (campaignType === "pre-election") {
      this.becomePreCandidate();
      voteType = MessageType.PreVote;
      term = this.term + 1; // the term we would campaign for
    } else {
      this.becomeCandidate();
      voteType = MessageType.Vote;
      term = this.term;
    }
    if (this.poll(this.id, voteResponseType(voteType), true) === "won") {
      // A single-voter config wins at once.
      if (campaignType === "pre-election") this.campaign("election");
      else this.becomeLeader();
      return;
    }
    const lastIndex = this.log.lastIndex();
    const lastTerm = this.log.lastTerm();
    for (const id of this.tracker.voterIds()) {
      if (id === this.id) continue;
      const m = makeMessage({ type: voteType, to: id, term, index: lastIndex, logTerm: lastTerm });
      if (campaignType === "transfer") m.leaderTransfer = true;
      this.send(m);
    }
  }

  private poll(id: NodeId, _type: MessageType, granted: boolean): VoteResult {
    this.tracker.recordVote(id, granted);
    return this.tracker.tallyVotes().result;
  }

  // ---------------------------------------------------------------------------------------
  // Ticks

  tick(): void {
    this.ticks++;
    if (this.role === "leader") this.tickHeartbeat();
    else this.tickElection();
  }

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.step(makeMessage({ type: MessageType.Hup, from: this.id }));
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.config.electionTimeoutTicks) {
      this.electionElapsed = 0;
      if (this.config.checkQuorum) this.step(makeMessage({ type: MessageType.CheckQuorum, from: this.id }));
      // A transfer that did not finish within an election timeout is abandoned.
      if (this.role === "leader" && this.leadTransferee !== "") this.abortLeaderTransfer();
      this.maybeAutoLeave();
    }
    if (this.role !== "leader") return;
    this.tickSnapshotTimeouts();
    if (this.heartbeatElapsed >= this.config.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      this.step(makeMessage({ type: MessageType.Beat, from: this.id }));
    }
  }

  /** A snapshot whose outcome was never reported (a lost report, a crashed transport) must
   *  not park the follower forever: after snapshotTimeoutTicks it counts as failed. */
  private tickSnapshotTimeouts(): void {
    for (const pr of this.tracker.progress.values()) {
      if (pr.state !== "snapshot") continue;
      pr.snapshotTicks++;
      if (pr.snapshotTicks < this.config.snapshotTimeoutTicks) continue;
      pr.pendingSnapshot = 0;
      pr.becomeProbe();
      pr.msgAppFlowPaused = true; // resume on the next heartbeat response
      this.logger.warn("snapshot send timed out; probing again", {
        id: this.id,
        ticks: this.config.snapshotTimeoutTicks,
      });
    }
  }

  // ---------------------------------------------------------------------------------------
  // Step

  /** Feeds one message. Throws CFN_ERR_PROPOSAL_DROPPED / CFN_ERR_CONF_CHANGE /
   *  CFN_ERR_NOT_LEADER only for local requests (proposals and reads). */
  step(m: Message): void {
    if (m.term === 0) {
      // local message (or a forwarded proposal / read)
    } else if (m.term > this.term) {
      if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
        const inLease =
          this.config.checkQuorum &&
          ((this.lead !== "" && this.electionElapsed < this.config.electionTimeoutTicks) ||
            this.ticks < this.startupVoteLeaseTicks);
        // While we hear from a leader we ignore (pre)votes from nodes that cannot reach it:
        // they must not depose a healthy leader. A transfer's vote bypasses the lease.
        if (inLease && !m.leaderTransfer) return;
      }
      if (m.type === MessageType.PreVote) {
        // A pre-vote never changes our term.
      } else if (m.type === MessageType.PreVoteResp && !m.reject) {
        // A granted pre-vote comes with the term we will campaign for; we bump it when the
        // pre-vote is won, not before.
      } else if (
        m.type === MessageType.App ||
        m.type === MessageType.Heartbeat ||
        m.type === MessageType.Snap
      ) {
        this.becomeFollower(m.term, m.from);
      } else {
        this.becomeFollower(m.term, "");
      }
    } else if (m.term < this.term) {
      if (
        (this.config.checkQuorum || this.config.preVote) &&
        (m.type === MessageType.App || m.type === MessageType.Heartbeat)
      ) {
        // A stale leader (e.g. after a partition heals) learns the new term from this answer
        // and steps down; without it a node whose term was bumped could never rejoin.
        this.send(makeMessage({ type: MessageType.AppResp, to: m.from }));
      } else if (m.type === MessageType.PreVote) {
        this.send(makeMessage({ type: MessageType.PreVoteResp, to: m.from, term: this.term, reject: true }));
      }
      return; // otherwise ignore stale messages
    }

    switch (m.type) {
      case MessageType.Hup:
        this.hup(this.config.preVote ? "pre-election" : "election");
        return;
      case MessageType.Vote:
      case MessageType.PreVote:
        this.handleVoteRequest(m);
        return;
      default:
        if (this.role === "leader") this.stepLeader(m);
        else if (this.role === "follower") this.stepFollower(m);
        else this.stepCandidate(m);
    }
  }

  private handleVoteRequest(m: Message): void {
    const canVote =
      this.vote === m.from ||
      (this.vote === "" && this.lead === "") ||
      (m.type === MessageType.PreVote && m.term > this.term);
    if (canVote && this.log.isUpToDate(m.index, m.logTerm)) {
      // Grant with the term of the request: a pre-vote's term is one we have not entered.
      this.send(makeMessage({ type: voteResponseType(m.type), to: m.from, term: m.term }));
      if (m.type === MessageType.Vote) {
        this.electionElapsed = 0;
        this.vote = m.from;
      }
    } else {
      this.send(makeMessage({ type: voteResponseType(m.type), to: m.from, term: this.term, reject: true }));
    }
  }

  private stepLeader(m: Message): void {
    switch (m.type) {
      case MessageType.Beat:
        this.bcastHeartbeat();
        return;
      case MessageType.CheckQuorum:
        if (!this.tracker.quorumActive()) {
          this.logger.warn("stepping down: no quorum heard from within an election timeout", {
            id: this.id,
            term: this.term,
          });
          this.becomeFollower(this.term, "");
          return;
        }
        this.tracker.visit((id, pr) => {
          if (id !== this.id) pr.recentActive = false;
        });
        return;
      case MessageType.Propose:
        this.leaderPropose(m);
        return;
      case MessageType.ReadIndex:
        this.leaderReadIndex(m);
        return;
    }

    const pr = this.tracker.progress.get(m.from);
    if (!pr) return; // a peer no longer (or not yet) in the config
    switch (m.type) {
      case MessageType.AppResp:
        this.handleAppendResponse(m, pr);
        return;
      case MessageType.HeartbeatResp:
        this.handleHeartbeatResponse(m, pr);
        return;
      case MessageType.SnapStatus:
        if (pr.state !== "snapshot") return;
        if (m.reject) pr.pendingSnapshot = 0; // failed: the follower may need another snapshot
        pr.becomeProbe();
        // Wait for the follower's answer (heartbeat response or append response) before
        // sending more.
        pr.msgAppFlowPaused = true;
        return;
      case MessageType.Unreachable:
        // Appends in flight are probably lost; probe again instead of pipelining.
        if (pr.state === "replicate") pr.becomeProbe();
        return;
      case MessageType.TransferLeader:
        this.handleTransferLeader(m.from, pr);
        return;
    }
  }

  private leaderPropose(m: Message): void {
    if (m.entries.length === 0)
      throw new CfnError("CFN_ERR_INVALID_MESSAGE", "raft: a proposal without entries");
    const local = m.from === "" || m.from === this.id;
    if (!this.tracker.progress.has(this.id)) throw dropped("this leader was removed from the config");
    if (this.leadTransferee !== "")
      throw dropped(`leadership transfer to ${this.leadTransferee} in progress`);
    const entries = m.entries.map((e) => ({ ...e }));
    for (let i = 0; i < entries.length; i++) {
      if (entries[i].type !== EntryType.ConfChange) continue;
      let refusal: string | undefined;
      try {
        refusal = this.confChangeRefusal(decodeConfChange(entries[i].data));
      } catch (error) {
        if (!isCfnError(error, "CFN_ERR_INVALID_MESSAGE")) throw error;
        refusal = error.message;
      }
      if (refusal !== undefined) {
        if (local) throw new CfnError("CFN_ERR_CONF_CHANGE", `conf change refused: ${refusal}`);
        // A forwarded change cannot be refused to its proposer; it becomes a no-op.
        entries[i] = { term: 0, index: 0, type: EntryType.Normal, data: new Uint8Array(0) };
      } else {
        this.pendingConfIndex = this.log.lastIndex() + i + 1;
      }
    }
    if (!this.appendEntries(entries)) throw dropped("uncommittedEntriesBytesMax reached");
    this.bcastAppend();
  }

  /** Why a conf change cannot be proposed now, or undefined when it can. */
  confChangeRefusal(change: ConfChange): string | undefined {
    if (this.pendingConfIndex > this.log.applied) return "a previous conf change is not applied yet";
    const joint = isJoint(this.tracker.config);
    const wantsLeave = change.changes.length === 0;
    if (joint && !wantsLeave) return "must leave the joint config first";
    if (!joint && wantsLeave) return "not in a joint config";
    try {
      applyConfChangeTo(this.tracker.config, this.tracker.progress, this.changerContext(), change);
    } catch (error) {
      if (isCfnError(error, "CFN_ERR_CONF_CHANGE")) return error.message;
      throw error;
    }
    return undefined;
  }

  private leaderReadIndex(m: Message): void {
    if (this.tracker.isSingleton(this.id)) {
      this.respondToReadIndex(m, this.log.committed);
      return;
    }
    // Until it commits an entry of its own term, a new leader does not know the true commit
    // index (Raft §6.4); postpone.
    if (!this.committedEntryInCurrentTerm()) {
      this.pendingReadIndexMessages.push(m);
      return;
    }
    this.sendReadIndexResponse(m);
  }

  /**
   * The leader lease: a quorum acknowledged heartbeats sent at tick T or later, and each of
   * those voters refuses votes for electionTimeoutTicks after receiving one, so no other leader
   * can exist before T + electionTimeoutTicks. One tick of margin absorbs tick phase and
   * drift between nodes. Never valid once a TimeoutNow went out (transfer votes bypass leases).
   */
  private leaseValid(): boolean {
    if (!this.config.checkQuorum || this.leadTransferee !== "" || this.timeoutNowSentInTerm) return false;
    const leaseStart = jointCommittedIndex(this.tracker.config.voters, (id) =>
      id === this.id
        ? this.ticks
        : (this.tracker.progress.get(id)?.heartbeatAckTick ?? Number.NEGATIVE_INFINITY),
    );
    return this.ticks < leaseStart + this.config.electionTimeoutTicks - 1;
  }

  private committedEntryInCurrentTerm(): boolean {
    return this.log.termOrZero(this.log.committed) === this.term;
  }

  private sendReadIndexResponse(m: Message): void {
    if (this.config.readOnlyOption === "lease" && this.leaseValid()) {
      this.respondToReadIndex(m, this.log.committed);
      return;
    }
    // Safe mode, or a lease that is not (or no longer) established: confirm with a quorum.
    const context = m.context ?? new Uint8Array(0);
    this.readOnly.addRequest(this.log.committed, m);
    this.readOnly.recvAck(this.id, context);
    this.bcastHeartbeatWithContext(context);
  }

  private respondToReadIndex(request: Message, index: number): void {
    const context = request.context ?? new Uint8Array(0);
    if (request.from === "" || request.from === this.id) {
      this.readStates.push({ index, requestContext: context });
      return;
    }
    this.send(makeMessage({ type: MessageType.ReadIndexResp, to: request.from, index, context }));
  }

  private releasePendingReadIndexMessages(): void {
    if (this.pendingReadIndexMessages.length === 0) return;
    assert(this.committedEntryInCurrentTerm(), "raft: releasing reads before committing in term");
    const pending = this.pendingReadIndexMessages;
    this.pendingReadIndexMessages = [];
    for (const m of pending) this.sendReadIndexResponse(m);
  }

  private handleAppendResponse(m: Message, pr: Progress): void {
    pr.recentActive = true;
    if (m.reject) {
      // The follower's hint (its last index with a term <= the probed one) lets us skip a
      // whole term of mismatching entries per round trip instead of one entry.
      let nextProbeIndex = m.rejectHint;
      if (m.logTerm > 0) nextProbeIndex = this.log.findConflictByTerm(m.rejectHint, m.logTerm).index;
      if (pr.maybeDecrTo(m.index, nextProbeIndex)) {
        if (pr.state === "replicate") pr.becomeProbe();
        this.sendAppend(m.from);
      }
      return;
    }
    // A follower cannot hold entries of this term that we never had; ignore a bogus ack.
    if (m.index > this.log.lastIndex()) return;
    const wasPaused = pr.isPaused();
    if (!pr.maybeUpdate(m.index)) return;
    if (pr.state === "probe") {
      pr.becomeReplicate();
    } else if (pr.state === "snapshot" && pr.match + 1 >= this.log.firstIndex()) {
      // The follower caught up past the snapshot and the log holds what it needs next.
      pr.becomeProbe();
      pr.becomeReplicate();
    } else if (pr.state === "replicate") {
      pr.inflights.freeLE(m.index);
    }
    if (this.maybeCommit()) {
      this.releasePendingReadIndexMessages();
      this.bcastAppend(); // carries the new commit index, and entries where the window allows
    } else {
      // Fill the window: pipelining sends further appends without waiting.
      let sent = false;
      while (this.maybeSendAppend(m.from, false)) sent = true;
      // A follower that was paused may have missed commit updates broadcast meanwhile.
      if (!sent && wasPaused && pr.sentCommit < this.log.committed) this.sendAppend(m.from);
    }
    if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) this.sendTimeoutNow(m.from);
  }

  private handleHeartbeatResponse(m: Message, pr: Progress): void {
    pr.recentActive = true;
    pr.heartbeatAckTick = Math.max(pr.heartbeatAckTick, Math.min(m.index, this.ticks));
    pr.msgAppFlowPaused = false;
    if (pr.match < this.log.lastIndex()) this.sendAppend(m.from);
    // Reads confirmed by a heartbeat round (safe mode, or lease mode without a valid lease).
    if (!m.context || m.context.byteLength === 0) return;
    const acks = this.readOnly.recvAck(m.from, m.context);
    if (!acks || !this.tracker.isQuorum(acks)) return;
    for (const status of this.readOnly.advance(m.context))
      this.respondToReadIndex(status.request, status.index);
  }

  private handleTransferLeader(transferee: NodeId, pr: Progress): void {
    if (pr.isLearner) return; // a learner cannot lead
    if (this.leadTransferee !== "") {
      if (this.leadTransferee === transferee) return; // already under way
      this.abortLeaderTransfer();
    }
    if (transferee === this.id) return; // already the leader
    // The transfer must finish within an election timeout (see tickHeartbeat).
    this.electionElapsed = 0;
    this.leadTransferee = transferee;
    this.logger.info("leadership transfer started", { id: this.id, term: this.term, to: transferee });
    if (pr.match === this.log.lastIndex()) this.sendTimeoutNow(transferee);
    else this.sendAppend(transferee);
  }

  abortLeaderTransfer(): void {
    if (this.leadTransferee !== "" && this.role === "leader") {
      this.logger.info("leadership transfer ended", {
        id: this.id,
        term: this.term,
        to: this.leadTransferee,
      });
    }
    this.leadTransferee = "";
  }

  private stepCandidate(m: Message): void {
    const myResponse = this.role === "pre_candidate" ? MessageType.PreVoteResp : MessageType.VoteResp;
    switch (m.type) {
      case MessageType.Propose:
        throw dropped("no leader (election in progress)");
      case MessageType.ReadIndex:
        throw new CfnError("CFN_ERR_NOT_LEADER", "read index needs a leader; an election is in progress", {
          leader: "",
        });
      case MessageType.App:
        this.becomeFollower(m.term, m.from);
        this.handleAppendEntries(m);
        return;
      case MessageType.Heartbeat:
        this.becomeFollower(m.term, m.from);
        this.handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.becomeFollower(m.term, m.from);
        this.handleSnapshot(m);
        return;
      case myResponse: {
        const result = this.poll(m.from, m.type, !m.reject);
        if (result === "won") {
          if (this.role === "pre_candidate") {
            this.campaign("election");
          } else {
            this.becomeLeader();
            this.bcastAppend();
          }
        } else if (result === "lost") {
          this.becomeFollower(this.term, "");
        }
        return;
      }
      default:
        return; // TimeoutNow and others: ignore
    }
  }

  private stepFollower(m: Message): void {
    // A proposal or read that another node forwarded here (it took this node for the leader) is
    // not relayed again: every message a node sends carries its own id as `from` (the transport
    // authenticates it), and the requester retries once it learns the leader, as it must for
    // any dropped request. (A local TransferLeader carries the transferee in `from`, as in etcd.)
    const relayed = m.from !== "" && m.from !== this.id;
    if (relayed && (m.type === MessageType.Propose || m.type === MessageType.ReadIndex)) {
      this.logger.debug("raft: not relaying a request forwarded by another node", {
        type: m.type,
        from: m.from,
      });
      return;
    }
    switch (m.type) {
      case MessageType.Propose:
        if (this.lead === "") throw dropped("no leader");
        if (this.config.disableProposalForwarding) throw dropped("proposal forwarding is disabled");
        this.send({ ...m, to: this.lead }); // a copy: the caller's message stays untouched
        return;
      case MessageType.App:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleAppendEntries(m);
        return;
      case MessageType.Heartbeat:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleSnapshot(m);
        return;
      case MessageType.TransferLeader:
        if (this.lead === "") return; // nobody to forward to; the caller retries
        this.send({ ...m, to: this.lead }); // a copy: the caller's message stays untouched
        return;
      case MessageType.TimeoutNow:
        // The leader asks us to take over now: campaign without pre-vote, bypassing leases.
        this.hup("transfer");
        return;
      case MessageType.ReadIndex:
        if (this.lead === "") {
          throw new CfnError("CFN_ERR_NOT_LEADER", "read index needs a leader; none is known", {
            leader: "",
          });
        }
        this.send({ ...m, to: this.lead }); // a copy: the caller's message stays untouched
        return;
      case MessageType.ReadIndexResp:
        this.readStates.push({ index: m.index, requestContext: m.context ?? new Uint8Array(0) });
        return;
      default:
        return;
    }
  }

  private handleAppendEntries(m: Message): void {
    if (m.index < this.log.committed) {
      // Everything up to our commit index matches any leader's log; skip ahead.
      this.send(makeMessage({ type: MessageType.AppResp, to: m.from, index: this.log.committed }));
      return;
    }
    const lastNewIndex = this.log.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    if (lastNewIndex !== undefined) {
      this.send(makeMessage({ type: MessageType.AppResp, to: m.from, index: lastNewIndex }));
      return;
    }
    // Reject with a hint: our last index whose term is <= the leader's term at m.index.
    const hintIndex = Math.min(m.index, this.log.lastIndex());
    const hint = this.log.findConflictByTerm(hintIndex, m.logTerm);
    this.send(
      makeMessage({
        type: MessageType.AppResp,
        to: m.from,
        index: m.index,
        reject: true,
        rejectHint: hint.index,
        logTerm: hint.term,
      }),
    );
  }

  private handleHeartbeat(m: Message): void {
    this.log.commitTo(Math.min(m.commit, this.log.lastIndex()));
    const response = makeMessage({ type: MessageType.HeartbeatResp, to: m.from, index: m.index });
    if (m.context) response.context = m.context;
    this.send(response);
  }

  private handleSnapshot(m: Message): void {
    const snapshot = this.assembler.accept(m);
    if (!snapshot) return; // more chunks to come (or a broken sequence, dropped)
    if (this.restore(snapshot)) {
      this.send(makeMessage({ type: MessageType.AppResp, to: m.from, index: this.log.lastIndex() }));
    } else {
      this.send(makeMessage({ type: MessageType.AppResp, to: m.from, index: this.log.committed }));
    }
  }

  /** Installs a snapshot from the leader; false when it is not newer than what we have. */
  private restore(snapshot: Snapshot): boolean {
    const { index, term, conf } = snapshot.metadata;
    if (index <= this.log.committed) return false;
    assert(this.role === "follower", "raft: only a follower restores a snapshot");
    if (this.log.matchTerm(index, term)) {
      // We already hold the snapshot's last entry: just move the commit index.
      this.log.commitTo(index);
      return false;
    }
    this.log.restore(snapshot);
    this.switchToConfig(restoreConfig(conf, this.changerContext()));
    this.logger.info("restored snapshot", { id: this.id, index, term, bytes: snapshot.data.byteLength });
    return true;
  }

  // ---------------------------------------------------------------------------------------
  // Log and commit

  /** Appends entries at the leader's term; false when they exceed the uncommitted budget. */
  private appendEntries(entries: Entry[]): boolean {
    const lastIndex = this.log.lastIndex();
    const stamped = entries.map((e, i) => ({ ...e, term: this.term, index: lastIndex + 1 + i }));
    if (!this.increaseUncommittedBytes(stamped)) return false;
    const newLast = this.log.append(stamped);
    // The leader counts itself: its entries are persisted before any message that depends on
    // them is sent (the Ready contract).
    this.tracker.progress.get(this.id)?.maybeUpdate(newLast);
    this.maybeCommit();
    return true;
  }

  private increaseUncommittedBytes(entries: readonly Entry[]): boolean {
    const bytes = payloadBytes(entries);
    // One oversized proposal is let through when nothing is uncommitted, else it could never go.
    if (
      this.uncommittedBytes > 0 &&
      bytes > 0 &&
      this.uncommittedBytes + bytes > this.config.uncommittedEntriesBytesMax
    ) {
      return false;
    }
    this.uncommittedBytes += bytes;
    return true;
  }

  reduceUncommittedBytes(entries: readonly Entry[]): void {
    if (this.role !== "leader") return;
    this.uncommittedBytes = Math.max(0, this.uncommittedBytes - payloadBytes(entries));
  }

  /** Commits the quorum's index if it is an entry of the current term (figure 8). */
  private maybeCommit(): boolean {
    return this.log.maybeCommit(this.tracker.committed(), this.term);
  }

  /** The application applied up to `index`; may trigger the auto-leave of a joint config. */
  appliedTo(index: number): void {
    const applied = Math.max(index, this.log.applied);
    this.log.appliedTo(applied);
    this.maybeAutoLeave();
  }

  /** A leader in a joint config with autoLeave proposes the leave once it applied the joint
   *  entry. Retried on later applies and at every election-timeout boundary (a proposal is
   *  dropped while a transfer is under way). */
  private maybeAutoLeave(): void {
    if (this.role !== "leader" || !this.tracker.config.autoLeave) return;
    if (this.log.applied < this.pendingConfIndex) return;
    const leave: Entry = {
      term: 0,
      index: 0,
      type: EntryType.ConfChange,
      data: encodeConfChange({ changes: [], transition: "auto" }),
    };
    try {
      this.step(makeMessage({ type: MessageType.Propose, from: this.id, entries: [leave] }));
    } catch (error) {
      if (!isCfnError(error)) throw error;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Membership

  applyConfChange(change: ConfChange): ConfState {
    this.logger.info("applying conf change", {
      id: this.id,
      changes: change.changes,
      transition: change.transition,
    });
    return this.switchToConfig(
      applyConfChangeTo(this.tracker.config, this.tracker.progress, this.changerContext(), change),
    );
  }

  private switchToConfig(result: ChangeResult): ConfState {
    this.tracker.config = result.config;
    this.tracker.progress = result.progress;
    this.tracker.checkInvariants();
    const confState = this.tracker.confState();
    const self = this.tracker.progress.get(this.id);
    this.isLearner = self?.isLearner ?? false;
    if ((!self || this.isLearner) && this.role === "leader") {
      // Removed or demoted: a leader outside the voters must not keep leading.
      this.logger.warn("stepping down: removed from the voters", { id: this.id, term: this.term });
      this.becomeFollower(this.term, "");
      return confState;
    }
    if (this.role !== "leader" || confState.voters.length === 0) return confState;
    // The quorum may have changed: maybe commit, and bring new members up to date.
    if (this.maybeCommit()) {
      this.releasePendingReadIndexMessages();
      this.bcastAppend();
    } else {
      this.tracker.visit((id) => {
        if (id !== this.id) this.maybeSendAppend(id, false);
      });
    }
    if (this.leadTransferee !== "" && !this.tracker.isVoter(this.leadTransferee)) this.abortLeaderTransfer();
    return confState;
  }

  /** Cross-structure invariants, checked at every Ready (a failure is a bug). */
  checkInvariants(): void {
    const log = this.log;
    assert(
      log.applied <= log.committed,
      `raft ${this.id}: applied ${log.applied} > committed ${log.committed}`,
    );
    assert(
      log.committed <= log.lastIndex(),
      `raft ${this.id}: committed ${log.committed} > last ${log.lastIndex()}`,
    );
    if (this.role === "leader") {
      assert(this.lead === this.id, `raft ${this.id}: leader with lead=${this.lead}`);
      const self = this.tracker.progress.get(this.id);
      assert(
        self !== undefined && self.match === log.lastIndex(),
        `raft ${this.id}: leader's own match behind its log`,
      );
    }
    if (this.role === "candidate")
      assert(this.vote === this.id, `raft ${this.id}: candidate without its own vote`);
    for (const [id, pr] of this.tracker.progress) {
      assert(pr.match < pr.next, `raft ${this.id}: progress ${id} match ${pr.match} >= next ${pr.next}`);
    }
  }

  /** Drops messages from peers we do not know, for response types only. */
  isFromUnknownPeer(m: Message): boolean {
    return isResponseMessage(m.type) && !this.tracker.progress.has(m.from);
  }
}
