// Swarm coordination on a cluster node (docs/COORDINATION.md, "On a cluster"). Every node runs one
// ClusterCoordination; what it does follows the replicated routing state:
//   - a swarm is defined by the policy `swarm.<name>` = {topology, limits?} (SwarmDefinition);
//   - each team coordinator runs on the node the Raft leader assigned to the team
//     (`<swarm>.<team>` in the routing state), and registers its agent id there, so workers'
//     replies and the master's messages reach it wherever it moved;
//   - the Raft leader's node runs the master (and depth-3 group coordinators): it takes round
//     requests from the `<swarm>.rounds` mailbox, runs them one at a time, and sends the result
//     to the requester; a new leader resumes the rounds found in the replicated checkpoints;
//   - checkpoints go through the Raft log (RaftCheckpointStore), so a moved coordinator or a new
//     master resumes from the same records;
//   - when a team coordinator moves, the master re-sends that subtree's assign (a resync).
// It uses only the node's public surface (CoordinationNode), so it can be tested with any node.

import type { Bus, Delivery, Mailbox } from "../bus/index.js";
import { isCfnError } from "../errors.js";
import { isValidId, type RoutingCommand } from "../node/routing/commands.js";
import { type Logger, silentLogger } from "../obs/logger.js";
import type { Metrics } from "../obs/metrics.js";
import { Coordinator } from "./coordinator.js";
import { Master, type RoundResult, roundRequestProblem } from "./master.js";
import type { RoundLimits, WorkerRef } from "./protocol.js";
import { RaftCheckpointStore, type ReplicatedRoutingLog } from "./raft-checkpoint-store.js";
import { type Plan, planTopology, type TopologySpec } from "./topology.js";
import {
  removeWithdrawnMailboxes,
  WITHDRAWN_SWEEP_INTERVAL_MS,
  WITHDRAWN_SWEEP_MS,
} from "./withdrawn-mailboxes.js";

/** What coordination needs from the cluster node it runs on. */
export interface CoordinationNode extends ReplicatedRoutingLog {
  readonly id: string;
  readonly bus: Bus;
  /** True while this node is the Raft leader (the master coordinator). */
  isLeader(): boolean;
  /**
   * True while this node knows a leader and keeps up with the routing log (its /readyz): only
   * then does it start coordinators the routing state places here — a node restarted on its data
   * dir first replays an old state, which may still place a team here that moved away.
   */
  isReady(): boolean;
}

/** A swarm as replicated in the routing state (policy `swarm.<name>`). */
export interface SwarmDefinition {
  topology: TopologySpec;
  limits?: Partial<RoundLimits>;
}

/** Message types of cluster rounds. */
export const ROUND_REQUEST = "cfn.round.request";
export const ROUND_RESULT = "cfn.round.result";

/** A request for a round, sent by anyone to `<swarm>.rounds` on any node. */
export interface RoundRequestPayload {
  /** [A-Za-z0-9_-]; idempotent: a round id already known is not started twice. */
  roundId: string;
  /** Agent that receives the `cfn.round.result` (RoundResult). */
  replyTo: string;
  input?: unknown;
  items?: unknown[];
  priority?: "high" | "normal" | "low";
  /** Deadline of the round, ms. */
  timeoutMs?: number;
  limits?: Partial<RoundLimits>;
}

export const swarmPolicyName = (swarm: string): string => `swarm.${swarm}`;
/** Team id in the routing state (cluster-unique): `<swarm>.<team>`. */
export const swarmTeamId = (swarm: string, team: string): string => `${swarm}.${team}`;
export const roundsAgentId = (swarm: string): string => `${swarm}.rounds`;

const ROUND_ID = /^[A-Za-z0-9_-]{1,100}$/;
/** Wait after the master's agent id routes to this node before resuming rounds, ms. */
const MASTER_SETTLE_MS = 200;
/** Longest a stopping swarm waits for its last checkpoints to commit, ms. */
const STOP_FLUSH_MS = 1_000;

export interface ClusterCoordinationOptions {
  node: CoordinationNode;
  logger?: Logger;
  metrics?: Metrics;
  /** How often placement is reconciled with the routing state, ms. Default 100. */
  reconcileIntervalMs?: number;
  /** How often coordinators check worker liveness, ms. Default 200. */
  livenessIntervalMs?: number;
  /** Round requests waiting (replicated) per swarm; more are refused. Default 100. */
  roundQueueMax?: number;
  /**
   * A worker counts as dead once its node has been down this long, ms. Default 1,500: a node
   * marked down for a moment (an event loop stalled under load) does not cost its workers' tasks.
   */
  workerDownGraceMs?: number;
  /** Round limits under each swarm's and each request's own (config coordination.*). */
  defaultLimits?: Partial<RoundLimits>;
  /** Deadline of a round whose request names none, ms. Default 30,000. */
  roundTimeoutMs?: number;
  /** RaftCheckpointStore pendingRecordsMax. Default 1,000. */
  checkpointPendingRecordsMax?: number;
}

/** One swarm's part on this node. */
interface SwarmRuntime {
  name: string;
  plan: Plan;
  definitionJson: string;
  store: RaftCheckpointStore;
  coordinators: Map<string, Coordinator>;
  master: Master | undefined;
  masterLoop: Promise<void> | undefined;
  requests: Mailbox | undefined;
  /** Last node seen hosting each top coordinator's agent (resync when it changes). */
  placements: Map<string, string | undefined>;
  /** Coordinator-only rounds seen at the previous reconcile (garbage after a master removal). */
  orphanRounds: Set<string>;
}

export class ClusterCoordination {
  private readonly node: CoordinationNode;
  private readonly logger: Logger;
  private readonly metrics: Metrics | undefined;
  private readonly reconcileIntervalMs: number;
  private readonly livenessIntervalMs: number;
  private readonly roundQueueMax: number;
  private readonly workerDownGraceMs: number;
  private readonly defaultLimits: Partial<RoundLimits>;
  private readonly roundTimeoutMs: number;
  private readonly checkpointPendingRecordsMax: number;
  /** Since when (local clock) each member has been down, as last reconciled. */
  private readonly downSinceMs = new Map<string, number>();
  private readonly swarms = new Map<string, SwarmRuntime>();
  private readonly registering = new Set<string>();
  private readonly badDefinitions = new Set<string>();
  /** Swarms whose policy went: their empty mailboxes on this bus are swept until `untilMs`. */
  private readonly withdrawn = new Map<string, { untilMs: number; ownIds: Set<string> }>();
  private lastSweepMs = 0;
  private timer: NodeJS.Timeout | undefined;
  private reconciling = false;
  private stopped = false;

  constructor(options: ClusterCoordinationOptions) {
    this.node = options.node;
    this.logger = (options.logger ?? silentLogger).child("cluster-coordination");
    this.metrics = options.metrics;
    this.reconcileIntervalMs = options.reconcileIntervalMs ?? 100;
    this.livenessIntervalMs = options.livenessIntervalMs ?? 200;
    this.roundQueueMax = options.roundQueueMax ?? 100;
    this.workerDownGraceMs = options.workerDownGraceMs ?? 1_500;
    this.defaultLimits = options.defaultLimits ?? {};
    this.roundTimeoutMs = options.roundTimeoutMs ?? 30_000;
    this.checkpointPendingRecordsMax = options.checkpointPendingRecordsMax ?? 1_000;
    for (const [name, value] of [
      ["reconcileIntervalMs", this.reconcileIntervalMs],
      ["livenessIntervalMs", this.livenessIntervalMs],
      ["roundQueueMax", this.roundQueueMax],
      ["roundTimeoutMs", this.roundTimeoutMs],
      ["checkpointPendingRecordsMax", this.checkpointPendingRecordsMax],
    ] as const) {
      if (!Number.isInteger(value) || value < 1)
        throw new Error(`invariant violated: ${name} must be a positive integer (got ${value})`);
    }
    if (!Number.isInteger(this.workerDownGraceMs) || this.workerDownGraceMs < 0)
      throw new Error(`invariant violated: workerDownGraceMs must be ≥ 0 (got ${this.workerDownGraceMs})`);
  }

  start(): void {
    this.timer = setInterval(() => void this.reconcile(), this.reconcileIntervalMs);
    this.timer.unref();
    void this.reconcile();
  }

  /** Stops every coordinator and the master on this node (their claims go back to the inboxes). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    for (const runtime of this.swarms.values()) await this.dropSwarm(runtime);
    this.swarms.clear();
  }

  /** Coordinator ids running on this node, per swarm (status, tests). */
  describe(): Array<{ swarm: string; coordinators: string[]; master: boolean; activeRounds: string[] }> {
    return [...this.swarms.values()].map((runtime) => ({
      swarm: runtime.name,
      coordinators: [...runtime.coordinators.keys()].sort(),
      master: runtime.master !== undefined,
      activeRounds: runtime.master?.activeRounds ?? [],
    }));
  }

  // ---- reconciling with the routing state -----------------------------------------------------

  private async reconcile(): Promise<void> {
    if (this.reconciling || this.stopped) return;
    this.reconciling = true;
    try {
      this.trackDownMembers();
      const definitions = this.definitions();
      for (const [name, runtime] of this.swarms) {
        const definition = definitions.get(name);
        if (!definition || JSON.stringify(definition) !== runtime.definitionJson) {
          await this.dropSwarm(runtime);
          this.swarms.delete(name);
          if (!definition) {
            if (this.node.isLeader()) this.withdrawSwarm(runtime);
            const ownIds = new Set([
              runtime.plan.master,
              roundsAgentId(name),
              ...runtime.plan.coordinators.map((c) => c.id),
            ]);
            this.withdrawn.set(name, { untilMs: Date.now() + WITHDRAWN_SWEEP_MS, ownIds });
          }
        }
      }
      this.sweepWithdrawn(definitions);
      const leader = this.node.isLeader();
      for (const [name, definition] of definitions) {
        let runtime = this.swarms.get(name);
        if (!runtime) {
          runtime = this.createSwarm(name, definition);
          if (!runtime) continue;
          this.swarms.set(name, runtime);
        }
        await this.placeCoordinators(runtime, leader);
        await this.placeMaster(runtime, leader);
        if (leader) this.collectOrphanRounds(runtime);
      }
    } catch (error) {
      this.logger.warn("coordination reconcile failed", { error });
    } finally {
      this.reconciling = false;
    }
  }

  /** Removes the empty mailboxes stopped swarms left on this node's bus (withdrawn-mailboxes.ts). */
  private sweepWithdrawn(definitions: Map<string, SwarmDefinition>): void {
    const nowMs = Date.now();
    if (this.withdrawn.size === 0 || nowMs - this.lastSweepMs < WITHDRAWN_SWEEP_INTERVAL_MS) return;
    this.lastSweepMs = nowMs;
    const bus = this.node.bus;
    for (const [name, sweep] of this.withdrawn) {
      if (definitions.has(name) || nowMs > sweep.untilMs) {
        this.withdrawn.delete(name);
        continue;
      }
      const { removed, left } = removeWithdrawnMailboxes(bus, name, {
        ownIds: sweep.ownIds,
        isRegistered: (agentId) => this.node.routingState.agents.has(agentId),
      });
      if (removed > 0)
        this.logger.debug("removed empty mailboxes of a stopped swarm", { swarm: name, removed });
      if (left === 0) this.withdrawn.delete(name);
    }
  }

  private definitions(): Map<string, SwarmDefinition> {
    const result = new Map<string, SwarmDefinition>();
    for (const [policy, value] of this.node.routingState.policies) {
      if (!policy.startsWith("swarm.")) continue;
      const definition = value as SwarmDefinition | null;
      if (definition && typeof definition === "object" && definition.topology)
        result.set(policy.slice("swarm.".length), definition);
    }
    return result;
  }

  private createSwarm(name: string, definition: SwarmDefinition): SwarmRuntime | undefined {
    let plan: Plan;
    try {
      plan = planTopology(definition.topology, { swarm: name });
    } catch (error) {
      if (!this.badDefinitions.has(name))
        this.logger.error("invalid swarm definition", { swarm: name, error });
      this.badDefinitions.add(name);
      return undefined;
    }
    return {
      name,
      plan,
      definitionJson: JSON.stringify(definition),
      store: new RaftCheckpointStore({
        log: this.node,
        scope: name,
        logger: this.logger,
        pendingRecordsMax: this.checkpointPendingRecordsMax,
      }),
      coordinators: new Map(),
      master: undefined,
      masterLoop: undefined,
      requests: undefined,
      placements: new Map(),
      orphanRounds: new Set(),
    };
  }

  private async dropSwarm(runtime: SwarmRuntime): Promise<void> {
    await this.stopMaster(runtime);
    for (const coordinator of runtime.coordinators.values()) await coordinator.stop();
    runtime.coordinators.clear();
    // Give the last checkpoints a moment to commit, but never hang a shutdown on a lost quorum.
    await Promise.race([
      runtime.store.flush(),
      new Promise((resolve) => setTimeout(resolve, STOP_FLUSH_MS).unref()),
    ]);
    runtime.store.close();
  }

  /**
   * A swarm whose policy was removed (`cfn swarm stop`): the leader removes what the cluster
   * registered for it — the master's and the coordinators' agents, `<swarm>.rounds`, its teams.
   */
  private withdrawSwarm(runtime: SwarmRuntime): void {
    const state = this.node.routingState;
    const commands: RoutingCommand[] = [];
    const own = [
      runtime.plan.master,
      roundsAgentId(runtime.name),
      ...runtime.plan.coordinators.map((c) => c.id),
    ];
    for (const agent of own) if (state.agents.has(agent)) commands.push({ op: "agent.remove", agent });
    for (const coordinator of runtime.plan.coordinators) {
      const team = swarmTeamId(runtime.name, coordinator.name);
      if (coordinator.leaf && state.teams.has(team)) commands.push({ op: "team.remove", team });
    }
    if (commands.length === 0) return;
    this.node
      .propose({ op: "batch", commands })
      .then(() => this.logger.info("swarm withdrawn from the routing state", { swarm: runtime.name }))
      .catch((error) => this.logger.warn("swarm withdrawal failed", { swarm: runtime.name, error }));
  }

  /** Team coordinators on the node the leader assigned; group coordinators with the master. */
  private async placeCoordinators(runtime: SwarmRuntime, leader: boolean): Promise<void> {
    const state = this.node.routingState;
    const wanted = new Set<string>();
    for (const coordinator of runtime.plan.coordinators) {
      const mine = coordinator.leaf
        ? state.teams.get(swarmTeamId(runtime.name, coordinator.name))?.coordinator === this.node.id
        : leader;
      if (mine) wanted.add(coordinator.id);
    }
    for (const [id, coordinator] of runtime.coordinators) {
      if (wanted.has(id)) continue;
      runtime.coordinators.delete(id);
      this.logger.info("team coordinator moved away; stopping it here", { coordinator: id });
      await coordinator.stop();
    }
    const ready = this.node.isReady();
    for (const id of wanted) {
      if (!ready) break; // started at a later reconcile, from a current state
      this.ensureRegistered(id);
      if (runtime.coordinators.has(id)) continue;
      const coordinator = new Coordinator({
        bus: this.node.bus,
        id,
        checkpoints: runtime.store,
        logger: this.logger,
        metrics: this.metrics,
        livenessIntervalMs: this.livenessIntervalMs,
        // Placed here after another node held the team: its workers answered that node.
        inFlightOnResume: "requeue",
        reviveWorkers: true,
        // A coordinator record without the master's is an orphan of a finished round.
        resumeOnlyWithMaster: true,
        isAlive: (worker) => this.isWorkerAlive(worker),
      });
      coordinator.start();
      runtime.coordinators.set(id, coordinator);
      this.logger.info("team coordinator started on this node", { coordinator: id });
    }
  }

  /**
   * A worker is alive while its agent record is up and its node is not down (agents of a dead
   * node cannot answer; their tasks go to other workers of the team at once).
   */
  private isWorkerAlive(worker: WorkerRef): boolean {
    const agent = this.node.routingState.agents.get(worker.id);
    if (!agent) return true; // not registered: judged by timeouts only
    const downSince = this.downSinceMs.get(agent.node);
    return agent.up && (downSince === undefined || Date.now() - downSince < this.workerDownGraceMs);
  }

  private trackDownMembers(): void {
    const now = Date.now();
    const members = this.node.routingState.members;
    for (const [id, member] of members) {
      if (member.state === "down") {
        if (!this.downSinceMs.has(id)) this.downSinceMs.set(id, now);
      } else this.downSinceMs.delete(id);
    }
    for (const id of this.downSinceMs.keys()) if (!members.has(id)) this.downSinceMs.delete(id);
  }

  /** Registers `agent` on this node unless the routing state already says so (one proposal at a time). */
  private ensureRegistered(agent: string): void {
    const record = this.node.routingState.agents.get(agent);
    if ((record?.node === this.node.id && record.up) || this.registering.has(agent)) return;
    this.registering.add(agent);
    this.node
      .propose({ op: "agent.register", agent, node: this.node.id, team: null })
      .catch((error) => this.logger.debug("agent registration failed; retrying", { agent, error }))
      .finally(() => this.registering.delete(agent));
  }

  // ---- the master (leader only) ---------------------------------------------------------------

  private async placeMaster(runtime: SwarmRuntime, leader: boolean): Promise<void> {
    if (!leader) {
      await this.stopMaster(runtime);
      return;
    }
    this.ensureRegistered(runtime.plan.master);
    this.ensureRegistered(roundsAgentId(runtime.name));
    if (!runtime.master) {
      runtime.master = new Master({
        bus: this.node.bus,
        id: runtime.plan.master,
        checkpoints: runtime.store,
        logger: this.logger,
        metrics: this.metrics,
      });
      runtime.master.open();
      runtime.requests = this.node.bus.openMailbox(roundsAgentId(runtime.name));
      runtime.placements.clear();
      const master = runtime.master;
      runtime.masterLoop = this.runMaster(runtime, master).catch((error) => {
        if (!isCfnError(error, "CFN_ERR_CLOSED"))
          this.logger.error("master loop failed", { swarm: runtime.name, error });
      });
      this.logger.info("master started on this node (Raft leader)", { swarm: runtime.name });
    }
    this.resyncMovedCoordinators(runtime);
  }

  private async stopMaster(runtime: SwarmRuntime): Promise<void> {
    if (!runtime.master) return;
    const master = runtime.master;
    runtime.master = undefined;
    master.close();
    runtime.requests?.close();
    runtime.requests = undefined;
    await runtime.masterLoop;
    runtime.masterLoop = undefined;
    this.logger.info("master stopped on this node (no longer the leader)", { swarm: runtime.name });
  }

  /** Re-sends a top coordinator's assign once its agent is registered on its (new) node. */
  private resyncMovedCoordinators(runtime: SwarmRuntime): void {
    const master = runtime.master;
    if (!master) return;
    const state = this.node.routingState;
    for (const coordinator of runtime.plan.coordinators) {
      if (coordinator.parent !== runtime.plan.master) continue;
      const placed = state.agents.get(coordinator.id)?.node;
      const previous = runtime.placements.get(coordinator.id);
      runtime.placements.set(coordinator.id, placed);
      if (placed === undefined || placed === previous || master.activeRounds.length === 0) continue;
      const sent = master.resync(coordinator.id);
      this.logger.info("coordinator placed on a node; assign re-sent", {
        coordinator: coordinator.id,
        node: placed,
        assigns: sent,
      });
    }
  }

  /** Runs the swarm's rounds one at a time: resumed ones first, then queued requests. */
  private async runMaster(runtime: SwarmRuntime, master: Master): Promise<void> {
    // Partials (and the outcomes coordinators resend on a resync) go to the master's agent id:
    // resume only once it routes here, and the other nodes have had a moment to apply that.
    while (
      runtime.master === master &&
      this.node.routingState.agents.get(runtime.plan.master)?.node !== this.node.id
    )
      await new Promise((resolve) => setTimeout(resolve, 20));
    await new Promise((resolve) => setTimeout(resolve, MASTER_SETTLE_MS));
    while (runtime.master === master) {
      const next = this.nextRound(runtime);
      if (next) {
        await this.runRound(runtime, master, next);
        continue;
      }
      const mailbox = runtime.requests;
      if (!mailbox) return;
      let deliveries: Delivery[];
      try {
        deliveries = await mailbox.receive({ timeoutMs: 200, max: 100 });
      } catch (error) {
        if (isCfnError(error, "CFN_ERR_CLOSED")) return;
        throw error;
      }
      for (const delivery of deliveries) this.acceptRequest(runtime, delivery);
      if (deliveries.length > 0) mailbox.ack(deliveries);
    }
  }

  private nextRound(runtime: SwarmRuntime): string | undefined {
    const rounds = runtime.store.rounds();
    return (
      rounds.find((round) => runtime.store.read(round, "master") !== undefined) ??
      rounds.find((round) => runtime.store.read(round, "request") !== undefined)
    );
  }

  /** Validates a request and queues it in the replicated checkpoints (so a new leader runs it). */
  private acceptRequest(runtime: SwarmRuntime, delivery: Delivery): void {
    const message = delivery.message;
    if (message.type !== ROUND_REQUEST) return;
    const request = message.payload as RoundRequestPayload;
    const replyTo = request?.replyTo;
    const problem =
      !request || typeof request !== "object"
        ? "payload must be an object"
        : typeof request.roundId !== "string" || !ROUND_ID.test(request.roundId)
          ? "roundId must match [A-Za-z0-9_-]{1,100}"
          : !isValidId(replyTo)
            ? "replyTo must be an agent id"
            : roundRequestProblem(request) !== undefined
              ? roundRequestProblem(request)
              : runtime.store.rounds().length >= this.roundQueueMax
                ? `more than ${this.roundQueueMax} rounds queued (coordination.roundQueueMax)`
                : undefined;
    if (problem) {
      this.logger.warn("round request refused", { swarm: runtime.name, from: message.from, problem });
      if (isValidId(replyTo)) this.reply(runtime, replyTo, String(request.roundId), { error: problem });
      return;
    }
    if (runtime.store.has(request.roundId)) return; // a repeated request: already queued or running
    if (runtime.store.isRemoved(request.roundId)) {
      // Already ran: its records are gone and the log keeps its tombstone (it cannot run twice).
      this.logger.warn("round request refused: the round already ran", {
        swarm: runtime.name,
        roundId: request.roundId,
      });
      this.reply(runtime, request.replyTo, request.roundId, {
        error: `round ${request.roundId} already ran (a round id is used once)`,
      });
      return;
    }
    runtime.store.write(request.roundId, "request", request);
  }

  private async runRound(runtime: SwarmRuntime, master: Master, roundId: string): Promise<void> {
    const request = runtime.store.read<RoundRequestPayload>(roundId, "request");
    const resuming = runtime.store.read(roundId, "master") !== undefined;
    let result: RoundResult;
    try {
      if (resuming) {
        result = await master.resumeRound(roundId);
      } else if (request) {
        result = await master.runRound({
          plan: runtime.plan,
          workers: new Map(),
          roundId,
          input: request.input,
          items: request.items,
          priority: request.priority,
          timeoutMs: request.timeoutMs ?? this.roundTimeoutMs,
          limits: {
            ...this.defaultLimits,
            ...this.definitions().get(runtime.name)?.limits,
            ...request.limits,
          },
        });
      } else {
        return;
      }
    } catch (error) {
      if (runtime.master !== master || isCfnError(error, "CFN_ERR_CLOSED")) return; // leadership lost
      if (isCfnError(error, "CFN_ERR_ROUTING_REFUSED") && runtime.store.isRemoved(roundId)) {
        this.logger.info("round was finished elsewhere; not answered again", {
          swarm: runtime.name,
          roundId,
        });
        return;
      }
      this.logger.error("round failed", { swarm: runtime.name, roundId, error });
      runtime.store.remove(roundId);
      if (request) this.reply(runtime, request.replyTo, roundId, { error: String(error) });
      return;
    }
    runtime.store.remove(roundId);
    if (request) this.reply(runtime, request.replyTo, roundId, { result });
    this.logger.info("round finished", {
      swarm: runtime.name,
      roundId,
      resumed: result.resumed,
      tasks: result.tasks,
      succeeded: result.succeeded,
      failed: result.failed,
    });
  }

  private reply(
    runtime: SwarmRuntime,
    replyTo: string,
    roundId: string,
    payload: { result?: RoundResult; error?: string },
  ): void {
    try {
      this.node.bus.sendSync(roundsAgentId(runtime.name), replyTo, {
        type: ROUND_RESULT,
        id: `${roundId}.result`,
        priority: "high",
        payload: { roundId, ...payload },
      });
    } catch (error) {
      this.logger.error("round result not delivered", { roundId, replyTo, error });
    }
  }

  /**
   * Coordinator records of rounds the master no longer has (a coordinator checkpointed after the
   * master removed the round) are removed when seen twice in a row: the store stays bounded.
   */
  private collectOrphanRounds(runtime: SwarmRuntime): void {
    const orphans = new Set<string>();
    const active = new Set(runtime.master?.activeRounds ?? []);
    for (const round of runtime.store.rounds()) {
      if (active.has(round)) continue;
      const names = runtime.store.names(round);
      if (names.includes("master") || names.includes("request")) continue;
      if (runtime.orphanRounds.has(round)) runtime.store.remove(round);
      else orphans.add(round);
    }
    runtime.orphanRounds = orphans;
  }
}
