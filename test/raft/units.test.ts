// Unit tests for the Raft core's pieces: quorum arithmetic, inflights, progress, unstable log,
// RaftLog, MemoryStorage, config validation, chunked snapshot assembly, conf change rules.

import { describe, expect, it } from "vitest";
import { CfnError, isCfnError } from "../../src/errors.js";
import {
  applyConfChangeTo,
  decodeConfChange,
  encodeConfChange,
  restoreConfig,
} from "../../src/raft/confchange.js";
import { DEFAULT_RAFT_CONFIG, resolveConfig, validateConfig } from "../../src/raft/config.js";
import { ENTRY_OVERHEAD_BYTES, limitSize } from "../../src/raft/entry-size.js";
import { Inflights } from "../../src/raft/inflights.js";
import { RaftLog } from "../../src/raft/log.js";
import { Progress } from "../../src/raft/progress.js";
import {
  jointCommittedIndex,
  jointVoteResult,
  majorityCommittedIndex,
  majorityVoteResult,
} from "../../src/raft/quorum.js";
import { seededRandom } from "../../src/raft/random.js";
import { ReadOnly } from "../../src/raft/read-only.js";
import { chunkSnapshot, SnapshotAssembler } from "../../src/raft/snapshot-assembler.js";
import { emptyConfState, MemoryStorage } from "../../src/raft/storage.js";
import { emptyTrackerConfig } from "../../src/raft/tracker.js";
import {
  type ConfChangeSingle,
  ConfChangeType,
  type Entry,
  EntryType,
  type Message,
  MessageType,
  type Snapshot,
} from "../../src/raft/types.js";
import { Unstable } from "../../src/raft/unstable.js";

const e = (index: number, term: number, data = ""): Entry => ({
  index,
  term,
  type: EntryType.Normal,
  data: new TextEncoder().encode(data),
});
const ids = (...xs: string[]) => new Set(xs);
const acked = (m: Record<string, number>) => (id: string) => m[id] ?? 0;

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    if (isCfnError(error)) return error.code;
    throw error;
  }
  return undefined;
}

describe("quorum", () => {
  it("commits the index held by a majority", () => {
    expect(majorityCommittedIndex(ids("1"), acked({ 1: 5 }))).toBe(5);
    expect(majorityCommittedIndex(ids("1", "2", "3"), acked({ 1: 5, 2: 3, 3: 1 }))).toBe(3);
    expect(majorityCommittedIndex(ids("1", "2", "3", "4"), acked({ 1: 5, 2: 4, 3: 3, 4: 1 }))).toBe(3);
    expect(
      majorityCommittedIndex(ids("1", "2", "3", "4", "5"), acked({ 1: 9, 2: 9, 3: 1, 4: 1, 5: 1 })),
    ).toBe(1);
    expect(majorityCommittedIndex(ids(), acked({}))).toBe(Number.POSITIVE_INFINITY);
  });

  it("joint commit is the minimum of both majorities", () => {
    const voters = { incoming: ids("1", "2", "3"), outgoing: ids("3", "4", "5") };
    expect(jointCommittedIndex(voters, acked({ 1: 7, 2: 7, 3: 2, 4: 2, 5: 2 }))).toBe(2);
    expect(jointCommittedIndex(voters, acked({ 1: 7, 2: 7, 3: 7, 4: 2, 5: 2 }))).toBe(2);
    expect(jointCommittedIndex(voters, acked({ 1: 7, 2: 6, 3: 7, 4: 8, 5: 2 }))).toBe(7);
    expect(
      jointCommittedIndex({ incoming: ids("1", "2", "3"), outgoing: ids() }, acked({ 1: 4, 2: 4 })),
    ).toBe(4);
  });

  it("tallies votes as won, lost or pending", () => {
    const v = (m: Record<string, boolean>) => new Map(Object.entries(m));
    expect(majorityVoteResult(ids("1", "2", "3"), v({ 1: true }))).toBe("pending");
    expect(majorityVoteResult(ids("1", "2", "3"), v({ 1: true, 2: true }))).toBe("won");
    expect(majorityVoteResult(ids("1", "2", "3"), v({ 1: true, 2: false, 3: false }))).toBe("lost");
    expect(majorityVoteResult(ids("1", "2", "3", "4"), v({ 1: true, 2: true }))).toBe("pending");
    expect(majorityVoteResult(ids(), v({}))).toBe("won");
    const joint = { incoming: ids("1", "2", "3"), outgoing: ids("3", "4", "5") };
    expect(jointVoteResult(joint, v({ 1: true, 2: true, 3: true }))).toBe("pending");
    expect(jointVoteResult(joint, v({ 1: true, 2: true, 3: true, 4: true }))).toBe("won");
    expect(jointVoteResult(joint, v({ 1: true, 2: true, 4: false, 5: false }))).toBe("lost");
  });
});

describe("inflights", () => {
  it("bounds the window by count and by bytes and frees up to an index", () => {
    const window = new Inflights(3, 100);
    window.add(1, 10);
    window.add(2, 10);
    expect(window.full()).toBe(false);
    window.add(3, 10);
    expect(window.full()).toBe(true);
    window.freeLE(2);
    expect(window.count()).toBe(1);
    expect(window.bytes()).toBe(10);
    window.add(4, 95);
    expect(window.full()).toBe(true); // 105 bytes >= 100
    window.freeLE(10);
    expect(window.count()).toBe(0);
    expect(window.bytes()).toBe(0);
    expect(() => new Inflights(0, 1)).toThrow(/invariant/);
  });

  it("refuses decreasing indexes and adds to a full window", () => {
    const window = new Inflights(2, 1000);
    window.add(5, 1);
    expect(() => window.add(5, 1)).toThrow(/invariant/);
    window.add(6, 1);
    expect(() => window.add(7, 1)).toThrow(/invariant/);
  });

  it("keeps working over many add/free cycles (compaction of the queue)", () => {
    const window = new Inflights(10, 1_000_000);
    let next = 1;
    for (let round = 0; round < 500; round++) {
      while (!window.full()) window.add(next++, 1);
      window.freeLE(next - 3);
      expect(window.count()).toBe(2);
    }
    expect(window.clone().count()).toBe(2);
  });
});

describe("progress", () => {
  const make = () =>
    new Progress({ match: 0, next: 5, inflightMsgsMax: 2, inflightBytesMax: 1000, isLearner: false });

  it("probe sends one append at a time", () => {
    const pr = make();
    expect(pr.isPaused()).toBe(false);
    pr.sentEntries(3, 30);
    expect(pr.isPaused()).toBe(true);
    expect(pr.next).toBe(5); // probe does not advance next optimistically
    expect(pr.maybeUpdate(7)).toBe(true);
    expect(pr.isPaused()).toBe(false);
    expect(pr.next).toBe(8);
  });

  it("replicate pipelines up to the window and rewinds on a rejection", () => {
    const pr = make();
    pr.maybeUpdate(4);
    pr.becomeReplicate();
    expect(pr.next).toBe(5);
    pr.sentEntries(2, 20);
    pr.sentEntries(2, 20);
    expect(pr.next).toBe(9);
    expect(pr.isPaused()).toBe(true);
    pr.maybeUpdate(6);
    pr.inflights.freeLE(6);
    expect(pr.isPaused()).toBe(false);
    expect(pr.maybeDecrTo(5, 5)).toBe(false); // stale: at or below match
    expect(pr.maybeDecrTo(8, 6)).toBe(true);
    expect(pr.next).toBe(7);
  });

  it("probe back-off uses the follower's hint but never goes below match+1", () => {
    const pr = make();
    pr.maybeUpdate(2);
    pr.next = 10;
    expect(pr.maybeDecrTo(8, 3)).toBe(false); // not the outstanding probe (next-1 = 9)
    expect(pr.maybeDecrTo(9, 3)).toBe(true);
    expect(pr.next).toBe(4);
    pr.next = 10;
    expect(pr.maybeDecrTo(9, 0)).toBe(true);
    expect(pr.next).toBe(3);
  });

  it("snapshot state pauses; probing resumes after the snapshot index", () => {
    const pr = make();
    pr.becomeSnapshot(20);
    expect(pr.isPaused()).toBe(true);
    expect(() => pr.sentEntries(1, 1)).toThrow(/invariant/);
    pr.becomeProbe();
    expect(pr.next).toBe(21);
    expect(pr.pendingSnapshot).toBe(0);
  });
});

describe("unstable", () => {
  it("tracks entries after a stable prefix and truncates on conflict", () => {
    const u = new Unstable(5);
    u.truncateAndAppend([e(5, 1), e(6, 1), e(7, 1)]);
    expect(u.maybeLastIndex()).toBe(7);
    expect(u.maybeTerm(6)).toBe(1);
    expect(u.maybeTerm(4)).toBeUndefined();
    u.truncateAndAppend([e(6, 2)]);
    expect(u.entries.map((x) => [x.index, x.term])).toEqual([
      [5, 1],
      [6, 2],
    ]);
    u.truncateAndAppend([e(4, 3)]);
    expect(u.offset).toBe(4);
    expect(u.entries.length).toBe(1);
  });

  it("stableTo ignores a term that no longer matches", () => {
    const u = new Unstable(1);
    u.truncateAndAppend([e(1, 1), e(2, 1)]);
    u.stableTo(2, 5);
    expect(u.entries.length).toBe(2);
    u.stableTo(1, 1);
    expect(u.offset).toBe(2);
    expect(u.entries.length).toBe(1);
  });

  it("holds a snapshot before its entries", () => {
    const u = new Unstable(1);
    const snap: Snapshot = {
      metadata: { index: 9, term: 3, conf: emptyConfState() },
      data: new Uint8Array(0),
    };
    u.restore(snap);
    expect(u.maybeFirstIndex()).toBe(10);
    expect(u.maybeLastIndex()).toBe(9);
    expect(u.maybeTerm(9)).toBe(3);
    u.stableSnapTo(8);
    expect(u.snapshot).toBeDefined();
    u.stableSnapTo(9);
    expect(u.snapshot).toBeUndefined();
  });
});

describe("MemoryStorage", () => {
  function filled(): MemoryStorage {
    const s = new MemoryStorage();
    s.append([e(1, 1, "a"), e(2, 1, "b"), e(3, 2, "c"), e(4, 2, "d")]);
    return s;
  }

  it("serves entries, terms and bounds; typed errors outside", () => {
    const s = filled();
    expect(s.firstIndex()).toBe(1);
    expect(s.lastIndex()).toBe(4);
    expect(s.term(0)).toBe(0);
    expect(s.term(3)).toBe(2);
    expect(s.entries(2, 4, Number.MAX_SAFE_INTEGER).map((x) => x.index)).toEqual([2, 3]);
    expect(code(() => s.term(5))).toBe("CFN_ERR_UNAVAILABLE");
    expect(code(() => s.entries(2, 6, 100))).toBe("CFN_ERR_UNAVAILABLE");
    expect(code(() => s.entries(0, 2, 100))).toBe("CFN_ERR_COMPACTED");
  });

  it("limits by bytes but always returns one entry", () => {
    const s = filled();
    expect(s.entries(1, 5, 0).length).toBe(1);
    expect(s.entries(1, 5, 2 * (ENTRY_OVERHEAD_BYTES + 1)).length).toBe(2);
    expect(limitSize([e(1, 1, "x")], 0).length).toBe(1);
  });

  it("append overwrites a conflicting suffix and refuses gaps", () => {
    const s = filled();
    s.append([e(3, 3, "C")]);
    expect(s.lastIndex()).toBe(3);
    expect(s.term(3)).toBe(3);
    expect(() => s.append([e(6, 3)])).toThrow(/invariant/);
  });

  it("compacts, snapshots, and refuses stale snapshots", () => {
    const s = filled();
    const snap = s.createSnapshot(3, { ...emptyConfState(), voters: ["1"] }, new Uint8Array([7]));
    expect(snap.metadata).toMatchObject({ index: 3, term: 2 });
    s.compact(3);
    expect(s.firstIndex()).toBe(4);
    expect(s.term(3)).toBe(2);
    expect(code(() => s.term(2))).toBe("CFN_ERR_COMPACTED");
    expect(code(() => s.compact(2))).toBe("CFN_ERR_COMPACTED");
    expect(code(() => s.createSnapshot(2, undefined, new Uint8Array()))).toBe("CFN_ERR_COMPACTED");
    expect(code(() => s.applySnapshot(snap))).toBe("CFN_ERR_COMPACTED");
    s.applySnapshot({ metadata: { index: 10, term: 4, conf: emptyConfState() }, data: new Uint8Array() });
    expect(s.firstIndex()).toBe(11);
    expect(s.lastIndex()).toBe(10);
    expect(s.initialState().confState).toEqual(emptyConfState());
  });

  it("bootstraps a founder with the membership in a snapshot at index 1", () => {
    const s = MemoryStorage.bootstrap({ voters: ["a", "b"] });
    expect(s.firstIndex()).toBe(2);
    expect(s.initialState().confState.voters).toEqual(["a", "b"]);
    expect(s.initialState().hardState).toEqual({ term: 1, vote: "", commit: 1 });
  });
});

describe("RaftLog", () => {
  function log(): RaftLog {
    const s = new MemoryStorage();
    s.append([e(1, 1), e(2, 1), e(3, 2)]);
    return new RaftLog(s);
  }

  it("appends after a matching entry and reports conflicts", () => {
    const l = log();
    expect(l.maybeAppend(3, 2, 3, [e(4, 2), e(5, 2)])).toBe(5);
    expect(l.committed).toBe(3);
    expect(l.lastIndex()).toBe(5);
    expect(l.maybeAppend(3, 9, 5, [e(4, 9)])).toBeUndefined();
    // A conflicting suffix above commit is replaced.
    expect(l.maybeAppend(3, 2, 3, [e(4, 3)])).toBe(4);
    expect(l.lastIndex()).toBe(4);
    expect(l.term(4)).toBe(3);
  });

  it("never truncates committed entries (invariant)", () => {
    const l = log();
    l.commitTo(3);
    expect(() => l.maybeAppend(1, 1, 3, [e(2, 1), e(3, 5)])).toThrow(/invariant/);
  });

  it("commits only an entry of the given term (figure 8 at the log level)", () => {
    const l = log();
    l.append([e(4, 3)]);
    expect(l.maybeCommit(3, 3)).toBe(false); // index 3 has term 2
    expect(l.maybeCommit(4, 3)).toBe(true);
    expect(l.committed).toBe(4);
    expect(l.maybeCommit(9, 3)).toBe(false); // beyond the log
  });

  it("finds where a rejecting follower may match", () => {
    const l = log();
    l.append([e(4, 4), e(5, 4)]);
    expect(l.findConflictByTerm(5, 3)).toEqual({ index: 3, term: 2 });
    expect(l.findConflictByTerm(5, 4)).toEqual({ index: 5, term: 4 });
    expect(l.findConflictByTerm(2, 9)).toEqual({ index: 2, term: 1 });
  });

  it("orders logs by up-to-dateness", () => {
    const l = log();
    expect(l.isUpToDate(3, 2)).toBe(true);
    expect(l.isUpToDate(2, 2)).toBe(false);
    expect(l.isUpToDate(1, 3)).toBe(true);
    expect(l.isUpToDate(9, 1)).toBe(false);
  });

  it("hands out committed entries once, within a byte budget", () => {
    const l = log();
    l.commitTo(3);
    expect(l.nextCommittedEntries(0).map((x) => x.index)).toEqual([1]);
    expect(l.nextCommittedEntries(Number.MAX_SAFE_INTEGER).map((x) => x.index)).toEqual([1, 2, 3]);
    l.appliedTo(3);
    expect(l.hasNextCommittedEntries()).toBe(false);
    expect(() => l.appliedTo(4)).toThrow(/invariant/);
  });

  it("reads across storage and unstable entries and reports compaction", () => {
    const s = new MemoryStorage();
    s.append([e(1, 1), e(2, 1), e(3, 1)]);
    s.createSnapshot(2, undefined, new Uint8Array());
    s.compact(2);
    const l = new RaftLog(s);
    l.append([e(4, 2), e(5, 2)]);
    expect(l.slice(3, 6, Number.MAX_SAFE_INTEGER).map((x) => x.index)).toEqual([3, 4, 5]);
    expect(code(() => l.slice(2, 4, 100))).toBe("CFN_ERR_COMPACTED");
    expect(code(() => l.term(1))).toBe("CFN_ERR_COMPACTED");
    expect(l.term(2)).toBe(1);
    expect(l.termOrZero(9)).toBe(0);
  });
});

describe("config validation", () => {
  it("accepts the defaults", () => {
    expect(() => resolveConfig({ id: "n1" })).not.toThrow();
    expect(resolveConfig({ id: "n1" }).electionTimeoutTicks).toBe(DEFAULT_RAFT_CONFIG.electionTimeoutTicks);
  });

  const cases: [string, Record<string, unknown>][] = [
    ["id", { id: "" }],
    ["heartbeatTicks", { heartbeatTicks: 0 }],
    ["electionTimeoutTicks", { heartbeatTicks: 5, electionTimeoutTicks: 5 }],
    ["inflightMsgsMax", { inflightMsgsMax: 0 }],
    ["inflightBytesMax", { msgBytesMax: 1000, inflightBytesMax: 999 }],
    ["msgBytesMax", { msgBytesMax: 1.5 }],
    ["uncommittedEntriesBytesMax", { uncommittedEntriesBytesMax: -1 }],
    ["snapshotChunkBytes", { snapshotChunkBytes: 0 }],
    ["maxCommittedBytesPerReady", { maxCommittedBytesPerReady: 0 }],
    ["readOnlyOption", { readOnlyOption: "lease", checkQuorum: false }],
    ["readOnlyOption", { readOnlyOption: "fast" }],
    ["preVote", { preVote: "yes" }],
    ["applied", { applied: -1 }],
  ];
  for (const [field, override] of cases) {
    it(`names ${field} in CFN_ERR_RAFT_CONFIG for ${JSON.stringify(override)}`, () => {
      let caught: unknown;
      try {
        validateConfig({ ...DEFAULT_RAFT_CONFIG, id: "n1", ...override } as never);
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(CfnError);
      expect((caught as CfnError).code).toBe("CFN_ERR_RAFT_CONFIG");
      expect((caught as CfnError).details.field).toBe(field);
    });
  }
});

describe("read-only queue", () => {
  it("releases a request and all before it once acknowledged", () => {
    const ro = new ReadOnly();
    const req = (ctx: string): Message =>
      ({ type: MessageType.ReadIndex, from: "", context: new TextEncoder().encode(ctx) }) as Message;
    ro.addRequest(5, req("a"));
    ro.addRequest(6, req("b"));
    ro.addRequest(7, req("b")); // duplicate context ignored
    expect(ro.pendingCount()).toBe(2);
    expect(ro.recvAck("2", new TextEncoder().encode("b"))?.size).toBe(1);
    expect(ro.recvAck("2", new TextEncoder().encode("zz"))).toBeUndefined();
    const done = ro.advance(new TextEncoder().encode("b"));
    expect(done.map((d) => d.index)).toEqual([5, 6]);
    expect(ro.pendingCount()).toBe(0);
  });
});

describe("snapshot chunks", () => {
  const snapshot: Snapshot = {
    metadata: { index: 7, term: 2, conf: emptyConfState() },
    data: Uint8Array.from({ length: 50 }, (_, i) => i),
  };
  const base = {
    type: MessageType.Snap,
    from: "1",
    to: "2",
    term: 2,
    index: 0,
    logTerm: 0,
    entries: [],
    commit: 0,
    reject: false,
    rejectHint: 0,
  };

  it("splits into chunks and reassembles in order", () => {
    const chunks = chunkSnapshot(base, snapshot, 16);
    expect(chunks.map((c) => c.snapshot!.data.byteLength)).toEqual([16, 16, 16, 2]);
    expect(chunks.map((c) => c.snapshotChunk!.last)).toEqual([false, false, false, true]);
    const assembler = new SnapshotAssembler();
    const results = chunks.map((c) => assembler.accept(c));
    expect(results.slice(0, 3).every((r) => r === undefined)).toBe(true);
    expect(Array.from(results[3]!.data)).toEqual(Array.from(snapshot.data));
    expect(results[3]!.metadata).toEqual(snapshot.metadata);
  });

  it("discards a sequence with a gap or from another leader", () => {
    const chunks = chunkSnapshot(base, snapshot, 16);
    const assembler = new SnapshotAssembler();
    assembler.accept(chunks[0]);
    expect(assembler.accept(chunks[2])).toBeUndefined(); // gap: chunk 1 lost
    expect(assembler.bufferedBytes()).toBe(0);
    expect(assembler.accept(chunks[3])).toBeUndefined();
    assembler.accept(chunks[0]);
    expect(assembler.accept({ ...chunks[1], from: "3" })).toBeUndefined();
    // A fresh complete sequence still works after failures.
    let whole: Snapshot | undefined;
    for (const c of chunks) whole = assembler.accept(c);
    expect(whole?.data.byteLength).toBe(50);
  });

  it("sends an empty snapshot as one last chunk", () => {
    const chunks = chunkSnapshot(base, { ...snapshot, data: new Uint8Array(0) }, 16);
    expect(chunks.length).toBe(1);
    expect(new SnapshotAssembler().accept(chunks[0])?.data.byteLength).toBe(0);
  });
});

describe("conf change rules", () => {
  const context = { lastIndex: 10, inflightMsgsMax: 4, inflightBytesMax: 1000 };
  const start = () => restoreConfig({ ...emptyConfState(), voters: ["1", "2", "3"] }, context);
  const v = (id: string) => ({ type: ConfChangeType.AddVoter, nodeId: id });
  const l = (id: string) => ({ type: ConfChangeType.AddLearner, nodeId: id });
  const r = (id: string) => ({ type: ConfChangeType.RemoveNode, nodeId: id });

  it("applies a simple change and refuses a second voter change without joint", () => {
    const { config, progress } = start();
    const added = applyConfChangeTo(config, progress, context, { changes: [v("4")], transition: "auto" });
    expect([...added.config.voters.incoming].sort()).toEqual(["1", "2", "3", "4"]);
    expect(added.progress.get("4")?.next).toBe(10);
    // The original is untouched (copy on change).
    expect(config.voters.incoming.size).toBe(3);
  });

  it("enters and leaves a joint config; demoted voters become learners on leave", () => {
    const { config, progress } = start();
    const joint = applyConfChangeTo(config, progress, context, {
      changes: [v("4"), l("3")],
      transition: "explicit",
    });
    expect([...joint.config.voters.outgoing].sort()).toEqual(["1", "2", "3"]);
    expect([...joint.config.learnersNext]).toEqual(["3"]);
    expect(joint.config.autoLeave).toBe(false);
    expect(joint.progress.get("3")?.isLearner).toBe(false);
    expect(
      code(() =>
        applyConfChangeTo(joint.config, joint.progress, context, {
          changes: [v("5")],
          transition: "explicit",
        }),
      ),
    ).toBe("CFN_ERR_CONF_CHANGE");
    const left = applyConfChangeTo(joint.config, joint.progress, context, {
      changes: [],
      transition: "auto",
    });
    expect([...left.config.learners]).toEqual(["3"]);
    expect(left.progress.get("3")?.isLearner).toBe(true);
    expect(left.config.voters.outgoing.size).toBe(0);
  });

  it("removing an outgoing voter keeps its progress until the joint config is left", () => {
    const { config, progress } = start();
    const joint = applyConfChangeTo(config, progress, context, {
      changes: [r("3"), v("4")],
      transition: "auto",
    });
    expect(joint.progress.has("3")).toBe(true);
    expect(joint.config.autoLeave).toBe(true);
    const left = applyConfChangeTo(joint.config, joint.progress, context, {
      changes: [],
      transition: "auto",
    });
    expect(left.progress.has("3")).toBe(false);
  });

  it("refuses removing every voter, leaving a non-joint config, empty ids", () => {
    const { config, progress } = start();
    const refuse = (changes: ConfChangeSingle[], transition: "auto" | "explicit" = "auto") =>
      code(() => applyConfChangeTo(config, progress, context, { changes, transition }));
    expect(refuse([r("1"), r("2"), r("3")])).toBe("CFN_ERR_CONF_CHANGE");
    expect(refuse([])).toBe("CFN_ERR_CONF_CHANGE");
    expect(refuse([v("")])).toBe("CFN_ERR_CONF_CHANGE");
    const empty = { config: emptyTrackerConfig(), progress: new Map() };
    expect(
      code(() =>
        applyConfChangeTo(empty.config, empty.progress, context, {
          changes: [v("1"), v("2")],
          transition: "auto",
        }),
      ),
    ).toBe("CFN_ERR_CONF_CHANGE");
  });

  it("encodes conf changes as entry data and back", () => {
    const cc = { changes: [v("a"), { ...r("b"), context: "host:1" }], transition: "explicit" as const };
    expect(decodeConfChange(encodeConfChange(cc))).toEqual(cc);
  });
});

describe("seeded random", () => {
  it("is deterministic and in [0, 1)", () => {
    const a = seededRandom(42);
    const b = seededRandom(42);
    for (let i = 0; i < 1000; i++) {
      const x = a();
      expect(x).toBe(b());
      expect(x).toBeGreaterThanOrEqual(0);
      expect(x).toBeLessThan(1);
    }
  });
});

describe("conf change decoding", () => {
  it("refuses malformed entry data with CFN_ERR_INVALID_MESSAGE", () => {
    expect(code(() => decodeConfChange(new TextEncoder().encode("{not json")))).toBe(
      "CFN_ERR_INVALID_MESSAGE",
    );
    expect(code(() => decodeConfChange(new TextEncoder().encode('{"changes":5}')))).toBe(
      "CFN_ERR_INVALID_MESSAGE",
    );
    expect(code(() => decodeConfChange(new TextEncoder().encode('{"transition":"sideways"}')))).toBe(
      "CFN_ERR_INVALID_MESSAGE",
    );
  });
});
