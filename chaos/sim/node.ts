// One simulated cfn node: a RawNode over a MemoryStorage, the KV state machine, and the shell
// loop that honours the Ready contract. The MemoryStorage *is* the node's disk: what the shell
// wrote there survives a crash; the RawNode, the state machine, pending client requests and
// anything the core held but had not yet handed out in a Ready are lost.

import { isCfnError } from "../../src/errors.js";
import type { RaftConfig } from "../../src/raft/config.js";
import { decodeConfChange, RawNode } from "../../src/raft/index.js";
import { MemoryStorage } from "../../src/raft/storage.js";
import type { ConfChange, ConfState } from "../../src/raft/types.js";
import {
  type Entry,
  EntryType,
  type Message,
  type NodeId,
  type Ready,
  type Snapshot,
} from "../../src/raft/types.js";
import {
  decodeKvCommand,
  encodeKvCommand,
  type KvCommand,
  type KvResult,
  KvStateMachine,
} from "../../src/statemachine/kv.js";
import type { Prng } from "./prng.js";

/** Where a crash may strike inside the handling of one Ready. */
export type CrashPoint =
  /** Before anything of the Ready reached the disk: the whole Ready is lost. */
  | "before-persist"
  /** After the synced write, before any message left. */
  | "after-persist"
  /** After persisting and sending, before applying and advance(). */
  | "after-send";

/**
 * Deliberate shell bugs the simulator must catch (its tests prove the checks have teeth):
 * sending before the synced write, not persisting the vote, serving ReadIndex reads before the
 * read index is applied, and a disk that loses its last write on restart (no fsync).
 */
export type ShellFault = "send-before-persist" | "forget-vote" | "read-without-wait" | "lose-tail-on-restart";

/** What the node tells the cluster as it handles Readys. */
export interface NodeEvents {
  persisted(node: SimNode, ready: Ready): void;
  send(message: Message): void;
  applied(node: SimNode, entry: Entry, result: KvResult | undefined, proposedHere: boolean): void;
  restored(node: SimNode, snapshot: Snapshot): void;
  readServed(node: SimNode, clientId: string, requestId: number, value: string | null): void;
  snapshotTaken(node: SimNode, index: number, data: Uint8Array): void;
  /** A committed membership change was applied here; `conf` is the configuration after it. */
  confChanged(node: SimNode, change: ConfChange, conf: ConfState): void;
  /** The disk lost entries after `lastIndex` (only with the "lose-tail-on-restart" fault). */
  diskLost(node: SimNode, lastIndex: number): void;
}

/** Snapshot and compaction policy of the simulated shell. */
export interface NodeSnapshotPolicy {
  /** Take a state-machine snapshot once this many entries were applied since the last; 0 = never. */
  everyEntries: number;
  /** Entries kept in the log behind the snapshot (so slow followers can catch up without one). */
  keepEntries: number;
}

interface PendingRead {
  clientId: string;
  requestId: number;
  key: string;
}

export class SimNode {
  /** The disk. Survives crashes. */
  private disk = new MemoryStorage();
  private raft: RawNode | undefined;
  private kv = new KvStateMachine();
  /** The configuration as of the applied index (what a snapshot taken now must record). */
  private confState: ConfState | undefined;
  /** Proposals accepted here whose result the client waits for ("clientId:requestId"). */
  private proposals = new Set<string>();
  /** ReadIndex requests by context, then reads whose index is known, waiting for apply. */
  private readsByContext = new Map<string, PendingRead>();
  private readsWaiting: { index: number; read: PendingRead }[] = [];
  /** A crash scheduled inside the next Ready, or undefined. */
  crashAt: CrashPoint | undefined;
  /** Virtual ms between this node's ticks (slightly different per node: clocks drift). */
  readonly tickIntervalMs: number;
  /** Offset of this node's ticks within the interval. */
  tickPhaseMs: number;
  /**
   * Paused (a stalled process: GC, swap, a blocked event loop) until this virtual ms: no ticks,
   * no message handling, no Readys. 0 when running.
   */
  pausedUntil = 0;
  /** Number of starts after the first. */
  restarts = -1;
  /** A deliberately broken shell, for the simulator's own tests; undefined in real runs. */
  shellFault: ShellFault | undefined;

  constructor(
    readonly id: NodeId,
    private readonly configFor: () => Partial<RaftConfig> & { id: NodeId },
    private readonly random: Prng,
    private readonly events: NodeEvents,
    private readonly snapshotPolicy: NodeSnapshotPolicy,
    tickIntervalMs: number,
  ) {
    this.tickIntervalMs = tickIntervalMs;
    this.tickPhaseMs = random.int(tickIntervalMs);
  }

  get up(): boolean {
    return this.raft !== undefined;
  }

  get appliedIndex(): number {
    return this.kv.appliedIndex;
  }

  /** The state machine's serialized state (for convergence checks). */
  stateMachineSnapshot(): Uint8Array {
    return this.kv.snapshot();
  }

  /** Writes the initial configuration to disk, as `cfn init` would. */
  bootstrap(voters: readonly NodeId[]): void {
    const kv = new KvStateMachine();
    // The bootstrap snapshot sits at index 1, so the state machine must be at 1 as well.
    kv.apply({ term: 1, index: 1, type: EntryType.Normal, data: new Uint8Array(0) });
    this.storage.applySnapshot({
      metadata: {
        index: 1,
        term: 1,
        conf: { voters: [...voters], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false },
      },
      data: kv.snapshot(),
    });
    // Like MemoryStorage.bootstrap: the founders' configuration counts as committed.
    this.storage.setHardState({ term: 1, vote: "", commit: 1 });
  }

  /** Starts (or restarts) from what is on disk. */
  start(): void {
    if (this.shellFault === "lose-tail-on-restart" && this.restarts > 0) this.loseLastEntry();
    this.restarts++;
    const snapshot = this.storage.snapshot();
    this.kv = new KvStateMachine();
    if (snapshot.metadata.index > 0) this.kv.restore(snapshot.data);
    this.confState = snapshot.metadata.index > 0 ? snapshot.metadata.conf : undefined;
    this.raft = new RawNode({
      config: { ...this.configFor(), applied: this.kv.appliedIndex },
      storage: this.storage,
      random: () => this.random.float(),
    });
  }

  /** The broken disk of "lose-tail-on-restart": the last appended entry was never synced. */
  private loseLastEntry(): void {
    const last = this.storage.lastIndex();
    const hardState = this.storage.initialState().hardState;
    if (last <= this.storage.firstIndex() || last <= this.storage.snapshot().metadata.index + 1) return;
    const kept = this.storage.entries(this.storage.firstIndex(), last, Number.MAX_SAFE_INTEGER);
    const snapshot = this.storage.snapshot();
    const disk = new MemoryStorage();
    if (snapshot.metadata.index > 0) disk.applySnapshot(snapshot);
    disk.append(kept);
    disk.setHardState({ ...hardState, commit: Math.min(hardState.commit, last - 1) });
    this.disk = disk;
    this.events.diskLost(this, last - 1);
  }

  /** The node's disk. */
  get storage(): MemoryStorage {
    return this.disk;
  }

  /** Loses everything that is not on disk. */
  crash(): void {
    this.raft = undefined;
    this.pausedUntil = 0;
    this.proposals.clear();
    this.readsByContext.clear();
    this.readsWaiting = [];
    this.crashAt = undefined;
  }

  /** Role and term, for the election-safety check; undefined when down. */
  status(): { term: number; isLeader: boolean; leader: NodeId; commit: number } | undefined {
    if (this.raft === undefined) return undefined;
    const s = this.raft.status();
    return { term: s.term, isLeader: s.role === "leader", leader: s.leader, commit: s.commit };
  }

  /** The leader's view of its peers (match/next/state), for liveness reports. */
  progressReport(): string {
    const status = this.raft?.status();
    if (status === undefined || status.role !== "leader") return "";
    return Object.entries(status.progress)
      .map(
        ([id, p]) =>
          `${id}:${p.state} match=${p.match} next=${p.next}${p.paused ? " paused" : ""}${p.pendingSnapshot ? ` snap=${p.pendingSnapshot}` : ""}${p.recentActive ? "" : " inactive"} inflight=${p.inflightMsgs}`,
      )
      .join(", ");
  }

  /** Last index of the node's log (on disk once its Readys are handled). */
  lastIndex(): number {
    return this.raft?.status().lastIndex ?? this.storage.lastIndex();
  }

  tick(): void {
    this.raft?.tick();
  }

  /** Delivers a message from the network. */
  deliver(message: Message): void {
    if (this.raft === undefined) return;
    try {
      this.raft.step(message);
    } catch (error) {
      // A forwarded proposal or read the leader cannot take is dropped, as a real shell would;
      // the client times out and retries. Anything else is a bug and propagates.
      if (isCfnError(error, "CFN_ERR_PROPOSAL_DROPPED") || isCfnError(error, "CFN_ERR_NOT_LEADER")) return;
      if (isCfnError(error, "CFN_ERR_CONF_CHANGE")) return;
      throw error;
    }
  }

  /** A local report from the transport: a message to `peer` could not be delivered. */
  reportUnreachable(peer: NodeId): void {
    this.raft?.reportUnreachable(peer);
  }

  /** A local report from the transport: how sending a snapshot to `peer` ended. */
  reportSnapshot(peer: NodeId, ok: boolean): void {
    this.raft?.reportSnapshot(peer, ok);
  }

  /** Proposes a membership change (on the leader); false when refused. */
  proposeConfChange(change: ConfChange): boolean {
    if (this.raft === undefined) return false;
    try {
      this.raft.proposeConfChange(change);
    } catch (error) {
      if (isCfnError(error, "CFN_ERR_PROPOSAL_DROPPED") || isCfnError(error, "CFN_ERR_CONF_CHANGE"))
        return false;
      throw error;
    }
    return true;
  }

  /** Asks for leadership to move to `to`. */
  transferLeader(to: NodeId): void {
    this.raft?.transferLeader(to);
  }

  /** The configuration this node's Raft currently uses, or undefined when down. */
  configuration(): ConfState | undefined {
    return this.raft?.status().config;
  }

  /** A client proposes a command here; false when the node is down or refuses at once. */
  propose(command: KvCommand): boolean {
    if (this.raft === undefined) return false;
    try {
      this.raft.propose(encodeKvCommand(command));
    } catch (error) {
      if (isCfnError(error, "CFN_ERR_PROPOSAL_DROPPED") || isCfnError(error, "CFN_ERR_NOT_LEADER"))
        return false;
      throw error;
    }
    this.proposals.add(`${command.clientId}:${command.requestId}`);
    return true;
  }

  /** A client starts a ReadIndex read here. */
  read(clientId: string, requestId: number, attempt: number, key: string): boolean {
    if (this.raft === undefined) return false;
    const context = `${clientId}:${requestId}:${attempt}:${this.id}`;
    try {
      this.raft.readIndex(new TextEncoder().encode(context));
    } catch (error) {
      if (isCfnError(error, "CFN_ERR_PROPOSAL_DROPPED") || isCfnError(error, "CFN_ERR_NOT_LEADER"))
        return false;
      throw error;
    }
    this.readsByContext.set(context, { clientId, requestId, key });
    return true;
  }

  hasReady(): boolean {
    return this.raft?.hasReady() ?? false;
  }

  /**
   * Handles one Ready by the contract: persist (one synced write), send, apply, advance. A
   * scheduled crash strikes at its point and the rest never happens. Returns false if it crashed.
   */
  handleReady(): boolean {
    const raft = this.raft;
    if (raft === undefined) return false;
    const ready = raft.ready();
    if (this.crashAt === "before-persist") {
      this.crash();
      return false;
    }

    if (this.shellFault === "send-before-persist") {
      // Deliberately broken shell (for the simulator's own tests): messages leave first.
      for (const message of ready.messages) this.events.send(message);
      if (this.crashAt === "after-send" || this.crashAt === "after-persist") {
        this.crash();
        return false;
      }
      this.persist(ready);
    } else {
      // 1. Persist: one synced batch.
      this.persist(ready);
      if (this.crashAt === "after-persist") {
        this.crash();
        return false;
      }
      // 2. Send.
      for (const message of ready.messages) this.events.send(message);
      if (this.crashAt === "after-send") {
        this.crash();
        return false;
      }
    }

    // 3. Apply.
    if (ready.snapshot !== undefined && ready.snapshot.metadata.index > 0) {
      this.kv.restore(ready.snapshot.data);
      this.confState = ready.snapshot.metadata.conf;
      this.events.restored(this, ready.snapshot);
    }
    for (const entry of ready.committedEntries) this.applyEntry(raft, entry);
    for (const readState of ready.readStates) {
      const context = new TextDecoder().decode(readState.requestContext);
      const read = this.readsByContext.get(context);
      if (read === undefined) continue; // another node's, or from before a crash
      this.readsByContext.delete(context);
      this.readsWaiting.push({ index: readState.index, read });
    }
    this.serveReads();

    // 4. Advance.
    raft.advance();
    this.maybeSnapshot();
    return true;
  }

  /** MemoryStorage is the disk; these writes are one atomic batch. */
  private persist(ready: Ready): void {
    if (ready.snapshot !== undefined && ready.snapshot.metadata.index > 0)
      this.storage.applySnapshot(ready.snapshot);
    if (ready.entries.length > 0) this.storage.append(ready.entries);
    if (ready.hardState !== undefined) {
      const hardState =
        this.shellFault === "forget-vote" ? { ...ready.hardState, vote: "" } : ready.hardState;
      this.storage.setHardState(hardState);
    }
    // Report what the disk now holds, not what the Ready asked for.
    const stored = ready.hardState === undefined ? undefined : this.storage.initialState().hardState;
    this.events.persisted(this, { ...ready, ...(stored === undefined ? {} : { hardState: stored }) });
  }

  private applyEntry(raft: RawNode, entry: Entry): void {
    if (entry.index <= this.kv.appliedIndex) return; // covered by a snapshot restored just now
    if (entry.type === EntryType.ConfChange) {
      const change = decodeConfChange(entry.data);
      this.confState = raft.applyConfChange(change);
      this.kv.apply(entry);
      this.events.applied(this, entry, undefined, false);
      this.events.confChanged(this, change, this.confState);
      return;
    }
    const result = this.kv.apply(entry);
    let proposedHere = false;
    if (entry.data.length > 0) {
      const command = decodeKvCommand(entry.data);
      if (command !== undefined) {
        const key = `${command.clientId}:${command.requestId}`;
        proposedHere = this.proposals.delete(key);
      }
    }
    this.events.applied(this, entry, result, proposedHere);
  }

  private serveReads(): void {
    if (this.readsWaiting.length === 0) return;
    const still: { index: number; read: PendingRead }[] = [];
    for (const waiting of this.readsWaiting) {
      if (waiting.index > this.kv.appliedIndex && this.shellFault !== "read-without-wait") {
        still.push(waiting);
        continue;
      }
      const { clientId, requestId, key } = waiting.read;
      this.events.readServed(this, clientId, requestId, this.kv.read(key));
    }
    this.readsWaiting = still;
  }

  private maybeSnapshot(): void {
    const policy = this.snapshotPolicy;
    if (policy.everyEntries === 0) return;
    const applied = this.kv.appliedIndex;
    const snapshotIndex = this.storage.snapshot().metadata.index;
    if (applied - snapshotIndex < policy.everyEntries) return;
    // Snapshot only what is on disk: the storage must hold the entry at `applied`.
    if (applied > this.storage.lastIndex()) return;
    const data = this.kv.snapshot();
    this.storage.createSnapshot(applied, this.confState, data);
    this.events.snapshotTaken(this, applied, data);
    const compactTo = applied - policy.keepEntries;
    if (compactTo >= this.storage.firstIndex()) this.storage.compact(compactTo);
  }
}
