// RaftHost: the shell around the pure Raft core (STYLE.md item 1). It owns the I/O the core
// leaves out — a LogStore on disk, a Transport to the peers, a StateMachine to apply to and a
// tick timer — and drives the core's Ready loop:
//
//   1. persist hardState + entries + snapshot with ONE LogStore.save (one fsync),
//   2. mirror them into the MemoryStorage the core reads,
//   3. send the messages (only now: persist before send),
//   4. install a received snapshot, apply committed entries (conf changes via applyConfChange),
//      serve ReadIndex reads whose index is applied, take a snapshot when one is due,
//   5. advance().
//
// Group commit: while a save is in flight the event loop keeps stepping peer messages and
// proposals into the core; they all land in the next Ready, so one fsync covers every proposal
// that arrived during the previous one. See docs/RAFT_HOST.md.

import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import { assert, CfnError, isCfnError } from "../errors.js";
import type { Logger } from "../obs/logger.js";
import type { Metrics } from "../obs/metrics.js";
import {
  type ConfChange,
  ConfChangeType,
  type ConfState,
  decodeConfChange,
  type Entry,
  EntryType,
  MemoryStorage,
  type Message,
  MessageType,
  makeMessage,
  type NodeId,
  type RaftStatus,
  type RandomSource,
  RawNode,
  type Ready,
  type Snapshot,
  type StateRole,
} from "../raft/index.js";
import type { StateMachine } from "../statemachine/types.js";
import type { LoadedLog, LogStore } from "../storage/log-store.js";
import type { Transport } from "../transport/transport.js";
import { decodeEnvelope, encodeEnvelope, INCARNATION_BYTES, sameIncarnation } from "./raft-envelope.js";
import { coreConfig, type RaftHostConfig, resolveRaftHostConfig } from "./raft-host-config.js";
import { RaftHostMetrics } from "./raft-host-metrics.js";
import { ProposalTracker } from "./raft-proposals.js";
import { ReadIndexQueue } from "./raft-reads.js";
import { decodeHostSnapshot, encodeHostSnapshot } from "./raft-snapshot-data.js";
import { decodeFromWire, encodeForWire } from "./raft-wire.js";

export { DEFAULT_RAFT_HOST_CONFIG, type RaftHostConfig, resolveRaftHostConfig } from "./raft-host-config.js";

export interface RaftHostOptions<Result> {
  /** Limits and timing; missing fields take DEFAULT_RAFT_HOST_CONFIG. */
  config: Partial<RaftHostConfig> & { id: NodeId };
  logger: Logger;
  metrics: Metrics;
  /** The durable log (opened; the host closes it in stop()). */
  store: LogStore;
  /** The peer transport (not started; the host starts and closes it). */
  transport: Transport;
  /** Fresh (nothing applied): the host restores it from the stored snapshot and replays the log. */
  stateMachine: StateMachine<Result>;
  /** Transport address of every known member (this node's own entry is ignored). */
  peers: Record<NodeId, string>;
  /**
   * The founding voters of a new cluster. Used only when the store is empty; every founder must
   * pass the same list. A node joining later passes nothing and waits for the leader's snapshot.
   */
  bootstrap?: { voters: NodeId[] };
  /** Randomness for election timeouts; Math.random by default. */
  random?: RandomSource;
}

/** What onLeaderChange handlers receive. `leader` is "" while no leader is known. */
export interface LeaderChange {
  leader: NodeId;
  term: number;
  role: StateRole;
}

export interface MemberStatus {
  id: NodeId;
  address: string | undefined;
  voter: boolean;
  /** Leader only: highest index known replicated on the member, and how far it trails. */
  match?: number;
  lag?: number;
  /** Leader only: probe / replicate / snapshot. */
  state?: string;
}

export interface RaftHostStatus {
  id: NodeId;
  role: StateRole;
  term: number;
  leader: NodeId;
  commit: number;
  applied: number;
  lastIndex: number;
  firstIndex: number;
  snapshotIndex: number;
  members: MemberStatus[];
}

interface PendingConfChange {
  matches: (change: ConfChange) => boolean;
  resolve: (conf: ConfState) => void;
  reject: (error: unknown) => void;
  deadlineMs: number;
}

function isHeartbeatResponse(message: Message): boolean {
  return message.type === MessageType.HeartbeatResp;
}

/** "stopping": handing leadership over, the loop still runs; "closing": no new work at all. */
type HostState = "new" | "starting" | "running" | "stopping" | "closing" | "stopped" | "failed";

export class RaftHost<Result> {
  readonly id: NodeId;
  readonly config: RaftHostConfig;
  private readonly options: RaftHostOptions<Result>;
  private readonly logger: Logger;
  private readonly hostMetrics: RaftHostMetrics;
  private readonly store: LogStore;
  private readonly transport: Transport;
  private readonly stateMachine: StateMachine<Result>;
  private readonly incarnation: Uint8Array = randomBytes(INCARNATION_BYTES);
  private readonly addresses = new Map<NodeId, string>();
  /** Cancels of the leadership waits in flight (transferLeadership): stop() ends them. */
  private readonly leaderWaits = new Set<() => void>();
  private node!: RawNode;
  private storage!: MemoryStorage;
  private confState!: ConfState;
  private state: HostState = "new";
  private stopped: Promise<void> | undefined;

  private nextSequence = 1;
  private readonly proposals: ProposalTracker<Result>;
  private readonly reads: ReadIndexQueue;
  private confChanges: PendingConfChange[] = [];

  private tickTimer: NodeJS.Timeout | undefined;
  private readyScheduled = false;
  private readyLoop: Promise<void> | undefined;
  private compactions: Promise<void> = Promise.resolve();
  private leader: NodeId = "";
  /** The last non-empty leader seen, for cfn_raft_leader_changes_total. */
  private lastKnownLeader: NodeId = "";
  private role: StateRole = "follower";
  private term = 0;
  private applied = 0;
  private readonly leaderListeners = new Set<(change: LeaderChange) => void>();
  private readonly fatalListeners = new Set<(error: unknown) => void>();
  /** Log every Ready at debug level (CFN_RAFT_TRACE=1): batch sizes and save times. */
  private readonly traceReady = process.env.CFN_RAFT_TRACE === "1";

  constructor(options: RaftHostOptions<Result>) {
    this.config = resolveRaftHostConfig(options.config);
    this.id = this.config.id;
    this.options = options;
    this.logger = options.logger.child("raft");
    this.hostMetrics = new RaftHostMetrics(options.metrics);
    this.proposals = new ProposalTracker<Result>(this.hostMetrics, this.config.proposalTimeoutMs);
    this.reads = new ReadIndexQueue(this.hostMetrics.reads, this.config.readTimeoutMs);
    this.store = options.store;
    this.transport = options.transport;
    this.stateMachine = options.stateMachine;
    assert(
      this.transport.nodeId === this.id,
      `RaftHost ${this.id}: transport belongs to ${this.transport.nodeId}`,
    );
    assert(this.stateMachine.appliedIndex === 0, "RaftHost: the state machine must be fresh");
    for (const [peerId, address] of Object.entries(options.peers)) {
      if (peerId !== this.id) this.addresses.set(peerId, address);
    }
  }

  // ---- lifecycle --------------------------------------------------------------------------------

  /** Loads the log, restores the state machine, starts the transport and the tick timer. */
  async start(): Promise<void> {
    if (this.state !== "new")
      throw new CfnError("CFN_ERR_CLOSED", `raft host ${this.id} was already started`);
    this.state = "starting";
    const loaded = await this.store.load();
    const isEmpty = loaded.hardState.term === 0 && !loaded.snapshot && loaded.entries.length === 0;
    if (isEmpty && this.options.bootstrap) await this.bootstrap(loaded, this.options.bootstrap.voters);
    else this.restore(loaded);
    this.node = new RawNode({
      config: coreConfig(this.config, this.stateMachine.appliedIndex),
      storage: this.storage,
      random: this.options.random ?? Math.random,
    });
    this.applied = this.stateMachine.appliedIndex;
    const status = this.node.status();
    this.term = status.term;
    this.hostMetrics.term.set(this.term);
    for (const [peerId, address] of this.addresses) this.transport.addPeer(peerId, address);
    this.transport.onMessages((messages) => this.onPeerMessages(messages));
    this.transport.onPeerUnreachable((peerId) => {
      if (this.state === "running" || this.state === "stopping") this.node.reportUnreachable(peerId);
    });
    this.transport.onSnapshotStatus((peerId, snapshotStatus) => {
      if (this.state !== "running" && this.state !== "stopping") return;
      this.node.reportSnapshot(peerId, !snapshotStatus.failed);
      this.scheduleReady();
    });
    await this.transport.start();
    this.state = "running";
    this.tickTimer = setInterval(() => this.onTick(), this.config.tickIntervalMs);
    this.logger.info("raft host started", {
      id: this.id,
      term: this.term,
      applied: this.applied,
      lastIndex: status.lastIndex,
      voters: this.confState.voters,
      tickIntervalMs: this.config.tickIntervalMs,
      electionTimeoutTicks: this.config.electionTimeoutTicks,
      heartbeatTicks: this.config.heartbeatTicks,
    });
    this.scheduleReady();
  }

  /**
   * Graceful stop: hands leadership to the most caught-up voter (bounded by
   * stopTransferTimeoutMs), lets the Ready in flight finish, fails waiting calls with
   * CFN_ERR_CLOSED, then closes the transport and the store. Idempotent.
   */
  stop(): Promise<void> {
    this.stopped ??= this.stopOnce();
    return this.stopped;
  }

  private async stopOnce(): Promise<void> {
    if (this.state === "new") {
      this.state = "stopped";
      await this.transport.close();
      await this.store.close();
      return;
    }
    const wasRunning = this.state === "running";
    this.state = "stopping";
    if (wasRunning && this.role === "leader") {
      const target = this.bestTransferTarget();
      if (target) {
        try {
          await this.waitLeader(target, this.config.stopTransferTimeoutMs, () =>
            this.node.transferLeader(target),
          );
        } catch (error) {
          this.logger.warn("leadership transfer at stop did not finish", { target, error });
        }
      }
    }
    if (this.tickTimer) clearInterval(this.tickTimer);
    this.tickTimer = undefined;
    // From here on late peer messages and timers start no Ready round: a round started now
    // would save into a store about to close (and fail as if the disk had).
    if (this.state === "stopping") this.state = "closing";
    while (this.readyLoop) await this.readyLoop;
    this.failAllPending(new CfnError("CFN_ERR_CLOSED", `raft host ${this.id} stopped`));
    for (const cancel of [...this.leaderWaits]) cancel();
    await this.compactions;
    await this.transport.close();
    await this.store.close();
    this.state = "stopped";
    this.logger.info("raft host stopped", { id: this.id, applied: this.applied });
  }

  // ---- client API -------------------------------------------------------------------------------

  /**
   * Replicates `command` and resolves with the state machine's result once it is applied on
   * this node. Only the leader takes proposals: elsewhere it rejects with CFN_ERR_NOT_LEADER
   * (details.leader, details.leaderAddress). CFN_ERR_PROPOSAL_DROPPED: backpressure or a
   * leadership transfer; nothing was appended. CFN_ERR_TIMEOUT: outcome unknown (it may still
   * apply; retry with the same client request id so the state machine dedups it).
   */
  propose(command: Uint8Array): Promise<Result | undefined> {
    if (this.state !== "running") return Promise.reject(this.closedError());
    if (this.role !== "leader") {
      this.hostMetrics.proposals.inc({ outcome: "not_leader" });
      return Promise.reject(this.notLeaderError());
    }
    if (this.proposals.size >= this.config.pendingProposalsMax) {
      this.hostMetrics.proposals.inc({ outcome: "dropped" });
      return Promise.reject(
        new CfnError(
          "CFN_ERR_PROPOSAL_DROPPED",
          `raft host ${this.id}: ${this.proposals.size} proposals pending`,
          {
            pendingProposalsMax: this.config.pendingProposalsMax,
          },
        ),
      );
    }
    const sequence = this.nextSequence++;
    const promise = this.proposals.add(
      sequence,
      encodeEnvelope(this.incarnation, sequence, command),
      performance.now(),
    );
    this.scheduleReady();
    return promise;
  }

  /**
   * A linearizable read (ReadIndex): confirms leadership with a quorum, waits until this node
   * has applied up to the read index, then runs `query` against the state machine. Works on
   * followers too (the request is forwarded to the leader). Concurrent reads share one
   * ReadIndex round. CFN_ERR_NOT_LEADER when no leader is known; CFN_ERR_TIMEOUT.
   */
  read<T>(query: () => T): Promise<T> {
    if (this.state !== "running") return Promise.reject(this.closedError());
    if (this.leader === "") {
      this.hostMetrics.reads.inc({ outcome: "not_leader" });
      return Promise.reject(this.notLeaderError());
    }
    if (this.reads.size >= this.config.pendingReadsMax) {
      this.hostMetrics.reads.inc({ outcome: "dropped" });
      return Promise.reject(
        new CfnError("CFN_ERR_PROPOSAL_DROPPED", `raft host ${this.id}: ${this.reads.size} reads pending`, {
          pendingReadsMax: this.config.pendingReadsMax,
        }),
      );
    }
    const promise = this.reads.add(this.nextSequence++, query, performance.now());
    this.scheduleReady();
    return promise;
  }

  /** Asks the leader to hand leadership to `to`; resolves once `to` is the known leader. */
  transferLeadership(to: NodeId): Promise<void> {
    if (this.state !== "running") return Promise.reject(this.closedError());
    if (!this.confState.voters.includes(to)) {
      return Promise.reject(new CfnError("CFN_ERR_CONF_CHANGE", `${to} is not a voter`, { to }));
    }
    if (this.leader === to) return Promise.resolve();
    return this.waitLeader(to, this.config.proposalTimeoutMs, () => this.node.transferLeader(to));
  }

  /** Adds a voter; `address` is its transport URL, replicated in the change's context. */
  addMember(id: NodeId, address: string): Promise<ConfState> {
    return this.proposeMemberAdd(ConfChangeType.AddVoter, id, address);
  }

  /**
   * Adds a learner: it receives the log but does not vote, so it can catch up without weakening
   * the quorum. `address` is its transport URL, replicated in the change's context.
   */
  addLearner(id: NodeId, address: string): Promise<ConfState> {
    return this.proposeMemberAdd(ConfChangeType.AddLearner, id, address);
  }

  /**
   * Promotes a learner to voter, only once it has caught up (as etcd's server checks before
   * promoting): the leader must be replicating to it (progress state "replicate") and it must
   * trail the log by at most
   * learnerCatchUpLagEntriesMax entries, else CFN_ERR_LEARNER_NOT_CAUGHT_UP (retry later).
   * Not a learner → CFN_ERR_CONF_CHANGE.
   */
  promoteLearner(id: NodeId): Promise<ConfState> {
    if (this.state === "running" && this.role === "leader") {
      const failure = this.learnerNotReady(id);
      if (failure) return Promise.reject(failure);
    }
    return this.proposeMemberAdd(ConfChangeType.AddVoter, id, this.addresses.get(id));
  }

  /** Proposes adding `id` as a voter or learner; its address rides in the change's context. */
  private proposeMemberAdd(
    type: typeof ConfChangeType.AddVoter | typeof ConfChangeType.AddLearner,
    id: NodeId,
    address: string | undefined,
  ): Promise<ConfState> {
    return this.proposeConfChange(
      { changes: [{ type, nodeId: id, context: address }], transition: "auto" },
      (change) => change.changes.some((c) => c.nodeId === id && c.type === type),
      () => {
        if (id !== this.id && address !== undefined) {
          this.addresses.set(id, address);
          this.transport.addPeer(id, address);
        }
      },
    );
  }

  private learnerNotReady(id: NodeId): CfnError | undefined {
    const status = this.node.status();
    if (!status.config.learners.includes(id))
      return new CfnError("CFN_ERR_CONF_CHANGE", `${id} is not a learner`, { id });
    const progress = status.progress[id];
    const lagEntriesMax = this.config.learnerCatchUpLagEntriesMax;
    const lag = progress ? status.lastIndex - progress.match : status.lastIndex;
    // "replicate": the leader has had an append acknowledged and pipelines to it (an unreachable
    // or rejecting learner is back in "probe", one being sent a snapshot in "snapshot").
    if (progress?.state === "replicate" && lag <= lagEntriesMax) return undefined;
    return new CfnError(
      "CFN_ERR_LEARNER_NOT_CAUGHT_UP",
      `learner ${id} is not caught up: ${lag} entries behind (at most ${lagEntriesMax}), ` +
        `replication state ${progress?.state ?? "unknown"}`,
      { id, lag, lagEntriesMax, state: progress?.state },
    );
  }

  /** Removes a member (voter or learner). */
  removeMember(id: NodeId): Promise<ConfState> {
    return this.proposeConfChange(
      { changes: [{ type: ConfChangeType.RemoveNode, nodeId: id }], transition: "auto" },
      (change) => change.changes.some((c) => c.nodeId === id && c.type === ConfChangeType.RemoveNode),
    );
  }

  status(): RaftHostStatus {
    assert(this.node, "RaftHost.status() before start()");
    const raw: RaftStatus = this.node.status();
    const ids = [
      ...new Set([...raw.config.voters, ...raw.config.votersOutgoing, ...raw.config.learners]),
    ].sort();
    const members: MemberStatus[] = ids.map((id) => {
      const progress = raw.progress[id];
      const member: MemberStatus = {
        id,
        address: id === this.id ? undefined : this.addresses.get(id),
        voter: !raw.config.learners.includes(id),
      };
      if (progress) {
        member.match = progress.match;
        member.lag = Math.max(0, raw.lastIndex - progress.match);
        member.state = progress.state;
      }
      return member;
    });
    return {
      id: this.id,
      role: raw.role,
      term: raw.term,
      leader: raw.leader,
      commit: raw.commit,
      applied: this.applied,
      lastIndex: raw.lastIndex,
      firstIndex: raw.firstIndex,
      snapshotIndex: this.storage.snapshot().metadata.index,
      members,
    };
  }

  /** The known leader ("" when none) and its transport address when known. */
  leaderHint(): { leader: NodeId; address: string | undefined } {
    return { leader: this.leader, address: this.addresses.get(this.leader) };
  }

  isLeader(): boolean {
    return this.role === "leader";
  }

  /** Calls `handler` whenever the known leader or this node's role changes. Returns an unsubscribe. */
  onLeaderChange(handler: (change: LeaderChange) => void): () => void {
    this.leaderListeners.add(handler);
    return () => this.leaderListeners.delete(handler);
  }

  /** Calls `handler` when the host stops on an I/O failure it cannot recover from (a failed fsync). */
  onFatal(handler: (error: unknown) => void): () => void {
    this.fatalListeners.add(handler);
    return () => this.fatalListeners.delete(handler);
  }

  // ---- start-up ---------------------------------------------------------------------------------

  /**
   * A founder of a new cluster: a snapshot at index 1, term 1 holding the founders and the state
   * machine after one empty entry (so it has applied index 1 like the log), persisted before
   * anything else happens. Every founder writes identical bytes.
   */
  private async bootstrap(loaded: LoadedLog, voters: NodeId[]): Promise<void> {
    assert(
      voters.includes(this.id),
      `RaftHost bootstrap: ${this.id} is not among the voters ${voters.join(",")}`,
    );
    this.stateMachine.apply({ term: 1, index: 1, type: EntryType.Normal, data: new Uint8Array(0) });
    const conf: ConfState = {
      voters: [...voters].sort(),
      learners: [],
      votersOutgoing: [],
      learnersNext: [],
      autoLeave: false,
    };
    const snapshot: Snapshot = { metadata: { index: 1, term: 1, conf }, data: this.snapshotData() };
    const hardState = { term: 1, vote: "", commit: 1 };
    await this.store.save({ hardState, entries: [], snapshot });
    this.logger.info("bootstrapped a new cluster", { voters: conf.voters, clusterOf: loaded.meta.clusterId });
    this.storage = new MemoryStorage();
    this.storage.applySnapshot(snapshot);
    this.storage.setHardState(hardState);
    this.confState = conf;
  }

  /** A restarting node (or a joiner with an empty store): rebuild memory from disk. */
  private restore(loaded: LoadedLog): void {
    this.storage = new MemoryStorage();
    if (loaded.snapshot) {
      this.storage.applySnapshot(loaded.snapshot);
      this.installStateMachineSnapshot(loaded.snapshot);
    }
    this.storage.append(loaded.entries);
    // The stored commit index may trail the snapshot (commit-only hard states are not synced,
    // see handleReady); everything in the snapshot is committed.
    const snapshotIndex = loaded.snapshot?.metadata.index ?? 0;
    this.storage.setHardState({
      ...loaded.hardState,
      commit: Math.max(loaded.hardState.commit, snapshotIndex),
    });
    this.confState = this.storage.initialState().confState;
    // Members added after the snapshot: replay the conf changes of the log for their addresses.
    for (const entry of loaded.entries) {
      if (entry.type === EntryType.ConfChange) this.rememberAddresses(decodeConfChange(entry.data));
    }
  }

  private installStateMachineSnapshot(snapshot: Snapshot): void {
    const data = decodeHostSnapshot(snapshot.data);
    if (data.stateMachine.byteLength > 0) this.stateMachine.restore(data.stateMachine);
    this.rememberSnapshotAddresses(snapshot.metadata.conf, data.addresses);
    this.hostMetrics.snapshots.inc({ kind: "installed" });
  }

  /** The snapshot's data: the members' addresses as this node knows them, then the state machine. */
  private snapshotData(): Uint8Array {
    const addresses: Record<NodeId, string> = Object.fromEntries(this.addresses);
    const own = this.options.peers[this.id];
    if (own !== undefined) addresses[this.id] = own;
    return encodeHostSnapshot({ addresses, stateMachine: this.stateMachine.snapshot() });
  }

  /**
   * Addresses of members this node does not know yet (the conf change that carried them may be
   * compacted away). Known addresses stay: they come from this node's own config or from a
   * conf change it applied, and the snapshot's are only the taker's view.
   */
  private rememberSnapshotAddresses(conf: ConfState, addresses: Record<NodeId, string>): void {
    for (const id of new Set([...conf.voters, ...conf.learners, ...conf.votersOutgoing])) {
      const address = addresses[id];
      if (id === this.id || address === undefined || this.addresses.has(id)) continue;
      this.addresses.set(id, address);
      if (this.node) this.transport.addPeer(id, address);
    }
  }

  // ---- event sources ----------------------------------------------------------------------------

  private onTick(): void {
    if (this.state !== "running" && this.state !== "stopping") return;
    this.node.tick();
    this.sweepDeadlines();
    this.scheduleReady();
  }

  private onPeerMessages(messages: Message[]): void {
    if (this.state !== "running" && this.state !== "stopping") return;
    for (const message of messages) {
      try {
        this.node.step(decodeFromWire(message));
      } catch (error) {
        if (!isCfnError(error)) throw error;
        this.logger.warn("peer message refused", { from: message.from, type: message.type, error });
      }
    }
    this.scheduleReady();
  }

  /** Runs the Ready loop on the next turn of the event loop, so one turn's I/O is batched. */
  private scheduleReady(): void {
    if (this.readyScheduled || this.readyLoop) return;
    if (this.state !== "running" && this.state !== "stopping") return;
    this.readyScheduled = true;
    setImmediate(() => {
      this.readyScheduled = false;
      if (this.readyLoop) return;
      this.readyLoop = this.runReadyLoop().finally(() => {
        this.readyLoop = undefined;
      });
    });
  }

  private async runReadyLoop(): Promise<void> {
    try {
      for (;;) {
        if (this.state !== "running" && this.state !== "stopping") return;
        this.flushProposals();
        this.issueReadIndex();
        if (!this.node.hasReady()) return;
        const rd = this.node.ready();
        await this.handleReady(rd);
        this.node.advance();
      }
    } catch (error) {
      this.failFatally(error);
    }
  }

  // ---- the Ready ---------------------------------------------------------------------------------

  private async handleReady(rd: Ready): Promise<void> {
    if (rd.softState) this.onSoftState(rd.softState.leader, rd.softState.role);
    // The leader sends before its own fsync (Raft thesis §10.2.1; etcd's raft node does the
    // same): followers write in parallel with it, which takes one fsync off every commit. Safe
    // because the leader's own log counts toward a commit index that leaves this node only in
    // a later Ready — produced after this save resolves — and because it applies after it too.
    // Everyone else keeps the Ready contract: persist, then send.
    const sendBeforeSave = this.role === "leader";
    let afterSave = rd.messages;
    if (sendBeforeSave) {
      if (rd.messages.length > 0) this.sendMessages(rd.messages);
      afterSave = [];
    } else if (rd.mustSync && rd.messages.some(isHeartbeatResponse)) {
      // Heartbeat acks do not wait for this Ready's fsync: they promise nothing durable (a vote
      // or an entry is acked by VoteResp / AppResp, which do wait). Held back, they would reach
      // the leader only after a slow fsync — and a leader that hears no ack from a quorum for an
      // election timeout steps down (CheckQuorum): on a busy disk that was a spurious election.
      this.sendMessages(rd.messages.filter(isHeartbeatResponse));
      afterSave = rd.messages.filter((message) => !isHeartbeatResponse(message));
    }
    // A Ready that only moves the commit index (mustSync false) is not written at all: the
    // commit index is recovered from the leader after a restart, and skipping the write saves
    // an fsync on the leader's critical path between a quorum's acks and the apply. The next
    // synced save carries the latest hard state anyway.
    const readyStartedMs = performance.now();
    if (rd.mustSync) {
      const startedMs = performance.now();
      await this.store.save({ hardState: rd.hardState, entries: rd.entries, snapshot: rd.snapshot });
      this.hostMetrics.saveSeconds.observe((performance.now() - startedMs) / 1000);
      if (rd.entries.length > 0) this.hostMetrics.saveEntries.observe(rd.entries.length);
    }
    if (this.state !== "running" && this.state !== "stopping") return;
    if (rd.snapshot) {
      this.storage.applySnapshot(rd.snapshot);
      this.installStateMachineSnapshot(rd.snapshot);
      this.confState = rd.snapshot.metadata.conf;
      this.applied = rd.snapshot.metadata.index;
      this.logger.info("installed snapshot from leader", {
        index: this.applied,
        term: rd.snapshot.metadata.term,
      });
    }
    this.storage.append(rd.entries);
    if (rd.hardState) {
      this.storage.setHardState(rd.hardState);
      if (rd.hardState.term !== this.term) {
        this.term = rd.hardState.term;
        this.hostMetrics.term.set(this.term);
      }
      this.hostMetrics.commitIndex.set(rd.hardState.commit);
    }
    if (afterSave.length > 0) this.sendMessages(afterSave);
    if (this.traceReady) {
      this.logger.debug("ready", {
        entries: rd.entries.length,
        committed: rd.committedEntries.length,
        messages: rd.messages.length,
        saveMs: Math.round((performance.now() - readyStartedMs) * 10) / 10,
      });
    }
    if (rd.committedEntries.length > 0) this.applyEntries(rd.committedEntries);
    for (const readState of rd.readStates) this.reads.answered(readState.index, readState.requestContext);
    this.reads.serve(this.applied);
    this.maybeSnapshot();
  }

  private sendMessages(messages: Message[]): void {
    const wire = encodeForWire(messages, this.id);
    if (wire.length < messages.length) {
      this.logger.debug("relayed messages dropped", { dropped: messages.length - wire.length });
    }
    if (wire.length > 0) this.transport.send(wire);
  }

  private applyEntries(entries: Entry[]): void {
    const now = performance.now();
    for (const entry of entries) {
      if (entry.index <= this.stateMachine.appliedIndex) continue; // covered by an installed snapshot
      if (entry.type === EntryType.ConfChange) {
        this.applyConfChangeEntry(entry);
        continue;
      }
      const envelope = decodeEnvelope(entry.data);
      if (!envelope) {
        this.stateMachine.apply(entry);
        continue;
      }
      const result = this.stateMachine.apply({ ...entry, data: envelope.command });
      // Someone waits only for this incarnation's proposals (and not for timed-out ones).
      if (sameIncarnation(envelope.incarnation, this.incarnation))
        this.proposals.resolve(envelope.sequence, result, now);
    }
    this.applied = entries[entries.length - 1].index;
    this.hostMetrics.appliedIndex.set(this.applied);
    this.proposals.updateGauge();
  }

  private applyConfChangeEntry(entry: Entry): void {
    const change = decodeConfChange(entry.data);
    this.confState = this.node.applyConfChange(change);
    this.stateMachine.apply(entry);
    this.rememberAddresses(change);
    for (const single of change.changes) {
      if (single.type === ConfChangeType.RemoveNode && single.nodeId !== this.id) {
        this.addresses.delete(single.nodeId);
        this.transport.removePeer(single.nodeId);
      }
    }
    this.logger.info("membership changed", {
      index: entry.index,
      voters: this.confState.voters,
      learners: this.confState.learners,
    });
    const done = this.confChanges.filter((pending) => pending.matches(change));
    this.confChanges = this.confChanges.filter((pending) => !pending.matches(change));
    for (const pending of done) pending.resolve(this.confState);
  }

  /** Adds the addresses carried in a conf change's context to the transport. */
  private rememberAddresses(change: ConfChange): void {
    for (const single of change.changes) {
      if (single.type === ConfChangeType.RemoveNode || !single.context || single.nodeId === this.id) continue;
      this.addresses.set(single.nodeId, single.context);
      if (this.node) this.transport.addPeer(single.nodeId, single.context);
    }
  }

  private onSoftState(leader: NodeId, role: StateRole): void {
    const leaderChanged = leader !== this.leader;
    const roleChanged = role !== this.role;
    this.leader = leader;
    this.role = role;
    this.hostMetrics.isLeader.set(role === "leader" ? 1 : 0);
    // A follower whose election timer fired forgets the leader while it pre-votes; if the
    // pre-vote fails and the same leader carries on, that is not a leader change.
    if (leader !== "" && leader !== this.lastKnownLeader) {
      if (this.lastKnownLeader !== "") this.hostMetrics.leaderChanges.inc();
      this.lastKnownLeader = leader;
    }
    if (leaderChanged || roleChanged) {
      this.logger.info("leader change", { leader, role, term: this.node.status().term });
      const change: LeaderChange = { leader, role, term: this.node.status().term };
      for (const listener of this.leaderListeners) {
        try {
          listener(change);
        } catch (error) {
          this.logger.error("leader change listener failed", { error });
        }
      }
    }
  }

  /** Takes a state-machine snapshot and compacts the log every snapshotEntriesInterval entries. */
  private maybeSnapshot(): void {
    const snapshotIndex = this.storage.snapshot().metadata.index;
    if (this.applied - snapshotIndex < this.config.snapshotEntriesInterval) return;
    assert(
      this.stateMachine.appliedIndex === this.applied,
      "raft host: state machine out of step with the log",
    );
    const snapshot = this.storage.createSnapshot(this.applied, this.confState, this.snapshotData());
    const compactIndex = this.applied - this.config.compactionLagEntries;
    if (compactIndex >= this.storage.firstIndex()) this.storage.compact(compactIndex);
    this.hostMetrics.snapshots.inc({ kind: "taken" });
    this.logger.debug("snapshot taken", { index: this.applied, bytes: snapshot.data.byteLength });
    // Not awaited: the store serializes it with the saves, and the Ready loop need not wait.
    this.compactions = this.compactions
      .then(() => this.store.compact(snapshot))
      .catch((error) => {
        if (isCfnError(error, "CFN_ERR_COMPACTED")) return; // a newer snapshot arrived meanwhile
        this.failFatally(error);
      });
  }

  /**
   * Steps the queued proposals into the core as ONE Propose message: one append, one
   * replication message per follower and one ack per follower for the whole batch, instead of
   * one each per proposal (RawNode.propose takes a single entry). The core takes a batch
   * all-or-nothing; as step() does not throw for a dropped proposal, the log's last index tells.
   */
  private flushProposals(): void {
    const { entries, sequences } = this.proposals.takeQueued();
    if (entries.length === 0) return;
    let failure: CfnError | undefined;
    if (this.role !== "leader") {
      failure = this.notLeaderError();
    } else {
      const before = this.node.status().lastIndex;
      this.node.step(makeMessage({ type: MessageType.Propose, from: this.id, to: this.id, entries }));
      const appended = this.node.status().lastIndex - before;
      if (appended !== entries.length) {
        assert(
          appended === 0,
          `raft host: a batch of ${entries.length} proposals was appended partly (${appended})`,
        );
        failure = new CfnError(
          "CFN_ERR_PROPOSAL_DROPPED",
          "proposals dropped: leadership transfer under way, or uncommittedEntriesBytesMax reached",
        );
      }
    }
    if (!failure) return;
    this.proposals.reject(
      sequences,
      failure,
      failure.code === "CFN_ERR_NOT_LEADER" ? "not_leader" : "dropped",
    );
  }

  // ---- reads --------------------------------------------------------------------------------------

  /** Sends one ReadIndex request for every read that is waiting. */
  private issueReadIndex(): void {
    const ids = this.reads.takeWaiting();
    if (ids.length === 0) return;
    const context = encodeEnvelope(this.incarnation, ids[0], new Uint8Array(0));
    try {
      this.node.readIndex(context);
    } catch (error) {
      this.reads.fail(ids, error, "not_leader");
      return;
    }
    this.reads.sent(context, ids);
  }

  // ---- deadlines, errors ---------------------------------------------------------------------------

  private sweepDeadlines(): void {
    const now = performance.now();
    this.proposals.sweep(now);
    this.reads.sweep(now);
    if (this.confChanges.length > 0) {
      const expired = this.confChanges.filter((pending) => pending.deadlineMs <= now);
      this.confChanges = this.confChanges.filter((pending) => pending.deadlineMs > now);
      for (const pending of expired)
        pending.reject(new CfnError("CFN_ERR_TIMEOUT", "membership change not applied in time"));
    }
  }

  private proposeConfChange(
    change: ConfChange,
    matches: (change: ConfChange) => boolean,
    before?: () => void,
  ): Promise<ConfState> {
    if (this.state !== "running") return Promise.reject(this.closedError());
    if (this.role !== "leader") return Promise.reject(this.notLeaderError());
    before?.();
    try {
      this.node.proposeConfChange(change);
    } catch (error) {
      return Promise.reject(error);
    }
    const promise = new Promise<ConfState>((resolve, reject) => {
      this.confChanges.push({
        matches,
        resolve,
        reject,
        deadlineMs: performance.now() + this.config.proposalTimeoutMs,
      });
    });
    this.scheduleReady();
    return promise;
  }

  /** Runs `action` and resolves once `target` is the known leader, or rejects after `timeoutMs`. */
  private waitLeader(target: NodeId, timeoutMs: number, action: () => void): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const settle = (error?: unknown) => {
        clearTimeout(timer);
        unsubscribe();
        this.leaderWaits.delete(cancel);
        if (error === undefined) resolve();
        else reject(error);
      };
      const cancel = () => settle(new CfnError("CFN_ERR_CLOSED", `raft host ${this.id} stopped`));
      const timer = setTimeout(
        () =>
          settle(
            new CfnError("CFN_ERR_TIMEOUT", `leadership did not move to ${target} within ${timeoutMs} ms`, {
              target,
            }),
          ),
        timeoutMs,
      );
      const unsubscribe = this.onLeaderChange((change) => {
        if (change.leader === target) settle();
      });
      // A stopped host ends the wait: its timer kept a stopped node's process alive for up to
      // proposalTimeoutMs, and logged a late "transfer failed" after "node stopped".
      this.leaderWaits.add(cancel);
      try {
        action();
        this.scheduleReady();
      } catch (error) {
        settle(error);
      }
    });
  }

  private bestTransferTarget(): NodeId | undefined {
    const status = this.node.status();
    let best: NodeId | undefined;
    let bestMatch = -1;
    for (const id of status.config.voters) {
      if (id === this.id) continue;
      const progress = status.progress[id];
      if (progress?.recentActive && progress.match > bestMatch) {
        best = id;
        bestMatch = progress.match;
      }
    }
    return best;
  }

  private notLeaderError(): CfnError {
    const { leader, address } = this.leaderHint();
    return new CfnError(
      "CFN_ERR_NOT_LEADER",
      leader
        ? `node ${this.id} is not the leader; the leader is ${leader}`
        : `node ${this.id} is not the leader; no leader is known`,
      { leader: leader || undefined, leaderAddress: address },
    );
  }

  private closedError(): CfnError {
    return new CfnError("CFN_ERR_CLOSED", `raft host ${this.id} is ${this.state}`);
  }

  private failAllPending(error: unknown): void {
    this.proposals.failAll(error);
    this.reads.failAll(error);
    for (const pending of this.confChanges) pending.reject(error);
    this.confChanges = [];
  }

  /** A failed save or apply: the node cannot go on safely (like etcd, which panics). */
  private failFatally(error: unknown): void {
    if (this.state === "closing" || this.state === "stopped") {
      this.logger.warn("raft host error while closing ignored", { error });
      return;
    }
    if (this.state === "failed") return;
    this.state = "failed";
    this.logger.error("raft host failed; stopping", { error });
    if (this.tickTimer) clearInterval(this.tickTimer);
    this.tickTimer = undefined;
    this.failAllPending(
      new CfnError("CFN_ERR_STORAGE", `raft host ${this.id} failed: ${String(error)}`, { cause: error }),
    );
    for (const listener of this.fatalListeners) listener(error);
    if (this.fatalListeners.size === 0)
      setImmediate(() => {
        throw error;
      });
  }
}
