// A seeded randomized check of the core's safety properties under message loss, duplication,
// reordering, partitions, restarts, compaction and membership changes; then a liveness check
// after the faults stop. (The full simulator lives in chaos/sim; this one is the core's own
// guard and stays small.) A failure prints the seed; the same seed replays it exactly.

import { describe, it } from "vitest";
import { isCfnError } from "../../src/errors.js";
import {
  ConfChangeType,
  type ConfState,
  decodeConfChange,
  EntryType,
  MemoryStorage,
  type Message,
  RawNode,
  seededRandom,
} from "../../src/raft/index.js";

interface SimNode {
  id: string;
  node: RawNode;
  storage: MemoryStorage;
  applied: { index: number; term: number; value: string }[];
  appliedIndex: number;
  conf: ConfState;
  confAt: { index: number; conf: ConfState }[];
  up: boolean;
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

function runSeed(seed: number, steps: number): void {
  const rand = seededRandom(seed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)];
  const founders = ["1", "2", "3"];
  const spare = ["4", "5"];
  const nodes = new Map<string, SimNode>();
  // Seeds rotate through variants: lease-based reads (the read check must hold for them
  // too), PreVote off, CheckQuorum off, both off, and the defaults.
  const variant = seed % 6;
  const config = {
    preVote: variant !== 1 && variant !== 3,
    checkQuorum: variant !== 2 && variant !== 3,
    electionTimeoutTicks: 10,
    heartbeatTicks: 2,
    snapshotChunkBytes: 64,
    msgBytesMax: 256,
    inflightMsgsMax: 4,
    readOnlyOption: variant === 0 ? ("lease" as const) : ("safe" as const),
  };
  const create = (id: string, storage: MemoryStorage, applied: number) =>
    new RawNode({
      config: { id, ...config, applied },
      storage,
      random: seededRandom(seed * 31 + Number(id)),
    });
  for (const id of [...founders, ...spare]) {
    const storage = founders.includes(id)
      ? MemoryStorage.bootstrap({ voters: founders })
      : new MemoryStorage();
    const conf = storage.initialState().confState;
    const base = storage.firstIndex() - 1;
    nodes.set(id, {
      id,
      node: create(id, storage, 0),
      storage,
      applied: [],
      appliedIndex: base,
      conf,
      confAt: [{ index: base, conf }],
      up: true,
    });
  }
  let network: Message[] = [];
  const cut = new Set<string>();
  const leadersByTerm = new Map<number, string>();
  /** The agreed history: index → "term:value" of every entry any node applied. */
  const history = new Map<number, string>();
  let proposals = 0;
  /** Reads in flight: the highest index any node had applied when the read was requested. A
   *  linearizable read must be served at an index at least that high. */
  const readFloor = new Map<string, number>();
  const maxApplied = () => Math.max(...[...nodes.values()].map((x) => x.appliedIndex));
  let faultsOn = true;

  const check = (condition: boolean, message: string) => {
    if (!condition) throw new Error(`seed ${seed}: ${message}`);
  };

  const processReady = (n: SimNode) => {
    while (n.node.hasReady()) {
      const rd = n.node.ready();
      if (rd.snapshot) n.storage.applySnapshot(rd.snapshot);
      n.storage.append(rd.entries);
      if (rd.hardState) n.storage.setHardState(rd.hardState);
      for (const m of rd.messages) network.push(m);
      if (rd.snapshot) {
        const meta = rd.snapshot.metadata;
        check(
          meta.index > n.appliedIndex,
          `${n.id} installs an old snapshot ${meta.index} <= ${n.appliedIndex}`,
        );
        const restored = JSON.parse(
          decoder.decode(rd.snapshot.data.byteLength ? rd.snapshot.data : encoder.encode("[]")),
        );
        n.applied = restored;
        n.appliedIndex = meta.index;
        n.conf = meta.conf;
        n.confAt = [{ index: meta.index, conf: meta.conf }];
      }
      for (const e of rd.committedEntries) {
        check(e.index === n.appliedIndex + 1, `${n.id} applies ${e.index} after ${n.appliedIndex}`);
        const value =
          e.type === EntryType.ConfChange ? `conf:${decoder.decode(e.data)}` : decoder.decode(e.data);
        const key = `${e.term}:${value}`;
        const agreed = history.get(e.index);
        check(
          agreed === undefined || agreed === key,
          `index ${e.index}: ${n.id} applies ${key}, another applied ${agreed}`,
        );
        history.set(e.index, key);
        if (e.type === EntryType.ConfChange) {
          n.conf = n.node.applyConfChange(decodeConfChange(e.data));
          n.confAt.push({ index: e.index, conf: n.conf });
        } else if (e.data.byteLength > 0) {
          n.applied.push({ index: e.index, term: e.term, value });
        }
        n.appliedIndex = e.index;
      }
      for (const rs of rd.readStates) {
        const ctx = decoder.decode(rs.requestContext);
        const floor = readFloor.get(ctx);
        check(floor !== undefined, `${n.id} got a read state for unknown context ${ctx}`);
        check(rs.index >= floor!, `read ${ctx} at index ${rs.index} misses writes applied up to ${floor}`);
        // Kept: a duplicated request or response may deliver the same read again (still safe).
      }
      n.node.advance();
      const s = n.node.status();
      if (s.role === "leader") {
        const other = leadersByTerm.get(s.term);
        check(other === undefined || other === n.id, `two leaders in term ${s.term}: ${other} and ${n.id}`);
        leadersByTerm.set(s.term, n.id);
      }
      check(s.commit <= s.lastIndex, `${n.id} commit beyond its log`);
    }
  };

  const deliver = (m: Message) => {
    const to = nodes.get(m.to);
    if (!to?.up) return;
    if (faultsOn && (cut.has(`${m.from}->${m.to}`) || rand() < 0.05)) {
      if (m.type === "snap" && m.snapshotChunk?.last) nodes.get(m.from)?.node.reportSnapshot(m.to, false);
      return;
    }
    to.node.step(m);
    if (m.type === "snap" && m.snapshotChunk?.last) nodes.get(m.from)?.node.reportSnapshot(m.to, true);
    if (faultsOn && rand() < 0.02) to.node.step(m); // duplicate
  };

  const leader = () => [...nodes.values()].find((n) => n.up && n.node.status().role === "leader");

  for (let step = 0; step < steps; step++) {
    if (step === Math.floor(steps * 0.8)) {
      faultsOn = false;
      cut.clear();
      for (const n of nodes.values()) n.up = true;
    }
    const action = rand();
    const live = [...nodes.values()].filter((n) => n.up);
    if (action < 0.45) {
      for (const n of live) n.node.tick();
    } else if (action < 0.65) {
      const n = pick(live);
      try {
        n.node.propose(encoder.encode(`p${proposals++}`));
      } catch (error) {
        if (!isCfnError(error)) throw error;
      }
    } else if (action < 0.69 && faultsOn) {
      // partition one node away, or heal
      if (cut.size > 0) cut.clear();
      else {
        const a = pick(founders);
        for (const b of nodes.keys()) if (b !== a) cut.add(`${a}->${b}`).add(`${b}->${a}`);
      }
    } else if (action < 0.71 && faultsOn) {
      // crash and restart a node (loses volatile state, keeps storage and applied state)
      const n = pick([...nodes.values()]);
      n.up = false;
      // The connection breaks: queued messages are lost; a transport reports lost snapshots.
      for (const m of network) {
        if (m.to === n.id && m.type === "snap" && m.snapshotChunk?.last)
          nodes.get(m.from)?.node.reportSnapshot(m.to, false);
      }
      network = network.filter((m) => m.to !== n.id);
      n.node = create(n.id, n.storage, n.appliedIndex);
      n.up = true;
    } else if (action < 0.73) {
      // compact a node's log a little behind its applied index
      const n = pick(live);
      const index = n.appliedIndex - 3;
      if (index > n.storage.firstIndex()) {
        let conf = n.confAt[0].conf;
        for (const c of n.confAt) if (c.index <= index) conf = c.conf;
        const data = encoder.encode(JSON.stringify(n.applied.filter((a) => a.index <= index)));
        n.storage.createSnapshot(index, conf, data);
        n.storage.compact(index);
      }
    } else if (action < 0.76 && variant !== 3) {
      // membership: add or remove a spare, or promote a learner. Not with PreVote and
      // CheckQuorum both off: a removed node that never learned of its removal would keep
      // deposing leaders with ever higher terms, by design (Raft thesis §4.2.3).
      const l = leader();
      if (l) {
        const s = l.node.status();
        const id = pick(spare);
        const type = s.config.voters.includes(id)
          ? ConfChangeType.RemoveNode
          : s.config.learners.includes(id)
            ? ConfChangeType.AddVoter
            : ConfChangeType.AddLearner;
        try {
          l.node.proposeConfChange({
            changes: [{ type, nodeId: id }],
            transition: rand() < 0.5 ? "auto" : "explicit",
          });
        } catch (error) {
          if (!isCfnError(error)) throw error;
        }
        if (s.config.votersOutgoing.length > 0) {
          try {
            l.node.proposeConfChange({ changes: [], transition: "auto" });
          } catch (error) {
            if (!isCfnError(error)) throw error;
          }
        }
      }
    } else if (action < 0.77) {
      const l = leader();
      if (l) l.node.transferLeader(pick(founders));
    } else if (action < 0.85) {
      const n = pick(live);
      try {
        readFloor.set(`r${step}`, maxApplied());
        n.node.readIndex(encoder.encode(`r${step}`));
      } catch (error) {
        if (!isCfnError(error)) throw error;
      }
    }
    for (const n of live) processReady(n);
    // deliver a random subset of the network, reordered
    const batch = network;
    network = [];
    for (const m of batch) {
      if (faultsOn && rand() < 0.1)
        network.push(m); // delay
      else deliver(m);
    }
    for (const n of nodes.values()) if (n.up) processReady(n);
  }

  // Liveness: with no faults, the members converge on one leader and the same applied state.
  for (let round = 0; round < 400; round++) {
    for (const n of nodes.values()) n.node.tick();
    for (let i = 0; i < 5; i++) {
      for (const n of nodes.values()) processReady(n);
      const batch = network;
      network = [];
      for (const m of batch) deliver(m);
    }
  }
  const l = leader();
  if (l === undefined && process.env.CFN_RAFT_DEBUG) {
    for (const n of nodes.values()) {
      const st = n.node.status();
      console.log(
        JSON.stringify({
          id: n.id,
          role: st.role,
          term: st.term,
          lead: st.leader,
          commit: st.commit,
          applied: st.applied,
          last: st.lastIndex,
          first: st.firstIndex,
          conf: st.config,
        }),
      );
    }
  }
  check(l !== undefined, "no leader after healing");
  if (process.env.CFN_RAFT_DEBUG) {
    const st = l!.node.status();
    console.log(
      `seed ${seed}: term=${st.term} commit=${st.commit} first=${st.firstIndex} conf=${JSON.stringify(st.config)} applied=${l!.applied.length} leaders=${leadersByTerm.size}`,
    );
  }
  const target = l!.appliedIndex;
  for (const id of new Set([...l!.conf.voters, ...l!.conf.learners])) {
    const n = nodes.get(id)!;
    if (n.appliedIndex !== target && process.env.CFN_RAFT_DEBUG) {
      console.log(
        JSON.stringify(
          { follower: n.node.status(), leader: l!.node.status(), storageFirst: n.storage.firstIndex() },
          null,
          1,
        ),
      );
    }
    check(n.appliedIndex === target, `${id} applied ${n.appliedIndex}, leader ${target}`);
    check(
      JSON.stringify(n.applied) === JSON.stringify(l!.applied),
      `${id} applied state differs from the leader's`,
    );
  }
}

describe("raft randomized cluster (seeded)", () => {
  const seeds = Number(process.env.CFN_RAFT_SEEDS ?? "40");
  const first = Number(process.env.CFN_RAFT_FIRST_SEED ?? "1");
  it(
    `keeps safety under faults and converges after (${seeds} seeds)`,
    () => {
      for (let seed = first; seed < first + seeds; seed++) runSeed(seed, 1500);
    },
    Math.max(60_000, seeds * 1_000),
  );
});
