// The seeded deterministic simulator (after TigerBeetle's VOPR and FoundationDB's simulation):
// N Raft nodes, a faulty network, crashes that keep only what was persisted, and clients that
// record a history. One virtual millisecond per loop turn; all randomness from the seed.
//
// A run has two phases. Chaos: faults strike and clients issue requests; safety is checked after
// every step. Heal: the network calms, every node restarts, clients stop issuing; the cluster
// must elect a leader and bring every node to the same applied state within a bound (liveness),
// every acknowledged request must be applied everywhere, and the history must be linearizable.

import type { ConfChange, ConfState, Entry, Message, NodeId, Ready, Snapshot } from "../../src/raft/types.js";
import { ConfChangeType, MessageType } from "../../src/raft/types.js";
import { decodeKvCommand, type KvResult } from "../../src/statemachine/kv.js";
import { checkLinearizable, formatCheckResult, kvModel, type Verdict } from "../linearizability/index.js";
import { describeConfig, type SimConfig } from "./config.js";
import { TraceHash } from "./hash.js";
import { InvariantViolation, SafetyChecker } from "./invariants.js";
import { CALM_NETWORK, SimNetwork } from "./network.js";
import { type CrashPoint, type NodeEvents, SimNode } from "./node.js";
import { Prng } from "./prng.js";
import { type ClientPort, History, SimClient, type WorkloadStats } from "./workload.js";

export interface SimResult {
  seed: number;
  ok: boolean;
  /** What failed: a safety property, "liveness", "linearizability" or "crash" (an exception). */
  failure?: { property: string; message: string };
  /** Fingerprint of every event of the run; equal seeds must give equal hashes. */
  traceHash: string;
  /** Virtual ms simulated, and from heal to convergence. */
  virtualMs: number;
  convergedAfterHealMs: number;
  linearizability: Verdict;
  stats: {
    messages: number;
    dropped: number;
    duplicated: number;
    crashes: number;
    restarts: number;
    partitions: number;
    /** Distinct membership-change entries applied, nodes that joined, nodes removed. */
    confChangesCommitted: number;
    joins: number;
    removals: number;
    transfers: number;
    pauses: number;
    leaders: number;
    committed: number;
    snapshotsInstalled: number;
    safetyChecks: number;
    operations: number;
    workload: WorkloadStats;
  };
  /** A readable report on failure: scenario, replay command, the last events. */
  report?: string;
}

export interface SimOptions {
  /** Keep every trace line (for replays), not only the last ones. */
  fullTrace?: boolean;
  /** Called with each trace line as it happens (replay tooling). */
  onTrace?: (line: string) => void;
}

const TRACE_TAIL = 80;
/**
 * Average messages per virtual ms beyond which a run fails: normal runs send a few per ms, and
 * a core whose flow control lets responses multiply would otherwise run for minutes.
 */
const MESSAGES_PER_MS_MAX = 40;

/** The command that replays a seed; printed with every failure. */
export function replayCommand(seed: number): string {
  return `CFN_SIM_SEED=${seed} npx vitest run test/raft/simulation.test.ts`;
}

class Run {
  private now = 0;
  private readonly faultPrng: Prng;
  private readonly network: SimNetwork;
  private readonly nodes: SimNode[] = [];
  private readonly byId = new Map<NodeId, SimNode>();
  private readonly checker: SafetyChecker;
  private readonly history = new History();
  private readonly clients = new Map<string, SimClient>();
  private readonly trace = new TraceHash();
  private readonly tail: string[] = [];
  private readonly downUntil = new Map<NodeId, number>();
  /** Transport reports (unreachable peer, snapshot outcome) delivered on the next turn. */
  private reports: (() => void)[] = [];
  private healed = false;
  private healedAt = 0;
  /** Nodes that run (or restart after a crash); spares join through membership changes. */
  private readonly active = new Set<NodeId>();
  private readonly spares: SimNode[] = [];
  /** Nodes a committed change removes, until they leave the configuration (after a joint phase). */
  private readonly removing = new Set<NodeId>();
  private maxAckIndex = 0;
  private readonly workloadStats: WorkloadStats = {
    issued: 0,
    acknowledged: 0,
    unknown: 0,
    retries: 0,
    refused: 0,
  };
  private readonly stats = {
    crashes: 0,
    restarts: 0,
    partitions: 0,
    snapshotsInstalled: 0,
    confChangesCommitted: 0,
    joins: 0,
    removals: 0,
    transfers: 0,
    pauses: 0,
  };
  private readonly confChangeIndices = new Set<number>();
  private readonly pauseStarted = new Map<NodeId, number>();

  constructor(
    private readonly config: SimConfig,
    private readonly options: SimOptions,
  ) {
    const root = new Prng(config.seed);
    this.faultPrng = root.fork("faults");
    this.network = new SimNetwork(root.fork("network"), { ...config.network }, (message) => {
      // A snapshot goes over a stream: its sender learns that it failed. Other losses are silent.
      if (message.type !== MessageType.Snap) return;
      const sender = this.byId.get(message.from);
      if (sender !== undefined) this.reports.push(() => sender.reportSnapshot(message.to, false));
    });
    const ids = Array.from({ length: config.nodeCount }, (_, i) => `n${i + 1}`);
    const spares = Array.from({ length: config.spareCount }, (_, i) => `n${config.nodeCount + i + 1}`);
    // With membership changes the quorum moves; the durability check then stays off (see invariants.ts).
    this.checker = new SafetyChecker(ids, [...ids, ...spares], !config.faults.membership);
    const events = this.nodeEvents();
    for (const id of [...ids, ...spares]) {
      const drift = 1 + (root.fork(`drift-${id}`).float() - 0.5) * 2 * config.clockDriftMax;
      const node = new SimNode(
        id,
        () => ({ id, ...config.raft }),
        root.fork(`raft-${id}`),
        events,
        config.snapshot,
        Math.max(1, Math.round(config.tickIntervalMs * drift)),
      );
      node.shellFault = config.shellFault;
      this.nodes.push(node);
      this.byId.set(id, node);
      if (spares.includes(id)) {
        this.spares.push(node);
      } else {
        node.bootstrap(ids);
        this.active.add(id);
      }
    }
    this.checker.bootstrap(ids, 1, 1, 1);
    for (const node of this.nodes) if (this.active.has(node.id)) node.start();
    const workloadPrng = root.fork("workload");
    for (let i = 0; i < config.workload.clients; i++) {
      const id = `c${i + 1}`;
      this.clients.set(id, new SimClient(id, workloadPrng.fork(id), config.workload, this.history, 0));
    }
  }

  execute(): SimResult {
    const { config } = this;
    let failure: SimResult["failure"];
    let linearizability: Verdict = "ok";
    let convergedAfterHealMs = -1;
    try {
      const deadline = config.chaosMs + config.livenessMaxMs;
      for (;;) {
        this.turn();
        if (this.healed && this.now % 5 === 0 && this.converged()) {
          convergedAfterHealMs = this.now - this.healedAt;
          break;
        }
        if (this.now >= deadline) {
          throw new InvariantViolation("liveness", this.livenessReport());
        }
        this.now++;
      }
      for (const client of this.clients.values()) client.finish(this.workloadStats);
      const result = checkLinearizable(kvModel, this.history.operations, { stepsMaxPerPartition: 500_000 });
      linearizability = result.verdict;
      if (result.verdict === "illegal") {
        throw new InvariantViolation("linearizability", formatCheckResult(kvModel, result));
      }
    } catch (error) {
      if (error instanceof InvariantViolation) failure = { property: error.property, message: error.message };
      else {
        const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
        failure = { property: "crash", message: text };
      }
    }
    const network = this.network.stats;
    const result: SimResult = {
      seed: config.seed,
      ok: failure === undefined,
      traceHash: this.trace.hex(),
      virtualMs: this.now,
      convergedAfterHealMs,
      linearizability,
      stats: {
        messages: network.sent,
        dropped: network.dropped + network.blocked,
        duplicated: network.duplicated,
        ...this.stats,
        leaders: this.checker.leaders().size,
        committed: this.checker.committedIndex,
        safetyChecks: this.checker.checks,
        operations: this.history.operations.length,
        workload: this.workloadStats,
      },
    };
    if (failure !== undefined) {
      result.failure = failure;
      result.report = [
        `simulation seed ${config.seed} failed: ${failure.property}`,
        failure.message,
        `scenario: ${describeConfig(config)}`,
        `at virtual ms ${this.now}${this.healed ? ` (healed at ${this.healedAt})` : ""}`,
        `replay: ${replayCommand(config.seed)}`,
        "last events:",
        ...this.tail.map((line) => `  ${line}`),
      ].join("\n");
    }
    return result;
  }

  // --- one virtual millisecond ---

  private turn(): void {
    const now = this.now;
    if (!this.healed && now >= this.config.chaosMs) this.heal();
    if (!this.healed) this.maybeFault();
    this.restartDue();

    const reports = this.reports;
    this.reports = [];
    for (const report of reports) report();

    this.resumeDue();
    const held: Message[] = [];
    for (
      let message = this.network.nextDue(now);
      message !== undefined;
      message = this.network.nextDue(now)
    ) {
      const target = this.byId.get(message.to);
      if (target?.up && target.pausedUntil > now) held.push(message);
      else this.deliver(message);
    }
    // A paused process reads its socket when it wakes up: in order, at once.
    for (const message of held) this.network.hold(message, this.byId.get(message.to)?.pausedUntil ?? now);
    for (const node of this.nodes) {
      if (node.up && node.pausedUntil <= now && now % node.tickIntervalMs === node.tickPhaseMs) node.tick();
    }
    if (now % 100 === 0 && this.network.stats.sent > MESSAGES_PER_MS_MAX * (now + 100)) {
      throw new InvariantViolation(
        "flow control",
        `${this.network.stats.sent} messages sent in ${now} virtual ms (limit ${MESSAGES_PER_MS_MAX}/ms): a message storm`,
      );
    }
    const port = this.clientPort();
    for (const client of this.clients.values()) client.act(now, port, !this.healed, this.workloadStats);
    this.handleReadys();
  }

  private deliver(message: Message): void {
    const target = this.byId.get(message.to);
    const sender = this.byId.get(message.from);
    if (target === undefined || !target.up) {
      if (sender !== undefined) this.reportLost(sender, message);
      return;
    }
    this.record(
      `deliver ${message.from}>${message.to} ${message.type} t${message.term} i${message.index} e${message.entries.length} c${message.commit}${message.reject ? ` reject hint ${message.rejectHint}` : ""}`,
    );
    target.deliver(message);
    if (message.type === MessageType.Snap && message.snapshotChunk?.last !== false && sender !== undefined) {
      this.reports.push(() => sender.reportSnapshot(message.to, true));
    }
  }

  /** The transport tells the sender what it lost, as a real one notices a broken connection. */
  private reportLost(sender: SimNode, message: Message): void {
    if (message.type === MessageType.Snap) this.reports.push(() => sender.reportSnapshot(message.to, false));
    else if (message.type === MessageType.App) this.reports.push(() => sender.reportUnreachable(message.to));
  }

  private handleReadys(): void {
    // Messages a Ready sends go through the network (never delivered in this turn), so a few
    // passes settle every node; the bound guards against a core that never stops producing.
    for (let pass = 0; pass < 8; pass++) {
      let any = false;
      for (const node of this.nodes) {
        if (node.pausedUntil > this.now || !node.hasReady()) continue;
        any = true;
        const crashPoint = node.crashAt;
        const survived = node.handleReady();
        if (!survived) {
          this.record(`crash ${node.id} ${crashPoint ?? ""}`);
          this.markDown(node);
          continue;
        }
        const status = node.status();
        if (status !== undefined) {
          this.checker.observeRole(node.id, status.term, status.isLeader);
          if (status.isLeader) this.checker.checkLeaderCompleteness(node.id, status.term);
        }
      }
      if (!any) return;
    }
  }

  private nodeEvents(): NodeEvents {
    return {
      persisted: (node: SimNode, ready: Ready) => {
        this.checker.observePersist(node.id, ready.snapshot, ready.entries, ready.hardState);
        this.checker.checkDurability();
        if (ready.hardState !== undefined || ready.entries.length > 0) {
          const hs = ready.hardState;
          const last = ready.entries[ready.entries.length - 1];
          this.record(
            `persist ${node.id}${hs ? ` hs=${hs.term}/${hs.vote || "-"}/${hs.commit}` : ""}${last ? ` entries->${last.index}@${last.term}` : ""}`,
          );
        }
      },
      send: (message: Message) => {
        this.network.send(message, this.now);
      },
      applied: (node: SimNode, entry: Entry, result: KvResult | undefined, proposedHere: boolean) => {
        this.checker.observeApply(node.id, entry);
        if (!proposedHere || result === undefined) return;
        const command = decodeKvCommand(entry.data);
        if (command === undefined) return;
        const client = this.clients.get(command.clientId);
        if (client === undefined) return;
        this.maxAckIndex = Math.max(this.maxAckIndex, entry.index);
        this.record(`answer ${node.id} ${command.clientId}#${command.requestId} @${entry.index}`);
        client.onResult(this.now, command.requestId, result, this.workloadStats);
      },
      restored: (node: SimNode, snapshot: Snapshot) => {
        this.stats.snapshotsInstalled++;
        this.record(`restore ${node.id} snapshot@${snapshot.metadata.index}`);
        this.checker.observeStateMachine(node.id, snapshot.metadata.index, node.stateMachineSnapshot());
      },
      readServed: (node: SimNode, clientId: string, requestId: number, value: string | null) => {
        this.record(`read ${node.id} ${clientId}#${requestId} = ${value}`);
        this.clients.get(clientId)?.onRead(this.now, requestId, value, this.workloadStats);
      },
      confChanged: (node: SimNode, change: ConfChange, conf: ConfState) => {
        const index = node.appliedIndex;
        if (!this.confChangeIndices.has(index)) {
          this.confChangeIndices.add(index);
          this.stats.confChangesCommitted++;
        }
        this.record(
          `conf ${node.id} voters=${conf.voters.join(",")} learners=${conf.learners.join(",")}${conf.votersOutgoing.length > 0 ? ` outgoing=${conf.votersOutgoing.join(",")}` : ""}`,
        );
        for (const single of change.changes) {
          if (single.type === ConfChangeType.RemoveNode) this.removing.add(single.nodeId);
        }
        // A removed node leaves once no part of the configuration (joint included) names it.
        for (const id of this.removing) {
          const named =
            conf.voters.includes(id) ||
            conf.learners.includes(id) ||
            conf.votersOutgoing.includes(id) ||
            conf.learnersNext.includes(id);
          if (!named) {
            this.removing.delete(id);
            this.decommission(id);
          }
        }
      },
      diskLost: (node: SimNode, lastIndex: number) => {
        this.record(`disk of ${node.id} lost its tail after ${lastIndex}`);
        this.checker.observeDiskLoss(node.id, lastIndex, node.storage.initialState().hardState);
        this.checker.checkDurability();
      },
      snapshotTaken: (node: SimNode, index: number, data: Uint8Array) => {
        this.record(`snapshot ${node.id} @${index}`);
        this.checker.observeStateMachine(node.id, index, data);
      },
    };
  }

  private clientPort(): ClientPort {
    return {
      propose: (node, command) => {
        const target = this.byId.get(node);
        // A paused process accepts the connection but never answers: the request is lost.
        if (target?.up && target.pausedUntil > this.now) return true;
        const accepted = target?.propose(command) ?? false;
        this.record(
          `propose ${node} ${command.clientId}#${command.requestId} ${command.op} ${accepted ? "" : "refused"}`,
        );
        return accepted;
      },
      read: (node, clientId, requestId, attempt, key) => {
        const target = this.byId.get(node);
        if (target?.up && target.pausedUntil > this.now) return true;
        const accepted = this.byId.get(node)?.read(clientId, requestId, attempt, key) ?? false;
        this.record(`readindex ${node} ${clientId}#${requestId} ${accepted ? "" : "refused"}`);
        return accepted;
      },
      liveNodes: () => this.nodes.filter((n) => n.up).map((n) => n.id),
    };
  }

  // --- faults ---

  private maybeFault(): void {
    const prng = this.faultPrng;
    const faults = this.config.faults;
    if (!prng.chance(1 / faults.meanIntervalMs)) return;
    const kinds: string[] = ["weather"];
    if (faults.crashes) kinds.push("crash", "crash");
    if (faults.partitions) kinds.push("split", "isolate", "oneway", "heal");
    if (faults.membership) kinds.push("membership", "membership", "transfer");
    if (faults.pauses) kinds.push("pause");
    const kind = prng.pick(kinds);
    const up = this.nodes.filter((n) => n.up);
    switch (kind) {
      case "crash": {
        if (up.length === 0) return;
        const node = prng.pick(up);
        const point = prng.pick<CrashPoint | "now">([
          "now",
          "now",
          "before-persist",
          "after-persist",
          "after-send",
        ]);
        if (point === "now") {
          node.crash();
          this.record(`crash ${node.id} between readys`);
          this.markDown(node);
        } else {
          node.crashAt = point; // strikes inside its next Ready
        }
        return;
      }
      case "split": {
        const shuffled = prng.shuffle(this.nodes.map((n) => n.id));
        const cut = prng.range(1, shuffled.length - 1);
        this.network.split([shuffled.slice(0, cut), shuffled.slice(cut)]);
        this.stats.partitions++;
        this.record(`partition ${this.network.describePartition()}`);
        return;
      }
      case "isolate": {
        // Prefer the leader: cutting it off is what forces elections.
        const leader = this.nodes.find((n) => n.status()?.isLeader);
        const victim = leader !== undefined && prng.chance(0.7) ? leader.id : prng.pick(this.nodes).id;
        this.network.split([[victim], this.nodes.map((n) => n.id).filter((id) => id !== victim)]);
        this.stats.partitions++;
        this.record(`isolate ${victim}`);
        return;
      }
      case "oneway": {
        const from = prng.pick(this.nodes).id;
        const to = prng.pick(this.nodes.filter((n) => n.id !== from)).id;
        this.network.block(from, to);
        this.stats.partitions++;
        this.record(`block ${from}>${to}`);
        return;
      }
      case "membership":
        this.changeMembership(prng);
        return;
      case "pause": {
        const running = up.filter((n) => n.pausedUntil <= this.now);
        if (running.length === 0) return;
        const leader = running.find((n) => n.status()?.isLeader);
        const node = leader !== undefined && prng.chance(0.5) ? leader : prng.pick(running);
        const electionMs = this.config.raft.electionTimeoutTicks * this.config.tickIntervalMs;
        node.pausedUntil = this.now + prng.range(5, 3 * electionMs);
        this.pauseStarted.set(node.id, this.now);
        this.stats.pauses++;
        this.record(`pause ${node.id} until ${node.pausedUntil}`);
        return;
      }
      case "transfer": {
        const leader = up.find((n) => n.status()?.isLeader);
        const voters = leader?.configuration()?.voters.filter((id) => id !== leader.id) ?? [];
        if (leader === undefined || voters.length === 0) return;
        const to = prng.pick(voters);
        leader.transferLeader(to);
        this.stats.transfers++;
        this.record(`transfer leadership ${leader.id} -> ${to}`);
        return;
      }
      case "heal":
        this.network.heal();
        this.record("heal partitions");
        return;
      default: {
        // Weather: a burst of loss or calm, within the scenario's maxima.
        const base = this.config.network;
        this.network.faults = {
          ...base,
          dropRate: base.dropRate * prng.pick([0, 0.5, 1, 2]),
          duplicateRate: base.duplicateRate * prng.pick([0, 1, 2]),
        };
        this.record(`weather drop=${this.network.faults.dropRate} dup=${this.network.faults.duplicateRate}`);
      }
    }
  }

  /**
   * Proposes one membership change on the leader: add a spare as learner or voter, promote a
   * learner, remove a voter or learner, or replace a voter through a joint configuration.
   */
  private changeMembership(prng: Prng): void {
    const leader = this.nodes.find((n) => n.status()?.isLeader);
    const conf = leader?.configuration();
    if (leader === undefined || conf === undefined || conf.votersOutgoing.length > 0) return;
    const spare = this.spares[0];
    const options: string[] = [];
    if (spare !== undefined) options.push("add-learner", "add-voter");
    if (conf.learners.length > 0) options.push("promote", "remove-learner");
    if (conf.voters.length > 3) options.push("remove-voter");
    if (spare !== undefined && conf.voters.length >= 3) options.push("replace");
    if (options.length === 0) return;
    const option = prng.pick(options);
    let change: ConfChange;
    let joining: SimNode | undefined;
    switch (option) {
      case "add-learner":
        joining = spare;
        change = {
          changes: [{ type: ConfChangeType.AddLearner, nodeId: spare?.id ?? "" }],
          transition: "auto",
        };
        break;
      case "add-voter":
        joining = spare;
        change = {
          changes: [{ type: ConfChangeType.AddVoter, nodeId: spare?.id ?? "" }],
          transition: "auto",
        };
        break;
      case "promote":
        change = {
          changes: [{ type: ConfChangeType.AddVoter, nodeId: prng.pick(conf.learners) }],
          transition: "auto",
        };
        break;
      case "remove-learner":
        change = {
          changes: [{ type: ConfChangeType.RemoveNode, nodeId: prng.pick(conf.learners) }],
          transition: "auto",
        };
        break;
      case "remove-voter":
        change = {
          changes: [{ type: ConfChangeType.RemoveNode, nodeId: prng.pick(conf.voters) }],
          transition: "auto",
        };
        break;
      default:
        joining = spare;
        change = {
          changes: [
            { type: ConfChangeType.AddVoter, nodeId: spare?.id ?? "" },
            { type: ConfChangeType.RemoveNode, nodeId: prng.pick(conf.voters) },
          ],
          transition: "auto",
        };
    }
    // A joining node starts empty, as `cfn join` would; it learns everything from the leader.
    if (joining !== undefined) {
      this.spares.shift();
      this.stats.joins++;
      this.active.add(joining.id);
      joining.start();
    }
    const accepted = leader.proposeConfChange(change);
    this.record(
      `membership ${option} ${change.changes.map((c) => `${c.type}:${c.nodeId}`).join(",")} ${accepted ? "" : "refused"}`,
    );
    if (!accepted && joining !== undefined) {
      // Never a member: back to the pool (it has done nothing yet).
      joining.crash();
      this.active.delete(joining.id);
      this.stats.joins--;
      this.spares.unshift(joining);
    }
  }

  /**
   * Wakes paused nodes whose pause is over. The shell catches up on time first: one tick per
   * tick interval that passed while paused (as a shell driven by a monotonic clock would), so
   * the core's tick-based clock — which lease reads trust — does not fall behind.
   */
  private resumeDue(): void {
    for (const node of this.nodes) {
      if (node.pausedUntil === 0 || node.pausedUntil > this.now) continue;
      const pausedFor = this.now - (this.pauseStarted.get(node.id) ?? this.now);
      node.pausedUntil = 0;
      if (!node.up) continue;
      const missed = Math.floor(pausedFor / node.tickIntervalMs);
      for (let i = 0; i < missed; i++) node.tick();
      this.record(`resume ${node.id} after ${pausedFor}ms, ${missed} ticks`);
    }
  }

  /** A removed node is shut down for good (its id is never reused). */
  private decommission(id: NodeId): void {
    const node = this.byId.get(id);
    if (node === undefined || !this.active.has(id)) return;
    this.active.delete(id);
    this.stats.removals++;
    if (node.up) node.crash();
    this.record(`decommission ${id}`);
  }

  private markDown(node: SimNode): void {
    this.stats.crashes++;
    const downFor = this.faultPrng.range(1, this.config.faults.downMaxMs);
    this.downUntil.set(node.id, this.now + downFor);
  }

  private restartDue(): void {
    for (const node of this.nodes) {
      if (node.up || !this.active.has(node.id)) continue;
      const until = this.downUntil.get(node.id) ?? 0;
      if (!this.healed && this.now < until) continue;
      node.start();
      node.tickPhaseMs = this.faultPrng.int(node.tickIntervalMs);
      this.stats.restarts++;
      this.record(
        `restart ${node.id} from disk (snapshot@${node.storage.snapshot().metadata.index}, last ${node.storage.lastIndex()})`,
      );
    }
  }

  private heal(): void {
    this.healed = true;
    this.healedAt = this.now;
    this.network.heal();
    this.network.faults = { ...CALM_NETWORK };
    for (const node of this.nodes) {
      node.crashAt = undefined;
      if (node.pausedUntil > this.now) node.pausedUntil = this.now; // resumes this turn
    }
    this.record("heal: network calm, all nodes restart, clients stop issuing");
  }

  // --- liveness ---

  private converged(): boolean {
    let leader: SimNode | undefined;
    let leaderTerm = -1;
    for (const node of this.nodes) {
      const status = node.status();
      if (status?.isLeader && status.term > leaderTerm) {
        leader = node;
        leaderTerm = status.term;
      }
    }
    if (leader === undefined) return false;
    const leaderStatus = leader.status();
    const conf = leader.configuration();
    if (leaderStatus === undefined || conf === undefined) return false;
    // A joint configuration with autoLeave must have been left.
    if (conf.votersOutgoing.length > 0) return false;
    const lastIndex = leader.lastIndex();
    if (leaderStatus.commit !== lastIndex) return false;
    const members = [...conf.voters, ...conf.learners].map((id) => this.byId.get(id) as SimNode);
    for (const node of members) {
      const status = node.status();
      if (status === undefined || status.term !== leaderStatus.term || status.leader !== leader.id) {
        return false;
      }
      if (node.appliedIndex !== lastIndex) return false;
    }
    for (const client of this.clients.values()) if (client.busy) return false;
    // Every member applied the same entries: their state machines must be byte-identical, and
    // every acknowledged request sits at or below the common applied index.
    for (const node of members) {
      this.checker.observeStateMachine(node.id, lastIndex, node.stateMachineSnapshot());
    }
    if (this.maxAckIndex > lastIndex) {
      throw new InvariantViolation(
        "liveness",
        `acknowledged index ${this.maxAckIndex} above the applied ${lastIndex}`,
      );
    }
    return true;
  }

  private livenessReport(): string {
    const lines = [`no convergence within ${this.config.livenessMaxMs}ms of healing`];
    for (const node of this.nodes) {
      const s = node.status();
      lines.push(
        `  ${node.id}: ${s === undefined ? "down" : `term ${s.term} ${s.isLeader ? "leader" : `follower of ${s.leader || "?"}`} commit ${s.commit}`} applied ${node.appliedIndex} last ${node.lastIndex()} snapshot ${node.storage.snapshot().metadata.index} first ${node.storage.firstIndex()}`,
      );
      if (s?.isLeader) lines.push(`    progress: ${node.progressReport()}`);
    }
    const busy = [...this.clients.entries()].filter(([, c]) => c.busy).map(([id]) => id);
    if (busy.length > 0) lines.push(`  clients still waiting: ${busy.join(", ")}`);
    return lines.join("\n");
  }

  // --- trace ---

  private record(line: string): void {
    const stamped = `${this.now} ${line}`;
    this.trace.addString(stamped);
    if (this.options.onTrace) this.options.onTrace(stamped);
    this.tail.push(stamped);
    if (!this.options.fullTrace && this.tail.length > TRACE_TAIL) this.tail.shift();
  }
}

/** Runs one seeded simulation. Never throws: failures come back in the result. */
export function runSimulation(config: SimConfig, options: SimOptions = {}): SimResult {
  return new Run(config, options).execute();
}
