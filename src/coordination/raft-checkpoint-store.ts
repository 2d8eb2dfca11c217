// Checkpoints of round state replicated through the cluster's Raft log (routing-state commands
// `round.checkpoint` / `round.remove`), so that a master or coordinator that moves to another node
// resumes from the same records. Only state changes go through the log: a write replaces the
// record's pending value, and at most one proposal per record is in flight — a coordinator that
// checkpoints after every batch costs one log entry per proposal round trip, not one per message.
//
// Reads see this process's own writes at once (read-your-writes) and otherwise the replicated
// state. A write is durable once its proposal commits; `flush()` waits for that. A crash before
// commit loses at most the latest progress of that record: the protocol tolerates it (a resumed
// coordinator re-runs tasks whose outcome it had not checkpointed, the master drops duplicates).
//
// A removed round stays removed: the routing state keeps its tombstone and refuses a later
// `round.checkpoint` for it (`round_removed`). That refusal is final — no retry, the round's other
// pending writes are dropped, later writes are ignored — and `isRemoved` / `committed` tell the
// master or coordinator still running it, which abandons it (a stale writer cannot bring it back).

import { CfnError } from "../errors.js";
import type { RoutingCommand, RoutingResult } from "../node/routing/commands.js";
import {
  ROUND_REMOVED,
  type RoutingState,
  removedRoundKey,
  roundCheckpointKey,
} from "../node/routing/state.js";
import { type Logger, silentLogger } from "../obs/logger.js";
import type { CheckpointCommit, CheckpointStore } from "./checkpoint.js";

/** What the store needs from a cluster node: the replicated state and a way to change it. */
export interface ReplicatedRoutingLog {
  readonly routingState: RoutingState;
  propose(command: RoutingCommand): Promise<RoutingResult>;
}

export interface RaftCheckpointStoreOptions {
  log: ReplicatedRoutingLog;
  /** Scope of the records (a swarm name): stores of different swarms never see each other's. */
  scope: string;
  logger?: Logger;
  /** Records with a write not yet committed; a write beyond it throws CFN_ERR_UNAVAILABLE. Default 1,000. */
  pendingRecordsMax?: number;
  /** Wait before retrying a failed proposal, ms. Default 100. */
  retryDelayMs?: number;
}

const REMOVED = Symbol("removed");
/** Rounds remembered as refused (`round_removed`) before the local state shows their tombstone. */
export const REFUSED_ROUNDS_MAX = 1_000;

interface PendingRecord {
  round: string;
  name: string;
  /** Latest value written locally and not yet proposed (REMOVED: a remove is pending). */
  value: unknown;
  /** The value has changed since the proposal in flight was made. */
  dirty: boolean;
  inFlight: boolean;
  /** Callers of committed(): resolved by the next answer of the log to a proposal of this record. */
  waiters: Array<(outcome: CheckpointCommit) => void>;
}

export class RaftCheckpointStore implements CheckpointStore {
  readonly scope: string;
  private readonly log: ReplicatedRoutingLog;
  private readonly logger: Logger;
  private readonly pendingRecordsMax: number;
  private readonly retryDelayMs: number;
  private readonly pending = new Map<string, PendingRecord>();
  private readonly idleWaiters: Array<() => void> = [];
  /** Rounds whose write the log refused as removed (bounded; the tombstone is the lasting record). */
  private readonly refusedRounds = new Set<string>();
  private closed = false;

  constructor(options: RaftCheckpointStoreOptions) {
    this.log = options.log;
    this.scope = options.scope;
    this.logger = (options.logger ?? silentLogger).child("checkpoints");
    this.pendingRecordsMax = options.pendingRecordsMax ?? 1_000;
    this.retryDelayMs = options.retryDelayMs ?? 100;
  }

  write(roundId: string, name: string, value: unknown): void {
    // A JSON round trip: the record must not change under the caller's later mutations.
    this.set(roundId, name, JSON.parse(JSON.stringify(value)));
  }

  read<T>(roundId: string, name: string): T | undefined {
    if (this.isRemoved(roundId)) return undefined;
    const key = roundCheckpointKey(this.scope, roundId, name);
    const pending = this.pending.get(key);
    if (pending) return pending.value === REMOVED ? undefined : (pending.value as T);
    return this.log.routingState.roundCheckpoints.get(key)?.data as T | undefined;
  }

  rounds(): string[] {
    const rounds = new Set<string>();
    for (const record of this.log.routingState.roundCheckpoints.values())
      if (record.scope === this.scope && this.read(record.round, record.name) !== undefined)
        rounds.add(record.round);
    for (const record of this.pending.values())
      if (record.value !== REMOVED && !this.isRemoved(record.round)) rounds.add(record.round);
    return [...rounds].sort();
  }

  names(roundId: string): string[] {
    const names = new Set<string>();
    for (const record of this.log.routingState.roundCheckpoints.values())
      if (record.scope === this.scope && record.round === roundId) names.add(record.name);
    for (const record of this.pending.values()) if (record.round === roundId) names.add(record.name);
    return [...names].filter((name) => this.read(roundId, name) !== undefined).sort();
  }

  has(roundId: string): boolean {
    return this.names(roundId).length > 0;
  }

  /** The round was removed: its tombstone is in the replicated state, or the log refused a write. */
  isRemoved(roundId: string): boolean {
    return (
      this.refusedRounds.has(roundId) ||
      this.log.routingState.removedRounds.has(removedRoundKey(this.scope, roundId))
    );
  }

  /**
   * Resolves with the log's next answer to a write of the record ("committed", "removed",
   * "rejected"), or "closed". Without a write pending: "removed" for a removed round, else
   * "committed" (what there is was committed).
   */
  committed(roundId: string, name: string): Promise<CheckpointCommit> {
    if (this.closed) return Promise.resolve("closed");
    if (this.isRemoved(roundId)) return Promise.resolve("removed");
    const record = this.pending.get(roundCheckpointKey(this.scope, roundId, name));
    if (!record) return Promise.resolve("committed");
    return new Promise((resolve) => record.waiters.push(resolve));
  }

  /** Removes every record of the round (one `round.remove` command). */
  remove(roundId: string): void {
    for (const name of this.names(roundId)) this.set(roundId, name, REMOVED);
  }

  /** Resolves once every write made so far is committed (or the store is closed). */
  flush(): Promise<void> {
    if (this.pending.size === 0 || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops proposing; writes not yet committed are dropped (the node is going away). */
  close(): void {
    this.closed = true;
    for (const record of this.pending.values()) settle(record, "closed");
    this.pending.clear();
    for (const waiter of this.idleWaiters.splice(0)) waiter();
  }

  get pendingRecords(): number {
    return this.pending.size;
  }

  private set(round: string, name: string, value: unknown): void {
    if (this.closed) throw new CfnError("CFN_ERR_CLOSED", "the checkpoint store is closed");
    // Final: whoever still writes a removed round (a stale coordinator) must not bring it back,
    // and the log would refuse it anyway. Its writer learns it from isRemoved / committed.
    if (this.isRemoved(round)) return;
    const key = roundCheckpointKey(this.scope, round, name);
    let record = this.pending.get(key);
    if (!record) {
      if (this.pending.size >= this.pendingRecordsMax)
        throw new CfnError(
          "CFN_ERR_UNAVAILABLE",
          `more than ${this.pendingRecordsMax} checkpoint records wait for the Raft log (pendingRecordsMax)`,
        );
      record = { round, name, value, dirty: true, inFlight: false, waiters: [] };
      this.pending.set(key, record);
    } else {
      record.value = value;
      record.dirty = true;
    }
    if (!record.inFlight) void this.propose(key, record);
  }

  private async propose(key: string, record: PendingRecord): Promise<void> {
    record.inFlight = true;
    while (record.dirty && !this.closed) {
      record.dirty = false;
      const value = record.value;
      const command: RoutingCommand =
        value === REMOVED
          ? { op: "round.remove", scope: this.scope, round: record.round }
          : {
              op: "round.checkpoint",
              scope: this.scope,
              round: record.round,
              name: record.name,
              data: value,
            };
      try {
        const result = await this.log.propose(command);
        if (!result.ok && result.error === ROUND_REMOVED) {
          this.markRemoved(record.round);
          break;
        }
        settle(record, result.ok ? "committed" : "rejected");
        if (!result.ok) {
          // Over a limit on every replica alike: retrying cannot help. Say so; the round goes on
          // with the last committed checkpoint (a resume repeats the work since then).
          this.logger.error("checkpoint rejected by the routing state", {
            round: record.round,
            name: record.name,
            error: result.error,
          });
        }
      } catch (error) {
        this.logger.debug("checkpoint proposal failed; retrying", { round: record.round, error });
        record.dirty = true;
        await new Promise((resolve) => setTimeout(resolve, this.retryDelayMs));
      }
    }
    record.inFlight = false;
    if (this.pending.get(key) === record && !record.dirty) this.pending.delete(key);
    if (this.pending.size === 0) for (const waiter of this.idleWaiters.splice(0)) waiter();
  }

  /**
   * The log refused a write because the round was removed: final. The round's pending writes are
   * dropped (none is retried), later ones ignored, and its writers told ("removed").
   */
  private markRemoved(round: string): void {
    if (!this.refusedRounds.has(round)) {
      this.logger.info("round removed from the replicated state; its checkpoints are no longer written", {
        scope: this.scope,
        round,
      });
      this.refusedRounds.add(round);
      for (const oldest of this.refusedRounds) {
        if (this.refusedRounds.size <= REFUSED_ROUNDS_MAX) break;
        this.refusedRounds.delete(oldest);
      }
    }
    for (const [key, record] of this.pending) {
      if (record.round !== round) continue;
      record.dirty = false;
      settle(record, "removed");
      this.pending.delete(key);
    }
  }
}

function settle(record: PendingRecord, outcome: CheckpointCommit): void {
  for (const waiter of record.waiters.splice(0)) waiter(outcome);
}
