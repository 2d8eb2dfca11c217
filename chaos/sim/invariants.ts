// Raft's safety properties, checked by the simulator after every step from what the nodes
// persisted and applied (never from their private state, so the check does not trust the core).
//
// Each node's persisted log is mirrored as a chain of prefix fingerprints: chain[i] fingerprints
// entries 1..i. Equal fingerprints at one index mean equal prefixes, which makes the log-matching
// and "committed entries never change" checks a single comparison each.
//
// Checked:
//  1. election safety — at most one leader per term;
//  2. vote safety — a node's persisted vote never changes within a term, its term and commit
//     never go back (across crashes too: this is what persistence is for);
//  3. log matching — two persisted entries with the same index and term have the same prefix,
//     whichever nodes held them and whenever;
//  4. committed prefix — every node's persisted commit index points at the one committed chain;
//  5. leader completeness — a leader's log holds every entry committed so far;
//  6. durability — each committed entry is in the persisted log (or snapshot) of a quorum;
//  7. state-machine safety — no two nodes apply different entries at one index, and snapshots
//     of the state machine taken at one index are byte-identical.

import type { Entry, HardState, NodeId, Snapshot } from "../../src/raft/types.js";
import { chainHash, TraceHash } from "./hash.js";

export class InvariantViolation extends Error {
  constructor(
    readonly property: string,
    detail: string,
  ) {
    super(`${property}: ${detail}`);
    this.name = "InvariantViolation";
  }
}

interface NodeMirror {
  /** chain[index] for the indices the node's persisted log holds (sparse after a snapshot). */
  chain: Map<number, string>;
  lastIndex: number;
  snapshotIndex: number;
  hardState: HardState;
}

function entryFingerprint(entry: Entry): string {
  return new TraceHash().addNumber(entry.term).addNumber(entry.type).addBytes(entry.data).hex();
}

export class SafetyChecker {
  private readonly mirrors = new Map<NodeId, NodeMirror>();
  private readonly leaderOfTerm = new Map<number, NodeId>();
  /** `${index}:${term}` → chain fingerprint, for every entry any node ever persisted. */
  private readonly chainByIndexTerm = new Map<string, string>();
  /** The committed chain (sparse where only snapshots covered it) and its highest index. */
  private readonly committedChain = new Map<number, string>([[0, ""]]);
  private committedMax = 0;
  /** Highest commit index some node persisted while in each term. */
  private readonly committedInTerm = new Map<number, number>();
  private readonly appliedEntries = new Map<number, string>();
  private readonly stateAt = new Map<number, string>();
  /** Count of individual checks performed, reported so a run can show it checked something. */
  checks = 0;

  /**
   * @param voters the founding voters (the quorum for the durability check)
   * @param nodes every node that may ever hold a log (founders and spares)
   * @param checkDurabilityEnabled off when membership changes move the quorum: which voters a
   *   committed entry must survive on then depends on the configuration at each index.
   */
  constructor(
    private readonly voters: readonly NodeId[],
    nodes: readonly NodeId[] = voters,
    private readonly checkDurabilityEnabled = true,
  ) {
    for (const id of nodes) {
      this.mirrors.set(id, {
        chain: new Map([[0, ""]]),
        lastIndex: 0,
        snapshotIndex: 0,
        hardState: { term: 0, vote: "", commit: 0 },
      });
    }
  }

  /**
   * Every founder starts from the same bootstrap snapshot at (index, term), committed: seeds
   * the mirrors and the committed chain with it.
   */
  bootstrap(founders: readonly NodeId[], index: number, term: number, commit: number): void {
    const fingerprint = `bootstrap:${index}:${term}`;
    this.chainByIndexTerm.set(`${index}:${term}`, fingerprint);
    for (const founder of founders) {
      const mirror = this.mirror(founder);
      mirror.chain = new Map([[index, fingerprint]]);
      mirror.lastIndex = index;
      mirror.snapshotIndex = index;
      mirror.hardState = { term, vote: "", commit };
    }
    this.committedChain.set(index, fingerprint);
    this.committedMax = Math.max(this.committedMax, commit);
  }

  get committedIndex(): number {
    return this.committedMax;
  }

  /** Leaders seen, by term (for reports and liveness). */
  leaders(): ReadonlyMap<number, NodeId> {
    return this.leaderOfTerm;
  }

  /** A node reports its role; called after every step. */
  observeRole(node: NodeId, term: number, isLeader: boolean): void {
    if (!isLeader) return;
    this.checks++;
    const existing = this.leaderOfTerm.get(term);
    if (existing === undefined) this.leaderOfTerm.set(term, node);
    else if (existing !== node) {
      throw new InvariantViolation(
        "election safety",
        `${existing} and ${node} are both leader of term ${term}`,
      );
    }
  }

  /** A node's Ready was persisted: a snapshot (if any), then entries, then the hard state. */
  observePersist(
    node: NodeId,
    snapshot: Snapshot | undefined,
    entries: readonly Entry[],
    hardState: HardState | undefined,
  ): void {
    const mirror = this.mirror(node);
    if (snapshot !== undefined && snapshot.metadata.index > 0) this.persistSnapshot(node, mirror, snapshot);
    if (entries.length > 0) this.persistEntries(node, mirror, entries);
    if (hardState !== undefined) this.persistHardState(node, mirror, hardState);
  }

  /**
   * The node leads in `term`: its log must hold every entry committed in an earlier term. (A
   * stale leader of an old term may lack entries a newer leader committed: that is allowed.)
   * Call after its Ready is persisted.
   */
  checkLeaderCompleteness(node: NodeId, term: number): void {
    let required = 0;
    for (const [t, index] of this.committedInTerm) if (t < term && index > required) required = index;
    if (required === 0) return;
    const mirror = this.mirror(node);
    this.checks++;
    if (mirror.lastIndex < required) {
      throw new InvariantViolation(
        "leader completeness",
        `leader ${node} of term ${term} has last index ${mirror.lastIndex} < ${required}, committed before its term`,
      );
    }
    const own = mirror.chain.get(required);
    const committed = this.committedChain.get(required);
    if (own !== undefined && committed !== undefined && own !== committed) {
      throw new InvariantViolation(
        "leader completeness",
        `leader ${node} of term ${term} lacks committed entry ${required}`,
      );
    }
  }

  /**
   * A broken disk lost the node's entries after `lastIndex` (a deliberate shell fault in the
   * simulator's own tests). The mirror follows the disk, so the durability check can see it.
   */
  observeDiskLoss(node: NodeId, lastIndex: number, hardState: HardState): void {
    const mirror = this.mirror(node);
    for (let i = lastIndex + 1; i <= mirror.lastIndex; i++) mirror.chain.delete(i);
    mirror.lastIndex = lastIndex;
    mirror.hardState = { ...hardState };
  }

  /** Every committed entry must survive in a quorum of persisted logs. */
  checkDurability(): void {
    if (this.committedMax === 0 || !this.checkDurabilityEnabled) return;
    this.checks++;
    const committed = this.committedChain.get(this.committedMax);
    let holders = 0;
    for (const voter of this.voters) {
      const mirror = this.mirror(voter);
      if (mirror.snapshotIndex >= this.committedMax) holders++;
      else if (committed !== undefined && mirror.chain.get(this.committedMax) === committed) holders++;
    }
    const quorum = Math.floor(this.voters.length / 2) + 1;
    if (holders < quorum) {
      throw new InvariantViolation(
        "durability",
        `committed index ${this.committedMax} is persisted on ${holders} nodes, quorum is ${quorum}`,
      );
    }
  }

  /** A node applied an entry to its state machine. */
  observeApply(node: NodeId, entry: Entry): void {
    this.checks++;
    const fingerprint = entryFingerprint(entry);
    const existing = this.appliedEntries.get(entry.index);
    if (existing === undefined) this.appliedEntries.set(entry.index, fingerprint);
    else if (existing !== fingerprint) {
      throw new InvariantViolation(
        "state-machine safety",
        `${node} applied a different entry at index ${entry.index}`,
      );
    }
    // An entry may be applied only once committed: the node's persisted commit must cover it,
    // and its persisted log must hold the committed entry there.
    const mirror = this.mirror(node);
    if (entry.index > mirror.hardState.commit) {
      throw new InvariantViolation(
        "state-machine safety",
        `${node} applied index ${entry.index} beyond its persisted commit ${mirror.hardState.commit}`,
      );
    }
    const own = mirror.chain.get(entry.index);
    const committed = this.committedChain.get(entry.index);
    if (own !== undefined && committed !== undefined && own !== committed) {
      throw new InvariantViolation(
        "state-machine safety",
        `${node} applied index ${entry.index} off the committed chain`,
      );
    }
  }

  /** A node's state machine, at `index`, serialized; equal indices must give equal bytes. */
  observeStateMachine(node: NodeId, index: number, snapshotBytes: Uint8Array): void {
    this.checks++;
    const fingerprint = new TraceHash().addBytes(snapshotBytes).hex();
    const existing = this.stateAt.get(index);
    if (existing === undefined) this.stateAt.set(index, fingerprint);
    else if (existing !== fingerprint) {
      throw new InvariantViolation(
        "state-machine safety",
        `${node}'s state at index ${index} differs from another node's`,
      );
    }
  }

  private mirror(node: NodeId): NodeMirror {
    const mirror = this.mirrors.get(node);
    if (mirror === undefined) throw new Error(`safety checker: unknown node ${node}`);
    return mirror;
  }

  private persistSnapshot(node: NodeId, mirror: NodeMirror, snapshot: Snapshot): void {
    const { index, term } = snapshot.metadata;
    this.checks++;
    const fingerprint = this.chainByIndexTerm.get(`${index}:${term}`);
    if (fingerprint === undefined) {
      throw new InvariantViolation(
        "log matching",
        `${node} installed a snapshot at (${index}, term ${term}) no node ever persisted`,
      );
    }
    const committed = this.committedChain.get(index);
    if (committed !== undefined && committed !== fingerprint) {
      throw new InvariantViolation(
        "committed prefix",
        `${node} installed a snapshot at ${index} off the committed chain`,
      );
    }
    mirror.chain = new Map([[index, fingerprint]]);
    mirror.lastIndex = index;
    mirror.snapshotIndex = index;
  }

  private persistEntries(node: NodeId, mirror: NodeMirror, entries: readonly Entry[]): void {
    const first = entries[0] as Entry;
    let previous = mirror.chain.get(first.index - 1);
    if (previous === undefined) {
      // Entries at or below the snapshot are ignored by storage; a gap above it is a core bug.
      if (first.index <= mirror.snapshotIndex) {
        const skip = mirror.snapshotIndex - first.index + 1;
        if (skip >= entries.length) return;
        this.persistEntries(node, mirror, entries.slice(skip));
        return;
      }
      throw new InvariantViolation(
        "log matching",
        `${node} persisted index ${first.index} after last index ${mirror.lastIndex}`,
      );
    }
    const replaced = new Map<number, string>();
    for (let i = first.index; i <= mirror.lastIndex; i++) {
      const old = mirror.chain.get(i);
      if (old !== undefined) replaced.set(i, old);
      mirror.chain.delete(i);
    }
    for (const [offset, entry] of entries.entries()) {
      if (entry.index !== first.index + offset) {
        throw new InvariantViolation(
          "log matching",
          `${node} persisted a non-contiguous batch at ${entry.index}`,
        );
      }
      const fingerprint = chainHash(previous, entry.term, entry.type, entry.data);
      this.checks++;
      const key = `${entry.index}:${entry.term}`;
      const seen = this.chainByIndexTerm.get(key);
      if (seen === undefined) this.chainByIndexTerm.set(key, fingerprint);
      else if (seen !== fingerprint) {
        throw new InvariantViolation(
          "log matching",
          `${node} holds (${entry.index}, term ${entry.term}) with a prefix different from another node's`,
        );
      }
      mirror.chain.set(entry.index, fingerprint);
      previous = fingerprint;
    }
    mirror.lastIndex = (entries[entries.length - 1] as Entry).index;
    // A committed entry the node held must still be there, unchanged (a leader never sends a
    // conflicting one, and a stale or duplicated append must not truncate the log).
    for (const [index, old] of replaced) {
      if (this.committedChain.get(index) === old && mirror.chain.get(index) !== old) {
        throw new InvariantViolation(
          "committed prefix",
          `${node} ${mirror.chain.has(index) ? "overwrote" : "truncated"} committed index ${index}`,
        );
      }
    }
  }

  private persistHardState(node: NodeId, mirror: NodeMirror, next: HardState): void {
    const previous = mirror.hardState;
    this.checks++;
    if (next.term < previous.term) {
      throw new InvariantViolation(
        "vote safety",
        `${node} persisted term ${next.term} after ${previous.term}`,
      );
    }
    if (next.term === previous.term && previous.vote !== "" && next.vote !== previous.vote) {
      throw new InvariantViolation(
        "vote safety",
        `${node} changed its vote in term ${next.term} from ${previous.vote} to ${next.vote || "(none)"}`,
      );
    }
    if (next.commit < previous.commit) {
      throw new InvariantViolation(
        "committed prefix",
        `${node} persisted commit ${next.commit} after ${previous.commit}`,
      );
    }
    if (next.commit > mirror.lastIndex) {
      throw new InvariantViolation(
        "committed prefix",
        `${node} persisted commit ${next.commit} past its last index ${mirror.lastIndex}`,
      );
    }
    mirror.hardState = { ...next };
    this.recordCommitted(node, mirror, next.commit);
    if ((this.committedInTerm.get(next.term) ?? 0) < next.commit)
      this.committedInTerm.set(next.term, next.commit);
  }

  private recordCommitted(node: NodeId, mirror: NodeMirror, commit: number): void {
    if (commit === 0) return;
    const own = mirror.chain.get(commit);
    if (own === undefined) return; // below the node's snapshot: covered when the snapshot was installed
    this.checks++;
    const committed = this.committedChain.get(commit);
    if (committed !== undefined) {
      if (committed !== own)
        throw new InvariantViolation("committed prefix", `${node} commits a different entry at ${commit}`);
      return;
    }
    if (commit > this.committedMax) {
      // Extend the committed chain from this node's log; it must pass through the old tip.
      const tip = this.committedChain.get(this.committedMax);
      const ownAtTip = mirror.chain.get(this.committedMax);
      if (tip !== undefined && ownAtTip !== undefined && tip !== ownAtTip) {
        throw new InvariantViolation(
          "committed prefix",
          `${node} commits ${commit} on a log that diverges from the committed entry ${this.committedMax}`,
        );
      }
      for (let i = this.committedMax + 1; i <= commit; i++) {
        const fingerprint = mirror.chain.get(i);
        if (fingerprint !== undefined) this.committedChain.set(i, fingerprint);
      }
      this.committedMax = commit;
    } else {
      // Below the tip but not recorded (the tip came through a snapshot): fill from this node.
      this.committedChain.set(commit, own);
    }
  }
}
