// The routing state machine and the master coordinator's planning functions: pure, no I/O.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  decodeRoutingCommand,
  encodeRoutingCommand,
  planAgentLiveness,
  planMemberStates,
  planTeamAssignments,
  type RoutingCommand,
  RoutingStateMachine,
} from "../../src/node/routing/index.js";
import { encodeConfChange } from "../../src/raft/index.js";
import { ConfChangeType, type Entry, EntryType } from "../../src/raft/types.js";

function entry(index: number, command: RoutingCommand | Uint8Array): Entry {
  const data = command instanceof Uint8Array ? command : encodeRoutingCommand(command);
  return { term: 1, index, type: EntryType.Normal, data };
}

function machineWith(commands: RoutingCommand[]): RoutingStateMachine {
  const machine = new RoutingStateMachine();
  commands.forEach((command, i) => {
    machine.apply(entry(i + 1, command));
  });
  return machine;
}

const threeMembers: RoutingCommand[] = ["n1", "n2", "n3"].map((id, i) => ({
  op: "member.upsert",
  id,
  peerUrl: `ws://127.0.0.1:${7101 + i}`,
  apiUrl: `http://127.0.0.1:${7201 + i}`,
}));

describe("routing state machine", () => {
  it("registers agents on members and creates their teams", () => {
    const machine = machineWith([
      ...threeMembers,
      { op: "agent.register", agent: "w1", node: "n2", team: "alpha" },
      { op: "agent.register", agent: "w2", node: "n3", team: "alpha" },
    ]);
    expect(machine.state.agents.get("w1")).toMatchObject({ node: "n2", team: "alpha", up: true });
    expect(machine.state.teams.get("alpha")).toMatchObject({ coordinator: null, epoch: 0 });
    expect(machine.appliedIndex).toBe(5);
  });

  it("refuses an agent on an unknown node, identically on every replica", () => {
    const machine = machineWith(threeMembers);
    const result = machine.apply(entry(4, { op: "agent.register", agent: "w1", node: "n9", team: null }));
    expect(result).toEqual({ ok: false, error: "unknown_member" });
    expect(machine.state.agents.size).toBe(0);
  });

  it("returns malformed for bytes that are not a command, and still advances", () => {
    const machine = new RoutingStateMachine();
    expect(machine.apply(entry(1, new TextEncoder().encode("{nope")))).toEqual({
      ok: false,
      error: "malformed",
    });
    expect(
      machine.apply(entry(2, new TextEncoder().encode('{"op":"agent.register","agent":"a b"}'))),
    ).toEqual({
      ok: false,
      error: "malformed",
    });
    expect(machine.appliedIndex).toBe(2);
  });

  it("only the owner node can mark its agent down", () => {
    const machine = machineWith([
      ...threeMembers,
      { op: "agent.register", agent: "w1", node: "n2", team: null },
    ]);
    expect(machine.apply(entry(5, { op: "agent.up", agent: "w1", node: "n3", up: false }))).toEqual({
      ok: false,
      error: "not_owner",
    });
    expect(machine.state.agents.get("w1")?.up).toBe(true);
    expect(machine.apply(entry(6, { op: "agent.up", agent: "w1", node: "n2", up: false }))).toEqual({
      ok: true,
    });
    expect(machine.state.agents.get("w1")?.up).toBe(false);
  });

  it("fences team assignments and checkpoints by epoch", () => {
    const machine = machineWith([
      ...threeMembers,
      { op: "agent.register", agent: "w1", node: "n2", team: "alpha" },
    ]);
    expect(
      machine.apply(entry(5, { op: "team.assign", team: "alpha", coordinator: "n1", expectedEpoch: 0 })),
    ).toEqual({
      ok: true,
      epoch: 1,
    });
    // A second decision taken on the same stale view loses.
    expect(
      machine.apply(entry(6, { op: "team.assign", team: "alpha", coordinator: "n2", expectedEpoch: 0 })),
    ).toMatchObject({
      ok: false,
      error: "stale_epoch",
    });
    expect(
      machine.apply(entry(7, { op: "team.checkpoint", team: "alpha", epoch: 1, seq: 3, data: { round: 3 } })),
    ).toEqual({
      ok: true,
    });
    expect(
      machine.apply(entry(8, { op: "team.checkpoint", team: "alpha", epoch: 1, seq: 2, data: {} })),
    ).toEqual({
      ok: false,
      error: "stale_seq",
    });
    expect(
      machine.apply(entry(9, { op: "team.assign", team: "alpha", coordinator: "n3", expectedEpoch: 1 })),
    ).toEqual({
      ok: true,
      epoch: 2,
    });
    // The deposed coordinator's late checkpoint is refused.
    expect(
      machine.apply(entry(10, { op: "team.checkpoint", team: "alpha", epoch: 1, seq: 4, data: {} })),
    ).toMatchObject({
      ok: false,
      error: "stale_epoch",
    });
    const team = machine.state.teams.get("alpha");
    expect(team).toMatchObject({ coordinator: "n3", epoch: 2, checkpoint: { seq: 3, data: { round: 3 } } });
    expect(machine.state.events.map((event) => [event.coordinator, event.previous, event.epoch])).toEqual([
      ["n1", null, 1],
      ["n3", "n1", 2],
    ]);
  });

  it("refuses to assign a team to a member that is not active", () => {
    const machine = machineWith([...threeMembers, { op: "member.state", id: "n2", state: "down" }]);
    expect(
      machine.apply(entry(5, { op: "team.assign", team: "t", coordinator: "n2", expectedEpoch: 0 })),
    ).toEqual({
      ok: false,
      error: "member_not_active",
    });
  });

  it("mirrors Raft membership changes into the member table", () => {
    const machine = machineWith([
      ...threeMembers,
      { op: "agent.register", agent: "w1", node: "n3", team: null },
    ]);
    const add = encodeConfChange({
      changes: [{ type: ConfChangeType.AddVoter, nodeId: "n4", context: "ws://127.0.0.1:7104" }],
      transition: "auto",
    });
    machine.apply({ term: 1, index: 5, type: EntryType.ConfChange, data: add });
    expect(machine.state.members.get("n4")).toMatchObject({
      peerUrl: "ws://127.0.0.1:7104",
      apiUrl: "",
      state: "active",
    });
    const remove = encodeConfChange({
      changes: [{ type: ConfChangeType.RemoveNode, nodeId: "n3" }],
      transition: "auto",
    });
    machine.apply({ term: 1, index: 6, type: EntryType.ConfChange, data: remove });
    expect(machine.state.members.has("n3")).toBe(false);
    expect(machine.state.agents.get("w1")?.up).toBe(false);
  });

  it("enforces its limits deterministically", () => {
    const machine = new RoutingStateMachine({ agentsMax: 1, checkpointBytesMax: 16 });
    machine.apply(entry(1, threeMembers[0]));
    machine.apply(entry(2, { op: "agent.register", agent: "a", node: "n1", team: "t" }));
    expect(machine.apply(entry(3, { op: "agent.register", agent: "b", node: "n1", team: null }))).toEqual({
      ok: false,
      error: "agents_max",
    });
    expect(
      machine.apply(entry(4, { op: "team.checkpoint", team: "t", epoch: 0, seq: 1, data: "x".repeat(100) })),
    ).toEqual({ ok: false, error: "checkpoint_too_large" });
  });

  it("snapshot and restore reproduce the state byte for byte", () => {
    const machine = machineWith([
      ...threeMembers,
      { op: "agent.register", agent: "w1", node: "n2", team: "alpha" },
      { op: "team.assign", team: "alpha", coordinator: "n1", expectedEpoch: 0 },
      { op: "policy.set", name: "retention", value: { days: 7 } },
      { op: "topology.set", topology: { kind: "hybrid", teamSize: 8 } },
    ]);
    const copy = new RoutingStateMachine();
    copy.restore(machine.snapshot());
    expect(copy.appliedIndex).toBe(machine.appliedIndex);
    expect(Buffer.from(copy.snapshot()).equals(Buffer.from(machine.snapshot()))).toBe(true);
    copy.apply(entry(8, { op: "agent.remove", agent: "w1" }));
    expect(copy.state.agents.has("w1")).toBe(false);
    expect(machine.state.agents.has("w1")).toBe(true);
  });

  it("replicas applying the same random command sequence agree byte for byte", () => {
    const id = fc.constantFrom("a", "b", "c", "n1", "n2", "n3", "t1", "t2");
    const command: fc.Arbitrary<RoutingCommand> = fc.oneof(
      fc.record({
        op: fc.constant("member.upsert" as const),
        id,
        peerUrl: fc.constant("ws://h:1"),
        apiUrl: fc.constant("http://h:2"),
      }),
      fc.record({
        op: fc.constant("member.state" as const),
        id,
        state: fc.constantFrom("active" as const, "down" as const, "leaving" as const),
      }),
      fc.record({ op: fc.constant("member.remove" as const), id }),
      fc.record({
        op: fc.constant("agent.register" as const),
        agent: id,
        node: id,
        team: fc.option(id, { nil: null }),
      }),
      fc.record({ op: fc.constant("agent.up" as const), agent: id, node: id, up: fc.boolean() }),
      fc.record({
        op: fc.constant("team.assign" as const),
        team: id,
        coordinator: id,
        expectedEpoch: fc.nat(3),
      }),
      fc.record({
        op: fc.constant("team.checkpoint" as const),
        team: id,
        epoch: fc.nat(3),
        seq: fc.nat(5),
        data: fc.jsonValue(),
      }),
    );
    fc.assert(
      fc.property(fc.array(command, { maxLength: 60 }), (commands) => {
        const a = new RoutingStateMachine();
        const b = new RoutingStateMachine();
        commands.forEach((c, i) => {
          const bytes = encodeRoutingCommand(c);
          expect(a.apply(entry(i + 1, bytes))).toEqual(b.apply(entry(i + 1, bytes)));
        });
        expect(Buffer.from(a.snapshot()).equals(Buffer.from(b.snapshot()))).toBe(true);
        const restored = new RoutingStateMachine();
        restored.restore(a.snapshot());
        expect(Buffer.from(restored.snapshot()).equals(Buffer.from(a.snapshot()))).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it("decodes only well-formed commands", () => {
    expect(decodeRoutingCommand(encodeRoutingCommand({ op: "agent.remove", agent: "x" }))).toEqual({
      op: "agent.remove",
      agent: "x",
    });
    expect(
      decodeRoutingCommand(
        new TextEncoder().encode('{"op":"batch","commands":[{"op":"batch","commands":[]}]}'),
      ),
    ).toBeUndefined();
    expect(
      decodeRoutingCommand(
        new TextEncoder().encode('{"op":"member.upsert","id":"n1","peerUrl":"ftp://x","apiUrl":"http://y"}'),
      ),
    ).toBeUndefined();
    // "." and ".." match the id characters but would name a parent directory on the bus.
    for (const id of [".", ".."]) {
      const text = JSON.stringify({ op: "agent.register", agent: id, node: "n1", team: null });
      expect(decodeRoutingCommand(new TextEncoder().encode(text))).toBeUndefined();
      const member = JSON.stringify({ op: "member.remove", id });
      expect(decodeRoutingCommand(new TextEncoder().encode(member))).toBeUndefined();
    }
  });
});

describe("master coordinator planning", () => {
  it("assigns orphan teams to the least loaded live node, preferring where the team's agents are", () => {
    const machine = machineWith([
      ...threeMembers,
      { op: "agent.register", agent: "w1", node: "n2", team: "alpha" },
      { op: "agent.register", agent: "w2", node: "n3", team: "beta" },
      { op: "agent.register", agent: "w3", node: "n3", team: "gamma" },
    ]);
    const plan = planTeamAssignments(machine.state, { alive: new Set(["n1", "n2", "n3"]) });
    expect(plan).toEqual([
      { op: "team.assign", team: "alpha", coordinator: "n2", expectedEpoch: 0 },
      { op: "team.assign", team: "beta", coordinator: "n3", expectedEpoch: 0 },
      { op: "team.assign", team: "gamma", coordinator: "n1", expectedEpoch: 0 },
    ]);
  });

  it("reassigns only the teams of a failed node and spreads them", () => {
    const commands: RoutingCommand[] = [...threeMembers];
    for (const team of ["t1", "t2", "t3", "t4", "t5", "t6"])
      commands.push({ op: "agent.register", agent: `w-${team}`, node: "n1", team });
    const machine = machineWith(commands);
    let index = machine.appliedIndex;
    for (const command of planTeamAssignments(machine.state, { alive: new Set(["n1", "n2", "n3"]) })) {
      machine.apply(entry(++index, command));
    }
    const before = new Map([...machine.state.teams.values()].map((team) => [team.id, team.coordinator]));
    expect(new Set(before.values())).toEqual(new Set(["n1", "n2", "n3"]));
    const alive = new Set(["n1", "n3"]);
    for (const command of planMemberStates(machine.state, { alive })) machine.apply(entry(++index, command));
    expect(machine.state.members.get("n2")?.state).toBe("down");
    const plan = planTeamAssignments(machine.state, { alive });
    const moved = [...before.entries()].filter(([, node]) => node === "n2").map(([team]) => team);
    expect(plan.map((c) => (c.op === "team.assign" ? c.team : "")).sort()).toEqual(moved.sort());
    for (const command of plan) expect(machine.apply(entry(++index, command))?.ok).toBe(true);
    const counts = new Map<string, number>();
    for (const team of machine.state.teams.values())
      counts.set(team.coordinator ?? "", (counts.get(team.coordinator ?? "") ?? 0) + 1);
    expect(counts).toEqual(
      new Map([
        ["n1", 3],
        ["n3", 3],
      ]),
    );
    // Nothing more to do: healthy assignments never move.
    expect(planTeamAssignments(machine.state, { alive })).toEqual([]);
  });

  it("brings a member back to active once it is heard again", () => {
    const machine = machineWith([...threeMembers, { op: "member.state", id: "n3", state: "down" }]);
    expect(planMemberStates(machine.state, { alive: new Set(["n1", "n2", "n3"]) })).toEqual([
      { op: "member.state", id: "n3", state: "active" },
    ]);
  });

  it("marks a node's own agents down when heartbeats stop and up when they resume", () => {
    const machine = machineWith([
      ...threeMembers,
      { op: "agent.register", agent: "a", node: "n1", team: null },
      { op: "agent.register", agent: "b", node: "n1", team: null },
      { op: "agent.register", agent: "c", node: "n2", team: null },
    ]);
    const now = 1_000_000;
    const seen = new Map<string, number | null>([
      ["a", now - 10],
      ["b", now - 5_000],
      ["c", null],
    ]);
    expect(planAgentLiveness(machine.state, "n1", seen, now, 1_000)).toEqual([
      { op: "agent.up", agent: "b", node: "n1", up: false },
    ]);
    machine.apply(entry(7, { op: "agent.up", agent: "b", node: "n1", up: false }));
    expect(planAgentLiveness(machine.state, "n1", seen, now, 1_000)).toEqual([]);
    seen.set("b", now);
    expect(planAgentLiveness(machine.state, "n1", seen, now, 1_000)).toEqual([
      { op: "agent.up", agent: "b", node: "n1", up: true },
    ]);
  });
});
