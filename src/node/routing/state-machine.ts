// The routing StateMachine (src/statemachine/types.ts port) fed by the RaftHost: decodes each
// committed entry into a RoutingCommand and applies it to the RoutingState. Membership changes
// of the Raft group (ConfChange entries) are mirrored into the member table so that a node added
// with `addMember` is routable before it announces its API URL. Deterministic: the snapshot is
// canonical JSON, so two replicas at the same index hold byte-identical snapshots.

import { decodeConfChange } from "../../raft/confchange.js";
import { ConfChangeType, type Entry, EntryType } from "../../raft/types.js";
import type { StateMachine } from "../../statemachine/types.js";
import { decodeRoutingCommand, type RoutingCommand, type RoutingResult } from "./commands.js";
import {
  applyRoutingCommand,
  DEFAULT_ROUTING_LIMITS,
  emptyRoutingState,
  type RoutingLimits,
  type RoutingState,
  routingStateFromJson,
  routingStateToJson,
} from "./state.js";

/** What listeners hear after each applied command (for side effects outside the state). */
export interface AppliedCommand {
  index: number;
  command: RoutingCommand;
  result: RoutingResult;
}

const SNAPSHOT_VERSION = 1;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class RoutingStateMachine implements StateMachine<RoutingResult> {
  private applied = 0;
  private current: RoutingState = emptyRoutingState();
  private readonly limits: RoutingLimits;
  private readonly appliedListeners = new Set<(applied: AppliedCommand) => void>();
  private readonly restoreListeners = new Set<() => void>();

  constructor(limits: Partial<RoutingLimits> = {}) {
    this.limits = { ...DEFAULT_ROUTING_LIMITS, ...limits };
  }

  get appliedIndex(): number {
    return this.applied;
  }

  /** The live state. Read it; never mutate it outside apply. */
  get state(): RoutingState {
    return this.current;
  }

  apply(entry: Entry): RoutingResult | undefined {
    if (entry.index !== this.applied + 1) {
      throw new Error(`invariant violated: routing apply of index ${entry.index} after ${this.applied}`);
    }
    this.applied = entry.index;
    if (entry.type === EntryType.ConfChange) {
      this.applyConfChange(entry);
      return undefined;
    }
    if (entry.data.byteLength === 0) return undefined;
    const command = decodeRoutingCommand(entry.data);
    if (!command) return { ok: false, error: "malformed" };
    const result = applyRoutingCommand(this.current, command, entry.index, this.limits);
    for (const listener of this.appliedListeners) listener({ index: entry.index, command, result });
    return result;
  }

  snapshot(): Uint8Array {
    return encoder.encode(
      JSON.stringify({ v: SNAPSHOT_VERSION, applied: this.applied, state: routingStateToJson(this.current) }),
    );
  }

  restore(data: Uint8Array): void {
    const parsed = JSON.parse(decoder.decode(data)) as {
      v: number;
      applied: number;
      state: Record<string, unknown>;
    };
    if (parsed.v !== SNAPSHOT_VERSION)
      throw new Error(`invariant violated: routing snapshot version ${String(parsed.v)}`);
    this.applied = parsed.applied;
    this.current = routingStateFromJson(parsed.state);
    for (const listener of this.restoreListeners) listener();
  }

  /** Side effects of applied commands (notifications, metrics); listeners must not throw. */
  onApplied(listener: (applied: AppliedCommand) => void): () => void {
    this.appliedListeners.add(listener);
    return () => this.appliedListeners.delete(listener);
  }

  /** Called after a snapshot replaced the whole state. */
  onRestored(listener: () => void): () => void {
    this.restoreListeners.add(listener);
    return () => this.restoreListeners.delete(listener);
  }

  private applyConfChange(entry: Entry): void {
    let change: ReturnType<typeof decodeConfChange>;
    try {
      change = decodeConfChange(entry.data);
    } catch {
      return;
    }
    for (const single of change.changes) {
      let command: RoutingCommand | undefined;
      if (single.type === ConfChangeType.RemoveNode) {
        if (this.current.members.has(single.nodeId)) command = { op: "member.remove", id: single.nodeId };
      } else if (!this.current.members.has(single.nodeId) && single.context) {
        // The API URL is announced later by the member itself ("" until then).
        command = { op: "member.upsert", id: single.nodeId, peerUrl: single.context, apiUrl: "" };
      }
      if (!command) continue;
      const result = applyRoutingCommand(this.current, command, entry.index, this.limits);
      for (const listener of this.appliedListeners) listener({ index: entry.index, command, result });
    }
  }
}
