// Round tombstones in the replicated routing state: once a round is removed (`round.remove`), a
// `round.checkpoint` for it is refused on every replica alike (`round_removed`), so a stale writer
// — a coordinator resumed from an old state, a write in flight when the round ended — cannot
// bring a finished round back. Tombstones are bounded (removedRoundsMax, oldest dropped) and kept
// in the routing snapshot; snapshots written before they existed still load.

import { describe, expect, it } from "vitest";
import type { RoutingCommand } from "../../src/node/routing/commands.js";
import { encodeRoutingCommand } from "../../src/node/routing/commands.js";
import {
  applyRoutingCommand,
  DEFAULT_ROUTING_LIMITS,
  emptyRoutingState,
  ROUND_REMOVED,
  routingStateFromJson,
  routingStateToJson,
} from "../../src/node/routing/state.js";
import { RoutingStateMachine } from "../../src/node/routing/state-machine.js";
import { EntryType } from "../../src/raft/types.js";

const checkpoint = (round: string, name: string, data: unknown = {}, scope = "s"): RoutingCommand => ({
  op: "round.checkpoint",
  scope,
  round,
  name,
  data,
});
const remove = (round: string, scope = "s"): RoutingCommand => ({ op: "round.remove", scope, round });

describe("round tombstones in the routing state", () => {
  it("refuses a checkpoint for a removed round (round_removed), and only for that round", () => {
    const state = emptyRoutingState();
    let index = 0;
    expect(applyRoutingCommand(state, checkpoint("r1", "master"), ++index)).toEqual({ ok: true });
    expect(applyRoutingCommand(state, checkpoint("r1", "coordinator-s.a.lead"), ++index)).toEqual({
      ok: true,
    });
    expect(applyRoutingCommand(state, remove("r1"), ++index)).toEqual({ ok: true });
    expect(state.roundCheckpoints.size).toBe(0);
    // A stale coordinator's write after the removal: refused, nothing re-created.
    expect(applyRoutingCommand(state, checkpoint("r1", "coordinator-s.a.lead"), ++index)).toEqual({
      ok: false,
      error: ROUND_REMOVED,
    });
    expect(applyRoutingCommand(state, checkpoint("r1", "master"), ++index).error).toBe(ROUND_REMOVED);
    // Inside a batch too.
    const batch = applyRoutingCommand(
      state,
      { op: "batch", commands: [checkpoint("r1", "request"), checkpoint("r2", "request")] },
      ++index,
    );
    expect(batch.results?.map((result) => result.error ?? "ok")).toEqual([ROUND_REMOVED, "ok"]);
    expect([...state.roundCheckpoints.keys()]).toEqual(["s/r2/request"]);
    // The same round id in another scope (another swarm) is another round.
    expect(applyRoutingCommand(state, checkpoint("r1", "master", {}, "other"), ++index)).toEqual({
      ok: true,
    });
    // A repeated removal keeps the first tombstone (its index).
    applyRoutingCommand(state, remove("r1"), ++index);
    expect(state.removedRounds.get("s/r1")?.index).toBe(3);
  });

  it("keeps at most removedRoundsMax tombstones, dropping the oldest", () => {
    const limits = { ...DEFAULT_ROUTING_LIMITS, removedRoundsMax: 2 };
    const state = emptyRoutingState();
    let index = 0;
    for (const round of ["r1", "r2", "r3"]) {
      applyRoutingCommand(state, checkpoint(round, "master"), ++index, limits);
      applyRoutingCommand(state, remove(round), ++index, limits);
    }
    expect([...state.removedRounds.keys()]).toEqual(["s/r2", "s/r3"]);
    expect(applyRoutingCommand(state, checkpoint("r2", "master"), ++index, limits).error).toBe(ROUND_REMOVED);
    expect(applyRoutingCommand(state, checkpoint("r3", "master"), ++index, limits).error).toBe(ROUND_REMOVED);
    // The oldest one is forgotten: bounded memory is the price (documented).
    expect(applyRoutingCommand(state, checkpoint("r1", "master"), ++index, limits)).toEqual({ ok: true });
  });

  it("keeps tombstones (in order) through a snapshot round trip, and loads a snapshot without them", () => {
    const machine = new RoutingStateMachine({ removedRoundsMax: 3 });
    let index = 0;
    const apply = (command: RoutingCommand) =>
      machine.apply({ index: ++index, term: 1, type: EntryType.Normal, data: encodeRoutingCommand(command) });
    for (const round of ["r1", "r2", "r3", "r4"]) {
      apply(checkpoint(round, "master"));
      apply(remove(round));
    }
    apply(checkpoint("r5", "master"));
    const snapshot = machine.snapshot();
    const restored = new RoutingStateMachine({ removedRoundsMax: 3 });
    restored.restore(snapshot);
    expect([...restored.state.removedRounds.keys()]).toEqual(["s/r2", "s/r3", "s/r4"]);
    expect(restored.state.roundCheckpoints.has("s/r5/master")).toBe(true);
    // Replicas at the same index hold byte-identical snapshots.
    expect(new TextDecoder().decode(restored.snapshot())).toBe(new TextDecoder().decode(snapshot));
    // The restored replica refuses a removed round's checkpoint, and drops the oldest next.
    const next = (command: RoutingCommand) =>
      restored.apply({
        index: ++index,
        term: 1,
        type: EntryType.Normal,
        data: encodeRoutingCommand(command),
      });
    expect(next(checkpoint("r3", "coordinator-s.a.lead"))?.error).toBe(ROUND_REMOVED);
    next(remove("r5"));
    expect([...restored.state.removedRounds.keys()]).toEqual(["s/r3", "s/r4", "s/r5"]);

    // A snapshot of a version without tombstones (no field): loads, with none.
    const json = routingStateToJson(machine.state);
    delete json.removedRounds;
    const old = routingStateFromJson(JSON.parse(JSON.stringify(json)));
    expect(old.removedRounds.size).toBe(0);
    expect(old.roundCheckpoints.has("s/r5/master")).toBe(true);
  });
});
