// The cluster node daemon (`cfn node start`): one Raft member (RaftHost over a LevelDB LogStore
// and the WebSocket transport) replicating the routing state, the local bus, cross-node delivery
// (spool, forwarder, receiver), the master-coordinator loop while leader, agent liveness, and the
// HTTP API. docs/NODE.md describes the design; this file only composes and sequences.

import { join, resolve, sep } from "node:path";
import { Bus } from "../bus/index.js";
import type { BusConfig } from "../config/schema.js";
import { CfnError, isCfnError } from "../errors.js";
import type { Logger } from "../obs/logger.js";
import type { Metrics } from "../obs/metrics.js";
import type { SecurityConfig } from "../security/config.js";
import { NodeSecurity } from "../security/node-security.js";
import { TOKEN_POLICY_PREFIX } from "../security/permissions.js";
import { LevelLogStore } from "../storage/index.js";
import { onStorageFailure } from "../storage/level-open.js";
import { WsTransport } from "../transport/index.js";
import { apiRequest } from "./api-client.js";
import { ApplyLagWatch } from "./apply-lag.js";
import { ControlPlane } from "./control.js";
import {
  checkDataDirComplete,
  createDataDir,
  type DataDirIdentity,
  readDataDirIdentity,
  writeDataDirIdentity,
} from "./data-dir.js";
import { DeliveryForwarder } from "./delivery/forwarder.js";
import { DeliveryLedger, LEDGER_FILE_BYTES_MAX } from "./delivery/ledger.js";
import { InboxPark } from "./delivery/park.js";
import { DeliveryReceiver } from "./delivery/receiver.js";
import { DeliverySpool } from "./delivery/spool.js";
import {
  DELIVER_CHANNEL,
  FORWARD_LANES_MAX,
  FRAME_MESSAGES_MAX,
  parseDeliveryFrame,
  type WireMessage,
  wireMessageProblem,
} from "./delivery/wire.js";
import { askLeaderAboutMember, type HandOffSender, handOffAcks, memberHandOff } from "./handoff.js";
import { NodeApi } from "./http-api.js";
import { probeListenAddresses } from "./listen-probe.js";
import { InboxMirror } from "./mirror.js";
import {
  advertisedApiUrl,
  advertisedPeerUrl,
  type NodeConfig,
  peerListenerLimits,
  splitListen,
} from "./node-config.js";
import { NodeMetrics } from "./node-metrics.js";
import { RaftHost } from "./raft-host.js";
import { isValidId } from "./routing/commands.js";
import { FlapDamper } from "./routing/flap-damper.js";
import {
  planAgentLiveness,
  planMemberStates,
  planTeamAssignments,
  type RoutingCommand,
  type RoutingResult,
  RoutingStateMachine,
  routingStateToJson,
  teamsPerNode,
} from "./routing/index.js";

/**
 * Room a delivery frame needs beyond its largest message (the frame's own fields; the message's
 * fields and headers count in bus.messageBytesMax already): node.frameBytesMax must hold
 * bus.messageBytesMax plus this. A sanity bound, not a guarantee: msgpack can encode some payloads
 * larger than their JSON (many short floats), docs/NODE.md "Known gaps".
 */
export const FRAME_OVERHEAD_BYTES_MAX = 4 * 1024;

export interface ClusterNodeOptions {
  config: NodeConfig;
  bus: Partial<BusConfig>;
  /** RBAC, audit and encryption at rest (docs/SECURITY.md); defaults when absent. */
  security?: Partial<SecurityConfig>;
  logger: Logger;
  metrics: Metrics;
}

export { apiRequest } from "./api-client.js";

/** Agent id the node sends its own notifications from. */
export const NODE_AGENT_ID = "cfn-node";
/** Message type telling a worker that its team has a new coordinator. */
export const COORDINATOR_MESSAGE_TYPE = "cfn.team.coordinator";

type NodeState = "starting" | "running" | "draining" | "stopped";

/** After a peer says it removed this node: how often, and how far apart, the leader is asked. */
const REMOVAL_CHECK_ATTEMPTS_MAX = 5;
const REMOVAL_CHECK_RETRY_MS = 1_000;
/** Refusals within this long of the last check are not checked again. */
const REMOVAL_CHECK_INTERVAL_MS = 5_000;
/**
 * A member change a follower forwards to the leader (the CLI waits 15 s for its answer): removing
 * the leader itself transfers leadership first and forwards again.
 */
const MEMBER_CHANGE_FORWARD_TIMEOUT_MS = 12_000;

export interface ShutdownReport {
  /** Messages drained from outbound mailboxes into the spool during the shutdown. */
  forwarded: number;
  /** Spooled messages not acknowledged by the deadline (they go out at the next start). */
  unacknowledged: number;
  durationMs: number;
  /** This node was the leader when the shutdown began. */
  wasLeader: boolean;
  /** It was, and handed leadership to another voter before stopping. */
  leadershipTransferred: boolean;
}

export class ClusterNode {
  readonly config: NodeConfig;
  readonly id: string;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly nodeMetrics: NodeMetrics;
  readonly bus: Bus;
  readonly routing = new RoutingStateMachine();
  private host!: RaftHost<RoutingResult>;
  private transport!: WsTransport;
  private store!: LevelLogStore;
  private spool!: DeliverySpool;
  private ledger: DeliveryLedger | undefined;
  private control!: ControlPlane;
  private forwarder!: DeliveryForwarder;
  private receiver!: DeliveryReceiver;
  private park!: InboxPark;
  private mirror: InboxMirror | undefined;
  private api!: NodeApi;
  /** The API's security gate, the audit log and the at-rest codec (src/security). */
  security!: NodeSecurity;
  private readonly securityConfig: Partial<SecurityConfig>;
  private state: NodeState = "starting";
  private readonly timers: NodeJS.Timeout[] = [];
  private coordinatorBusy = false;
  /** Flap damping of member liveness while leader (src/node/routing/flap-damper.ts). */
  private flaps!: FlapDamper;
  private agentScanBusy = false;
  /**
   * When this node first saw each of its agent records (keyed by id and the record's change
   * index) without a heartbeat: a freshly registered agent whose process has not written its
   * mailbox yet gets agentDownAfterMs of grace instead of being marked down at the next scan.
   */
  private readonly agentRegisteredSeenMs = new Map<string, number>();
  /** An announce() proposal is in flight (they run every 250 ms; one at a time). */
  private announcing = false;
  /** This node has been a Raft member (so a later membership without it is its removal). */
  private wasMember = false;
  private removed = false;
  /** The data dir had no node.json: it is written once security opened (a bad key writes nothing). */
  private identityFresh = false;
  private readonly removedListeners: (() => void)[] = [];
  /** Agents whose coordinator notification their bus refused (agent → team), sent again. */
  private readonly undeliveredNotices = new Map<string, string>();
  /** Whether applying lags the commit index for longer than a probe's moment (readiness). */
  private readonly applyLag = new ApplyLagWatch();
  /**
   * The term in which this node confirmed it holds everything the leader had committed (one
   * linearizable read, ReadIndex): until then its state may be the one it replayed from its own
   * log at a restart, or kept through a partition, and readiness says "catching up".
   */
  private confirmedTerm: { term: number; done: boolean } | undefined;
  private readonly fatalListeners: ((error: unknown) => void)[] = [];
  /** Why the node stops on its own (failStop), once it does. */
  private failure: unknown;
  private unsubscribeStorage: (() => void) | undefined;
  private confirmingRemoval = false;
  private removalCheckedAtMs = 0;
  private notifyAfterIndex = Number.POSITIVE_INFINITY;
  /** Data frames are handled once the inbox mirror is restored and delivery recovery ran. */
  private deliveryReady = false;
  private readonly startedAtMs = Date.now();
  private identity!: DataDirIdentity;
  private identityDirty = false;

  private constructor(options: ClusterNodeOptions) {
    this.config = options.config;
    this.flaps = new FlapDamper(options.config.nodeDownAfterMs);
    this.id = options.config.id;
    this.logger = options.logger.child("node");
    this.metrics = options.metrics;
    this.nodeMetrics = new NodeMetrics(options.metrics);
    this.bus = new Bus({ config: options.bus, logger: options.logger, metrics: options.metrics });
    this.securityConfig = options.security ?? {};
  }

  /**
   * Opens the data dir (refusing another cluster's), starts Raft, delivery and the API, and
   * resolves once the node serves. CFN_ERR_DATA_DIR_FOREIGN / _LOCKED / CONFIG_INVALID on refusal.
   */
  static async start(options: ClusterNodeOptions): Promise<ClusterNode> {
    const node = new ClusterNode(options);
    try {
      await node.open();
    } catch (error) {
      await node.closeQuietly();
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "EADDRINUSE" || code === "EADDRNOTAVAIL" || code === "EACCES") {
        throw new CfnError(
          "CFN_ERR_CONFIG_INVALID",
          `cannot listen: ${(error as Error).message} (check node.peerListen / node.apiListen)`,
        );
      }
      throw error;
    }
    return node;
  }

  // ---- start-up ---------------------------------------------------------------------------------

  private async open(): Promise<void> {
    const { config } = this;
    const frameBytesNeeded = this.bus.config.messageBytesMax + FRAME_OVERHEAD_BYTES_MAX;
    if (config.frameBytesMax < frameBytesNeeded)
      throw new CfnError(
        "CFN_ERR_CONFIG_INVALID",
        `node.frameBytesMax (${config.frameBytesMax}) must be ≥ bus.messageBytesMax + ${FRAME_OVERHEAD_BYTES_MAX} (${frameBytesNeeded}): a message the bus accepts could never be forwarded to another node`,
        { frameBytesMax: config.frameBytesMax, messageBytesMax: this.bus.config.messageBytesMax },
      );
    // Nothing is written to the data dir by a start that cannot serve: the addresses bind and a
    // cluster joined is this node's cluster, checked first.
    await probeListenAddresses([
      { setting: "node.peerListen", address: config.peerListen },
      { setting: "node.apiListen", address: config.apiListen },
    ]);
    const joinMembers = config.join
      ? await fetchMembers(config.join, config.clusterToken, config.clusterId)
      : [];
    createDataDir(config.dataDir);
    this.identity = this.checkDataDir();
    // A LevelDB of the data dir that stops taking writes (disk full, I/O error) stops the node.
    const dataDir = resolve(config.dataDir);
    this.unsubscribeStorage = onStorageFailure((error) => {
      const path = String((error.details as { path?: unknown } | undefined)?.path ?? "");
      if (path === dataDir || path.startsWith(`${dataDir}${sep}`))
        this.failStop("a write to the data dir failed", error);
    });
    // Security first: a bad encryption key refuses the start before any record is written.
    this.security = await NodeSecurity.open({
      nodeId: this.id,
      clusterToken: config.clusterToken,
      dataDir: config.dataDir,
      config: this.securityConfig,
      policies: () => this.routing.state.policies,
      propose: (command) => this.propose(command),
      members: () => this.memberAddresses(),
      logger: this.logger,
      metrics: this.metrics,
      onRejected: (reason) => this.nodeMetrics.apiRejected.inc({ reason }),
    });
    this.spool = await DeliverySpool.open({
      path: join(config.dataDir, "spool"),
      sync: config.spoolSync || config.persistence,
      logger: this.logger,
      codec: this.security.codec,
    });
    this.store = await LevelLogStore.open({
      path: join(config.dataDir, "raft"),
      identity: { clusterId: config.clusterId, nodeId: this.id },
      logger: this.logger,
      metrics: this.metrics,
    });
    // A new data dir is claimed for this cluster and node (a failure refuses the start), once the
    // parts a later start requires exist (checkDataDirComplete): node.json says they must.
    if (this.identityFresh) writeDataDirIdentity(config.dataDir, this.identity);
    const peerListen = splitListen(config.peerListen);
    this.transport = new WsTransport({
      nodeId: this.id,
      clusterToken: config.clusterToken,
      logger: this.logger,
      metrics: this.metrics,
      host: peerListen.host,
      port: peerListen.port,
      limits: { frameBytesMax: config.frameBytesMax },
      listener: peerListenerLimits(config),
    });
    this.transport.onRefusedByPeer(() => void this.confirmRemoval());
    const peers: Record<string, string> = {};
    for (const [id, member] of Object.entries(this.identity.members))
      if (id !== this.id) peers[id] = member.peerUrl;
    for (const [id, peer] of Object.entries(config.peers)) peers[id] = peer.peerUrl;
    for (const member of joinMembers)
      if (member.id !== this.id && member.peerUrl) peers[member.id] = member.peerUrl;
    this.host = new RaftHost<RoutingResult>({
      config: {
        id: this.id,
        tickIntervalMs: config.tickIntervalMs,
        electionTimeoutTicks: config.electionTimeoutTicks,
        heartbeatTicks: config.heartbeatTicks,
      },
      logger: this.logger,
      metrics: this.metrics,
      store: this.store,
      transport: this.transport,
      stateMachine: this.routing,
      peers,
      // Only used on an empty data dir: the founders of a new cluster (a joiner passes none).
      bootstrap: config.join ? undefined : { voters: [this.id, ...Object.keys(config.peers)].sort() },
    });
    this.host.onFatal((error) => {
      // Workaround (reported): RaftHost.stop() can close the LogStore while a Ready round started
      // by a late peer message is still saving; that save fails with CFN_ERR_CLOSED and is
      // reported as fatal. While this node is stopping anyway it is not: log it and go on.
      if (this.state === "draining" || this.state === "stopped") {
        this.logger.warn("raft host error during shutdown ignored", { error });
        return;
      }
      this.failStop("raft host failed", error);
    });
    this.control = new ControlPlane({
      nodeId: this.id,
      host: this.host,
      transport: this.transport,
      logger: this.logger,
      metrics: this.nodeMetrics,
      peers: () => [...this.routing.state.members.keys()].filter((id) => id !== this.id),
      healthIntervalMs: config.healthIntervalMs,
      proposalTimeoutMs: 5_000,
    });
    this.ledger = DeliveryLedger.open({
      dir: join(config.dataDir, "delivery-in"),
      sync: config.persistence,
      fileBytesMax: LEDGER_FILE_BYTES_MAX,
      // A ledger write that fails (disk full) stops the node as a LevelDB write does.
      onFailure: (error) => this.failStop("a write to the data dir failed", error),
    });
    const spool = this.spool;
    this.park = new InboxPark({
      bus: this.bus,
      logger: this.logger,
      metrics: this.nodeMetrics,
      parkedMessagesMax: config.parkedMessagesMax,
    });
    this.receiver = new DeliveryReceiver({
      bus: this.bus,
      ledger: this.ledger,
      legacyCursor: (from) => spool.cursor(from),
      transport: this.transport,
      logger: this.logger,
      metrics: this.nodeMetrics,
      dedupWindowMessagesMax: config.dedupWindowMessagesMax,
      onWritten: (agents) => this.mirror?.mirrorAgents(agents),
      park: config.parkedMessagesMax > 0 ? this.park : undefined,
    });
    this.forwarder = new DeliveryForwarder({
      nodeId: this.id,
      bus: this.bus,
      spool: this.spool,
      transport: this.transport,
      logger: this.logger,
      metrics: this.nodeMetrics,
      ownerOf: (agent) => this.routing.state.agents.get(agent)?.node,
      isMember: (id) => this.routing.state.members.has(id),
      batchMessagesMax: config.forwardBatchMessagesMax,
      inflightMessagesMax: config.forwardInflightMessagesMax,
      ackTimeoutMs: config.ackTimeoutMs,
      proxyScanIntervalMs: config.proxyScanIntervalMs,
      spoolMessagesMax: config.spoolMessagesMax,
      spoolBytesMax: config.spoolBytesMax,
    });
    this.transport.onFrame(DELIVER_CHANNEL, (payload, from) => this.onDeliveryFrame(payload, from), {
      bulk: true,
    });
    this.routing.onApplied((applied) =>
      this.onRoutingApplied(applied.index, applied.command, applied.result),
    );
    this.routing.onRestored(() => this.syncTransportPeers());

    await this.host.start();
    this.notifyAfterIndex = this.host.status().commit;
    this.syncTransportPeers();
    if (config.persistence) {
      this.mirror = await InboxMirror.open({
        bus: this.bus,
        path: join(config.dataDir, "mirror"),
        logger: this.logger,
        codec: this.security.codec,
        flushIntervalMs: config.persistenceFlushIntervalMs,
        shouldMirror: (agent) => {
          const owner = this.routing.state.agents.get(agent)?.node;
          return owner === undefined || owner === this.id;
        },
      });
      const restored = await this.mirror.restore();
      if (restored > 0) this.logger.info("restored mirrored messages into inboxes", { messages: restored });
      this.mirror.start();
    }
    this.park.load();
    // With persistence this runs a durability round over what it counts as written (receiver.ts).
    await this.receiver.recover(this.ledger.intentSenders(), this.mirror?.busSurvived ?? true);
    this.deliveryReady = true;
    await this.forwarder.start();
    this.control.start();
    this.api = new NodeApi({
      node: this,
      config,
      logger: this.logger,
      metrics: this.metrics,
      nodeMetrics: this.nodeMetrics,
    });
    await this.api.start();
    this.state = "running";
    this.every(config.coordinatorIntervalMs, () => void this.coordinate());
    this.every(config.agentScanIntervalMs, () => {
      for (const [agent, team] of [...this.undeliveredNotices]) {
        // Tried again once its inbox has room: a retry into a full inbox would count an overflow
        // (and log a refusal) per scan for one notice.
        if (this.bus.inboxDepth(agent) < this.bus.config.inboxDepthMax) this.notifyAgent(agent, team);
      }
      void this.scanAgents();
    });
    this.every(250, () => {
      this.checkRemoved();
      void this.announce();
    });
    this.every(1000, () => this.persistIdentity());
    if (config.join) await this.joinThrough(config.join);
    void this.announce();
    this.logger.info("node started", {
      id: this.id,
      clusterId: config.clusterId,
      peerUrl: advertisedPeerUrl(config),
      apiUrl: this.apiUrl,
      dataDir: config.dataDir,
      bus: this.bus.dir,
    });
  }

  /** The data dir must be this node's of this cluster; a new one is claimed. */
  private checkDataDir(): DataDirIdentity {
    const stored = readDataDirIdentity(this.config.dataDir, this.config.clusterId, this.id);
    if (stored) {
      if (stored.removed) {
        throw new CfnError(
          "CFN_ERR_NODE_REMOVED",
          `node "${this.id}" was removed from cluster "${stored.clusterId}" ` +
            `(at ${new Date(stored.removed.atMs).toISOString()}, ${stored.removed.spooled} message(s) left undelivered in its spool); ` +
            `its data dir ${this.config.dataDir} is not used again: start it with a fresh data dir and --join to bring it back` +
            (stored.removed.spooled > 0
              ? `; \`cfn node handoff\` with this node's flags hands the ${stored.removed.spooled} to a member`
              : ""),
          { removed: stored.removed },
        );
      }
      // A Raft log (or spool) removed from a data dir that has one is not recreated empty.
      checkDataDirComplete(this.config.dataDir, this.id);
      return stored;
    }
    // Written once the start is known to be sound (after the key files are read: open()).
    this.identityFresh = true;
    return { clusterId: this.config.clusterId, nodeId: this.id, members: {} };
  }

  /** Keeps the last known member addresses in node.json: a restart can dial them before catching up. */
  private persistIdentity(): void {
    if (!this.identityDirty) return;
    this.identityDirty = false;
    const members: DataDirIdentity["members"] = {};
    for (const member of this.routing.state.members.values())
      members[member.id] = { peerUrl: member.peerUrl, apiUrl: member.apiUrl };
    this.identity = { ...this.identity, members };
    this.writeIdentity();
  }

  private writeIdentity(): void {
    try {
      writeDataDirIdentity(this.config.dataDir, this.identity);
    } catch (error) {
      this.logger.warn("cannot write node.json", { error });
    }
  }

  /**
   * Every member of the routing state is a transport peer. (RaftHost learns addresses from the
   * conf changes in its log; members captured only in a snapshot are re-added from the state.)
   */
  private syncTransportPeers(): void {
    if (!this.transport) return;
    for (const member of this.routing.state.members.values()) {
      if (member.id !== this.id && member.peerUrl) this.transport.addPeer(member.id, member.peerUrl);
    }
    this.identityDirty = true;
  }

  private async joinThrough(apiUrl: string): Promise<void> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        await apiRequest(apiUrl, "POST", "/v1/members", this.config.clusterToken, {
          id: this.id,
          peerUrl: advertisedPeerUrl(this.config),
          apiUrl: this.apiUrl,
          clusterId: this.config.clusterId,
        });
        this.logger.info("joined the cluster", { through: apiUrl });
        return;
      } catch (error) {
        if (isCfnError(error, "CFN_ERR_CONFIG_INVALID") || Date.now() > deadline) throw error;
        this.logger.warn("join not accepted yet; retrying", { through: apiUrl, error });
        await sleep(250);
      }
    }
  }

  /**
   * The members whose URLs the cluster token goes to: the routing state's, and Raft members it
   * holds no record of (their apiUrl unknown). The security gate lets only the cluster token
   * change them.
   */
  private memberAddresses(): Map<string, { peerUrl: string; apiUrl: string }> {
    const members = new Map<string, { peerUrl: string; apiUrl: string }>();
    for (const member of this.routing.state.members.values())
      members.set(member.id, { peerUrl: member.peerUrl, apiUrl: member.apiUrl });
    let raftMembers: { id: string; address: string | undefined }[] = [];
    try {
      raftMembers = this.host?.status().members ?? [];
    } catch {
      // not started, or closed: the routing state's members are all there is
    }
    for (const member of raftMembers)
      if (!members.has(member.id)) members.set(member.id, { peerUrl: member.address ?? "", apiUrl: "" });
    return members;
  }

  /** `id` is in the Raft group by the membership this node applied. */
  private isRaftMember(id: string): boolean {
    return this.host.status().members.some((member) => member.id === id);
  }

  /**
   * Calls `listener` when the node cannot go on (its data dir stopped taking writes, or its Raft
   * host failed): the listener stops it (shutdown) and ends the process with a failure status.
   * With no listener the node does so itself (exit status 1).
   */
  onFatal(listener: (error: unknown) => void): void {
    if (this.failure !== undefined) listener(this.failure);
    else this.fatalListeners.push(listener);
  }

  /** Stops the node after a failure it cannot serve through (once; ignored while it stops anyway). */
  private failStop(what: string, error: unknown): void {
    if (this.failure !== undefined) return;
    if (this.state === "draining" || this.state === "stopped") {
      this.logger.warn(`${what} during shutdown`, { error });
      return;
    }
    this.failure = error;
    this.logger.error(`${what}; the node stops`, { error });
    const listeners = this.fatalListeners.splice(0);
    if (listeners.length === 0) void this.shutdown(what).finally(() => process.exit(1));
    for (const listener of listeners) listener(error);
  }

  /** Calls `listener` once this node has applied its own removal from the cluster (it then stops). */
  onRemoved(listener: () => void): void {
    if (this.removed) listener();
    else this.removedListeners.push(listener);
  }

  /**
   * A member that applied a membership without itself was removed (`cfn cluster leave`): it can no
   * longer reach its peers (they refuse a removed node), so it records that in node.json — a
   * restart on this data dir is refused — and tells its listeners, which stop it.
   */
  private checkRemoved(): void {
    if (this.removed || this.state !== "running") return;
    if (this.isRaftMember(this.id)) {
      this.wasMember = true;
      return;
    }
    if (!this.wasMember) return; // joining: not a member yet
    this.stopAsRemoved("this node was removed from the cluster; it stops", {});
  }

  /** Records the removal, says why and tells the listeners (which stop the node). */
  private stopAsRemoved(message: string, fields: Record<string, unknown>): void {
    this.markRemoved();
    this.logger.error(message, { ...fields, spooledUndelivered: this.forwarder.pendingTotal() });
    for (const listener of this.removedListeners.splice(0)) listener();
  }

  /**
   * A peer refused this node (closed our connection as removed, or answered our dial with 401). A
   * node down or cut off when its removal committed never applies it (no member sends it anything
   * any more), so it asks the members' APIs: when the leader's status lacks this node, it was
   * removed. A peer's word is not enough: a lagging peer may apply an old removal of this id
   * (removed, then joined again, which the leader lists), a 401 may be a wrong token.
   */
  private async confirmRemoval(): Promise<void> {
    if (this.removed || this.state !== "running" || !this.wasMember || this.confirmingRemoval) return;
    if (Date.now() - this.removalCheckedAtMs < REMOVAL_CHECK_INTERVAL_MS) return; // dials retry often
    this.confirmingRemoval = true;
    try {
      for (let attempt = 0; attempt < REMOVAL_CHECK_ATTEMPTS_MAX && !this.removed; attempt++) {
        if (attempt > 0) await sleep(REMOVAL_CHECK_RETRY_MS);
        if (this.state !== "running") return;
        const answer = await askLeaderAboutMember(this.knownMemberApis(), this.handOffSender());
        if (answer === undefined) continue; // no leader answered: ask again
        if (answer.member || this.removed || this.state !== "running") return;
        this.stopAsRemoved(
          "this node was removed from the cluster (the leader no longer lists it); it stops",
          {
            leader: answer.leader,
          },
        );
        return;
      }
    } finally {
      this.confirmingRemoval = false;
      this.removalCheckedAtMs = Date.now();
    }
  }

  /**
   * Every other member's API this node knows: its founding peers', node.json's and the routing
   * state's (a restarted node has the first two before it has applied its log again).
   */
  private knownMemberApis(): { id: string; apiUrl: string }[] {
    const apis = new Map<string, string>();
    for (const [id, peer] of Object.entries(this.config.peers)) if (peer.apiUrl) apis.set(id, peer.apiUrl);
    for (const [id, member] of Object.entries(this.identity.members))
      if (member.apiUrl) apis.set(id, member.apiUrl);
    for (const member of this.routing.state.members.values())
      if (member.apiUrl) apis.set(member.id, member.apiUrl);
    apis.delete(this.id);
    return [...apis].map(([id, apiUrl]) => ({ id, apiUrl }));
  }

  /**
   * A removed node's spool: no member takes its frames any more, so its messages go to a member's
   * API (POST /v1/handoff), which delivers them as its own (the owners drop what they already
   * have by message id). Tries the members it knows in turn; what none takes by `deadlineMs`
   * stays spooled, and node.json's removal record says how many.
   */
  private async handOffSpool(deadlineMs: number): Promise<number> {
    const before = this.forwarder.pendingTotal();
    if (before === 0) return 0;
    const members = memberHandOff(this.knownMemberApis(), this.handOffSender());
    const handed = await this.forwarder.handOff(members.deliver, deadlineMs);
    this.nodeMetrics.handedOver.inc(handed);
    const left = this.forwarder.pendingTotal();
    if (this.identity.removed) {
      this.identity = { ...this.identity, removed: { ...this.identity.removed, spooled: left } };
      this.writeIdentity();
    }
    const log = left === 0 ? this.logger.info.bind(this.logger) : this.logger.warn.bind(this.logger);
    log("spooled messages handed off to a member", { handed, left, member: members.member() });
    return handed;
  }

  /**
   * POST /v1/handoff from `from`, a node removed from the cluster (its frames are refused now):
   * - `acks` [{l, s, u}]: how far it wrote this node's streams to it (lane, stream id, sequence) —
   *   the acks it could not send any more, applied as if they had come as frames (what they cover
   *   is not sent again, to whichever node takes its id next);
   * - `messages`: what its spool still held, taken in order: those for this node's agents are
   *   written as a frame's would be, the others spooled and streamed to their owners (or, for an
   *   agent on no member, left in its local directory). Answers how many (a prefix) were taken.
   */
  async acceptHandOff(body: Record<string, unknown>): Promise<{ taken: number; acked: number }> {
    const { from, clusterId, messages, acks } = body;
    if (!isValidId(from)) throw new CfnError("CFN_ERR_INVALID_MESSAGE", "need from: the removed node's id");
    if (clusterId !== this.config.clusterId)
      throw new CfnError(
        "CFN_ERR_CONF_CHANGE",
        `hand-off for cluster ${JSON.stringify(clusterId)}; this node is of ${JSON.stringify(this.config.clusterId)}`,
      );
    if (this.state !== "running") throw new CfnError("CFN_ERR_CLOSED", `node ${this.id} is ${this.state}`);
    if (this.isRaftMember(from) || from === this.id)
      throw new CfnError(
        "CFN_ERR_CONF_CHANGE",
        `node ${from} is still a member here: it delivers through its streams`,
      );
    if (messages === undefined && acks === undefined)
      throw new CfnError("CFN_ERR_INVALID_MESSAGE", "need messages or acks");
    const ackFrames: { t: "a"; s: string; u: number; l: number }[] = [];
    if (acks !== undefined) {
      if (!Array.isArray(acks) || acks.length > FORWARD_LANES_MAX)
        throw new CfnError("CFN_ERR_INVALID_MESSAGE", `acks: at most ${FORWARD_LANES_MAX} of {l, s, u}`);
      for (const [index, ack] of acks.entries()) {
        const parsed = parseDeliveryFrame({ ...(typeof ack === "object" ? ack : {}), t: "a" });
        if (!parsed.ok || parsed.frame.t !== "a")
          throw new CfnError(
            "CFN_ERR_INVALID_MESSAGE",
            `acks[${index}]: ${parsed.ok ? "bad ack" : parsed.reason}`,
          );
        ackFrames.push({ ...parsed.frame, l: parsed.frame.l ?? 0 });
      }
    }
    if (messages !== undefined) {
      if (!Array.isArray(messages) || messages.length === 0 || messages.length > FRAME_MESSAGES_MAX)
        throw new CfnError(
          "CFN_ERR_INVALID_MESSAGE",
          `need messages: 1 to ${FRAME_MESSAGES_MAX} wire messages`,
        );
      for (const [index, message] of messages.entries()) {
        const problem = wireMessageProblem(message);
        if (problem) throw new CfnError("CFN_ERR_INVALID_MESSAGE", `messages[${index}]: ${problem}`);
      }
    }
    for (const ack of ackFrames) this.forwarder.handleControl(ack, from);
    const wire = (messages ?? []) as WireMessage[];
    let taken = 0;
    while (taken < wire.length) {
      const local = this.routing.state.agents.get(wire[taken].to)?.node === this.id;
      let end = taken + 1;
      while (end < wire.length && (this.routing.state.agents.get(wire[end].to)?.node === this.id) === local)
        end++;
      const run = wire.slice(taken, end);
      const took = local ? await this.receiver.writeHandedOff(run, from) : await this.forwarder.adopt(run);
      taken += took;
      if (took < run.length) break;
    }
    this.nodeMetrics.handedOff.inc(taken);
    this.logger.info("took over what a removed node handed off", {
      from,
      offered: wire.length,
      taken,
      acks: ackFrames.length,
    });
    return { taken, acked: ackFrames.length };
  }

  /**
   * A removed node's last acks: the senders' streams it wrote into its inboxes (the ledger's
   * committed cursors) go to each sender's API, since no frame carries them any more — the
   * senders would otherwise send those messages again to the next node with this id (after a
   * re-join on a fresh data dir, with no cursor to drop them by). A sender that is unreachable
   * or still lists this node (it has not applied the removal yet) is asked again until
   * `deadlineMs`.
   */
  private async handOffAcks(deadlineMs: number): Promise<void> {
    const apis = new Map(this.knownMemberApis().map((member) => [member.id, member.apiUrl]));
    await handOffAcks(this.ledger?.cursors() ?? [], apis, this.handOffSender(), deadlineMs);
  }

  /** This node as the sender of a hand-off (or of a question about its own membership). */
  private handOffSender(): HandOffSender {
    return {
      from: this.id,
      clusterId: this.config.clusterId,
      token: this.config.clusterToken,
      logger: this.logger,
    };
  }

  /** Records the removal in node.json: a later start on this data dir is refused. */
  private markRemoved(): void {
    this.removed = true;
    const removed = {
      atMs: Date.now(),
      applied: this.host.status().applied,
      spooled: this.forwarder.pendingTotal(),
    };
    this.identity = { ...this.identity, removed };
    this.writeIdentity();
  }

  /**
   * Makes this node's member record carry its current addresses, and state `active` when it is
   * missing or `leaving`, whenever it does not while the node runs — not once: a restarted node may first apply a stale `active`
   * and only then the `leaving` its last shutdown committed (a leader's, after it handed over).
   */
  private async announce(): Promise<void> {
    if (this.state !== "running" || this.announcing) return;
    const self = this.routing.state.members.get(this.id);
    const peerUrl = advertisedPeerUrl(this.config);
    const stale = !self || self.peerUrl !== peerUrl || self.apiUrl !== this.apiUrl;
    // `down` → `active` is the leader's call: it hears this node's pings (a node that can propose
    // can ping) and damps a member whose link flaps (routing/flap-damper.ts). Proposing it here
    // undid the damping at every flap.
    if (!stale && (self.state === "active" || self.state === "down")) return;
    if (this.removed || !this.isRaftMember(this.id)) return; // not a member (yet, or any more)
    this.announcing = true;
    try {
      if (stale)
        await this.control.propose({ op: "member.upsert", id: this.id, peerUrl, apiUrl: this.apiUrl });
      else await this.control.propose({ op: "member.state", id: this.id, state: "active" });
    } catch (error) {
      this.logger.debug("announce not done yet", { error });
    } finally {
      this.announcing = false;
    }
  }

  private every(intervalMs: number, action: () => void): void {
    const timer = setInterval(action, intervalMs);
    timer.unref();
    this.timers.push(timer);
  }

  // ---- the master coordinator (leader only) ---------------------------------------------------

  private async coordinate(): Promise<void> {
    if (this.state !== "running" || this.coordinatorBusy || !this.host.isLeader()) return;
    this.coordinatorBusy = true;
    try {
      const state = this.routing.state;
      const others = [...state.members.keys()].filter((id) => id !== this.id);
      const view = {
        alive: this.control.alive(others, this.config.nodeDownAfterMs),
        isBack: (id: string) => this.flaps.isBack(id, this.control.heardWithoutGapMs(id)),
      };
      this.flaps.retain(new Set(state.members.keys()));
      // planMemberStates leaves `leaving` alone; a leaving member gone silent (its shutdown ended,
      // or it was killed on the way) is `down`, so its agents count as dead until it is back.
      const memberCommands = [
        ...planMemberStates(state, view),
        ...[...state.members.values()]
          .filter((member) => member.state === "leaving" && !view.alive.has(member.id))
          .map((member): RoutingCommand => ({ op: "member.state", id: member.id, state: "down" })),
      ];
      if (memberCommands.length > 0) {
        this.logger.info("member liveness changed", { changes: memberCommands });
        await this.control.propose(batch(memberCommands));
        const now = Date.now();
        for (const command of memberCommands) {
          if (command.op !== "member.state") continue;
          if (command.state === "down") this.flaps.wentDown(command.id, now);
          else if (command.state === "active") this.flaps.cameUp(command.id, now);
        }
      }
      const assignments = planTeamAssignments(this.routing.state, view);
      if (assignments.length > 0) {
        this.logger.info("assigning team coordinators", { assignments });
        await this.control.propose(batch(assignments));
        this.nodeMetrics.reassignments.inc(assignments.length);
      }
    } catch (error) {
      this.logger.debug("coordination round failed", { error });
    } finally {
      this.coordinatorBusy = false;
    }
  }

  /** Marks this node's agents down or up from their heartbeat files; only changes are proposed. */
  private async scanAgents(): Promise<void> {
    if (this.state !== "running" || this.agentScanBusy) return;
    this.agentScanBusy = true;
    try {
      const state = this.routing.state;
      const lastSeen = new Map<string, number | null>();
      const nowMs = Date.now();
      const graceKeys = new Set<string>();
      let up = 0;
      let down = 0;
      for (const agent of state.agents.values()) {
        if (agent.node !== this.id) continue;
        if (agent.up) up++;
        else down++;
        let seenMs = this.bus.agentStatus(agent.id)?.lastSeenMs ?? null;
        if (seenMs === null && agent.up) {
          // Registered up but never heard from yet: its registration counts as the first sign of life.
          const key = `${agent.id}@${agent.changedIndex}`;
          graceKeys.add(key);
          seenMs = this.agentRegisteredSeenMs.get(key) ?? nowMs;
          this.agentRegisteredSeenMs.set(key, seenMs);
        }
        lastSeen.set(agent.id, seenMs);
      }
      for (const key of this.agentRegisteredSeenMs.keys()) {
        if (!graceKeys.has(key)) this.agentRegisteredSeenMs.delete(key);
      }
      this.nodeMetrics.agents.set({ state: "up" }, up);
      this.nodeMetrics.agents.set({ state: "down" }, down);
      this.nodeMetrics.teamsCoordinated.set(teamsPerNode(state).get(this.id)?.length ?? 0);
      const commands = planAgentLiveness(state, this.id, lastSeen, nowMs, this.config.agentDownAfterMs);
      if (commands.length > 0) await this.control.propose(batch(commands));
    } catch (error) {
      this.logger.debug("agent scan failed", { error });
    } finally {
      this.agentScanBusy = false;
    }
  }

  // ---- applied routing changes ----------------------------------------------------------------

  private onRoutingApplied(index: number, command: RoutingCommand, result: RoutingResult): void {
    if (!result.ok && command.op !== "batch") return;
    const commands =
      command.op === "batch" ? command.commands.filter((_, i) => result.results?.[i]?.ok) : [command];
    for (const applied of commands) {
      if (applied.op === "member.upsert" || applied.op === "member.remove") this.syncTransportPeers();
      if (applied.op === "member.remove" && applied.id !== this.id) this.transport?.removePeer(applied.id);
      if (applied.op === "team.assign" && index > this.notifyAfterIndex) this.notifyTeam(applied.team);
    }
  }

  /** Tells the team's agents on this node who coordinates them now (and from which checkpoint). */
  private notifyTeam(teamId: string): void {
    if (!this.routing.state.teams.has(teamId)) return;
    for (const agent of this.routing.state.agents.values())
      if (agent.team === teamId && agent.node === this.id) this.notifyAgent(agent.id, teamId);
  }

  /**
   * Sends `agent` its team's current coordinator. A send its bus refuses (a full inbox or disk) is
   * tried again at every agent scan until it lands or the agent left the team or this node — the
   * message id (team, epoch) makes a copy that did land harmless.
   */
  private notifyAgent(agentId: string, teamId: string): void {
    const team = this.routing.state.teams.get(teamId);
    const agent = this.routing.state.agents.get(agentId);
    if (!team || agent?.team !== teamId || agent.node !== this.id) {
      this.undeliveredNotices.delete(agentId);
      return;
    }
    const events = this.routing.state.events;
    let event: (typeof events)[number] | undefined;
    for (let i = events.length - 1; i >= 0 && !event; i--)
      if (events[i].team === teamId && events[i].epoch === team.epoch) event = events[i];
    try {
      this.bus.sendSync(NODE_AGENT_ID, agentId, {
        id: `coord-${teamId}-${team.epoch}`,
        type: COORDINATOR_MESSAGE_TYPE,
        priority: "high",
        payload: {
          team: teamId,
          coordinator: team.coordinator,
          previous: event?.previous ?? null,
          epoch: team.epoch,
          checkpoint: team.checkpoint,
        },
      });
      this.undeliveredNotices.delete(agentId);
    } catch (error) {
      if (!this.undeliveredNotices.has(agentId))
        this.logger.warn("coordinator notification not delivered; tried again at each agent scan", {
          agent: agentId,
          team: teamId,
          error,
        });
      this.undeliveredNotices.set(agentId, teamId);
    }
  }

  private onDeliveryFrame(payload: unknown, from: string): void {
    const parsed = parseDeliveryFrame(payload);
    if (!parsed.ok) {
      this.nodeMetrics.badFrames.inc({ channel: DELIVER_CHANNEL, reason: parsed.reason });
      this.logger.warn("malformed delivery frame dropped", { from, reason: parsed.reason });
      return;
    }
    if (parsed.frame.t === "d") {
      // Not before the mirror is restored and the ledger's crash recovery ran (the transport
      // listens from host.start() on): the sender resends what is not acknowledged.
      if (this.state === "stopped" || !this.deliveryReady) return;
      this.receiver.handle(parsed.frame, from);
    } else {
      this.forwarder.handleControl(parsed.frame, from);
    }
  }

  // ---- API used by the HTTP layer and the CLI ---------------------------------------------------

  get apiUrl(): string {
    return this.api?.url ?? advertisedApiUrl(this.config);
  }

  get peerUrl(): string {
    return advertisedPeerUrl(this.config);
  }

  get isServing(): boolean {
    return this.state === "running";
  }

  /** Replicates a routing change from any node (forwarded to the leader when needed). */
  propose(command: RoutingCommand): Promise<RoutingResult> {
    if (this.state !== "running")
      return Promise.reject(new CfnError("CFN_ERR_CLOSED", `node ${this.id} is ${this.state}`));
    return this.control.propose(command);
  }

  registerAgent(agent: string, team: string | null): Promise<RoutingResult> {
    return this.propose({ op: "agent.register", agent, node: this.id, team });
  }

  /** Adds a member (leader only; other nodes forward the request to the leader's API). */
  async addMember(id: string, peerUrl: string, apiUrl: string): Promise<RoutingResult> {
    if (!this.host.isLeader()) return this.forwardToLeader("POST", "/v1/members", { id, peerUrl, apiUrl });
    if (!this.isRaftMember(id)) await this.host.addMember(id, peerUrl);
    return this.control.propose({ op: "member.upsert", id, peerUrl, apiUrl });
  }

  async removeMember(id: string): Promise<RoutingResult> {
    if (!this.host.isLeader())
      return this.forwardToLeader("DELETE", `/v1/members/${encodeURIComponent(id)}`, undefined);
    if (id === this.id) {
      const target = this.host.status().members.find((member) => member.id !== this.id && member.voter);
      if (!target) throw new CfnError("CFN_ERR_CONF_CHANGE", "the last member cannot leave");
      await this.host.transferLeadership(target.id);
      return this.forwardToLeader("DELETE", `/v1/members/${encodeURIComponent(id)}`, undefined);
    }
    if (this.isRaftMember(id)) {
      await this.host.removeMember(id);
      return { ok: true };
    }
    // Not in the Raft group: a member record the routing state still holds goes; an id neither
    // knows is refused (a typo must not read "removed").
    if (this.routing.state.members.has(id)) return this.control.propose({ op: "member.remove", id });
    return { ok: false, error: "unknown_member" };
  }

  /**
   * Hands leadership to `to` (POST /v1/leader). Only the leader can: a follower's Raft would relay
   * the request with `from = to`, which raft-wire.ts drops, so a follower asks the leader's API.
   */
  async transferLeadership(to: string): Promise<void> {
    if (this.host.isLeader() || to === this.id) return this.host.transferLeadership(to);
    await this.forwardToLeader("POST", "/v1/leader", { to });
  }

  private async forwardToLeader(method: string, path: string, body: unknown): Promise<RoutingResult> {
    const leader = this.host.leaderHint().leader;
    const apiUrl = leader ? this.routing.state.members.get(leader)?.apiUrl : undefined;
    if (!leader || !apiUrl)
      throw new CfnError("CFN_ERR_NOT_LEADER", `node ${this.id} is not the leader and knows no leader API`);
    // A member change may take a leadership transfer and a joint-consensus commit on the way.
    return (await apiRequest(
      apiUrl,
      method,
      path,
      this.config.clusterToken,
      body,
      MEMBER_CHANGE_FORWARD_TIMEOUT_MS,
    )) as RoutingResult;
  }

  /** Sends through the local bus (the send API): a remote receiver is reached through its proxy. */
  send(
    from: string,
    to: string,
    message: {
      type: string;
      payload?: unknown;
      id?: string;
      priority?: "high" | "normal" | "low";
      headers?: Record<string, string>;
    },
  ): { ids: string[] } {
    if (this.state !== "running") throw new CfnError("CFN_ERR_CLOSED", `node ${this.id} is ${this.state}`);
    return this.bus.sendSync(from, to, message);
  }

  /** Alive and serving (for /healthz). */
  health(): { ok: boolean; state: NodeState } {
    return { ok: this.state === "running" || this.state === "draining", state: this.state };
  }

  /**
   * Whether this node confirmed, in `term`, that it applied what the leader had committed: a
   * ReadIndex read started at the first readiness check of the term (probes and coordination
   * ask every second or so); a failed one is tried again at the next check.
   */
  private confirmedCurrent(term: number): boolean {
    if (this.confirmedTerm?.term === term) return this.confirmedTerm.done;
    const confirming = { term, done: false };
    this.confirmedTerm = confirming;
    this.host
      .read(() => undefined)
      .then(
        () => {
          confirming.done = true;
        },
        () => {
          if (this.confirmedTerm === confirming) this.confirmedTerm = undefined;
        },
      );
    return false;
  }

  /** Knows a leader and has applied everything it knows committed (for /readyz). */
  readiness(): { ready: boolean; leader: string; commit: number; applied: number; reason?: string } {
    if (this.state !== "running") {
      // Starting: no Raft yet (zeros); draining: what it had when it began to stop.
      let status: { leader?: string; commit: number; applied: number } | undefined;
      try {
        status = this.state === "starting" ? undefined : this.host.status();
      } catch {
        status = undefined; // closed
      }
      return {
        ready: false,
        leader: status?.leader ?? "",
        commit: status?.commit ?? 0,
        applied: status?.applied ?? 0,
        reason: this.state,
      };
    }
    const status = this.host.status();
    if (!status.leader)
      return {
        ready: false,
        leader: "",
        commit: status.commit,
        applied: status.applied,
        reason: "no leader",
      };
    if (
      !this.confirmedCurrent(status.term) ||
      this.applyLag.catchingUp(status.applied, status.commit, Date.now())
    )
      return {
        ready: false,
        leader: status.leader,
        commit: status.commit,
        applied: status.applied,
        reason: "catching up",
      };
    if (this.removed)
      return {
        ready: false,
        leader: status.leader,
        commit: status.commit,
        applied: status.applied,
        reason: "removed from the cluster",
      };
    if (!this.routing.state.members.has(this.id))
      return {
        ready: false,
        leader: status.leader,
        commit: status.commit,
        applied: status.applied,
        reason: "not announced",
      };
    return { ready: true, leader: status.leader, commit: status.commit, applied: status.applied };
  }

  /** Everything `cfn cluster status` shows, from this node's point of view. */
  status(): Record<string, unknown> {
    const raft = this.host.status();
    const state = this.routing.state;
    const perNode = new Map<string, { up: number; down: number }>();
    for (const agent of state.agents.values()) {
      const counts = perNode.get(agent.node) ?? { up: 0, down: 0 };
      if (agent.up) counts.up++;
      else counts.down++;
      perNode.set(agent.node, counts);
    }
    const teams = teamsPerNode(state);
    const raftMembers = new Map(raft.members.map((member) => [member.id, member]));
    const members = [...new Set([...state.members.keys(), ...raftMembers.keys()])].sort().map((id) => {
      const record = state.members.get(id);
      const progress = raftMembers.get(id);
      return {
        id,
        peerUrl: record?.peerUrl ?? progress?.address ?? "",
        apiUrl: record?.apiUrl ?? "",
        state: record?.state ?? "unannounced",
        voter: progress?.voter ?? false,
        leader: id === raft.leader,
        match: progress?.match ?? null,
        lag: progress?.lag ?? null,
        lastHeardMsAgo: id === this.id ? 0 : msAgo(this.control.lastHeard(id)),
        agentsUp: perNode.get(id)?.up ?? 0,
        agentsDown: perNode.get(id)?.down ?? 0,
        teams: teams.get(id) ?? [],
      };
    });
    const localAgents = this.bus.status();
    return {
      node: {
        id: this.id,
        clusterId: this.config.clusterId,
        state: this.state,
        peerUrl: this.peerUrl,
        apiUrl: this.apiUrl,
        startedAt: new Date(this.startedAtMs).toISOString(),
        dataDir: this.config.dataDir,
      },
      raft: {
        role: raft.role,
        term: raft.term,
        leader: raft.leader,
        commit: raft.commit,
        applied: raft.applied,
        lastIndex: raft.lastIndex,
        snapshotIndex: raft.snapshotIndex,
      },
      members,
      agents: [...state.agents.values()].sort((a, b) => (a.id < b.id ? -1 : 1)),
      teams: [...state.teams.values()].sort((a, b) => (a.id < b.id ? -1 : 1)),
      topology: state.topology,
      delivery: {
        spooled: this.spool.size,
        streams: this.forwarder.status(),
        proxied: this.forwarder.proxiedAgents(),
        paused: this.forwarder.pausedAgents(),
        held: this.receiver.held(),
        parked: this.park.parked(),
      },
      bus: { dir: localAgents.dir, agents: localAgents.agents },
    };
  }

  /**
   * The routing state for GET /v1/routing and the dashboard (status.read): API token records show
   * without their secret's hash — the token list itself needs policy.read (GET
   * /v1/security/tokens), and a hash is all an offline guess needs.
   */
  routingJson(): Record<string, unknown> {
    const json = routingStateToJson(this.routing.state);
    const policies = json.policies as Record<string, unknown>;
    for (const [name, value] of Object.entries(policies))
      if (name.startsWith(TOKEN_POLICY_PREFIX) && typeof value === "object" && value !== null) {
        const { sha256: _hash, ...visible } = value as Record<string, unknown>;
        policies[name] = visible;
      }
    return { appliedIndex: this.routing.appliedIndex, ...json };
  }

  // ---- shutdown ---------------------------------------------------------------------------------

  /**
   * Graceful shutdown (SIGTERM), bounded by shutdownTimeoutMs: stop taking work, hand off
   * leadership when leader, hand the outbound mailboxes to their owners (drain into the spool, wait
   * for acks), tell the leader this node is leaving (its teams move now), optionally leave the
   * membership, flush, close.
   */
  async shutdown(reason = "shutdown"): Promise<ShutdownReport> {
    const started = Date.now();
    if (this.state === "stopped" || this.state === "draining") {
      return {
        forwarded: 0,
        unacknowledged: 0,
        durationMs: 0,
        wasLeader: false,
        leadershipTransferred: false,
      };
    }
    const deadline = started + this.config.shutdownTimeoutMs;
    this.logger.info("graceful shutdown", { reason });
    this.state = "draining";
    for (const timer of this.timers) clearInterval(timer);
    let forwarded = 0;
    let leadershipTransferred = false;
    const wasLeader = this.host.isLeader();
    try {
      if (this.removed) {
        // Not a member any more: no leadership to hand off, no peer takes its frames. What the
        // outbound mailboxes and the spool hold goes to a member through its API instead.
        await this.forwarder.stopDraining();
        forwarded = await this.forwarder.drainOnce();
        await withDeadline(this.receiver.idle(), 500);
        await Promise.all([this.handOffAcks(deadline - 1_000), this.handOffSpool(deadline - 1_000)]);
      } else {
        if (this.host.isLeader()) {
          // The most caught-up voter first; the transfer waits for it to catch up.
          const candidates = this.host
            .status()
            .members.filter((member) => member.id !== this.id && member.voter)
            .sort((a, b) => (a.lag ?? Number.MAX_SAFE_INTEGER) - (b.lag ?? Number.MAX_SAFE_INTEGER));
          for (const target of candidates) {
            const transfer = this.host.transferLeadership(target.id).catch((error) => {
              this.logger.warn("leadership transfer at shutdown failed", { target: target.id, error });
            });
            await withDeadline(transfer, Math.max(100, Math.min(1_500, deadline - Date.now() - 500)));
            if (!this.host.isLeader()) break;
          }
        }
        await this.forwarder.stopDraining();
        forwarded = await this.forwarder.drainOnce();
        await withDeadline(
          this.control.propose({ op: "member.state", id: this.id, state: "leaving" }),
          Math.min(2_000, deadline - Date.now() - 1_000),
        );
        await this.forwarder.flush(deadline - 1_500);
        await withDeadline(this.receiver.idle(), 500);
        if (this.config.leaveOnShutdown) {
          await withDeadline(this.removeMember(this.id), Math.max(100, deadline - Date.now() - 1_000));
          // The leader applied it; this node does once the commit reaches it (or never, cut off).
          const until = Math.min(deadline - 500, Date.now() + 1_000);
          while (this.isRaftMember(this.id) && Date.now() < until) await sleep(25);
          if (!this.isRaftMember(this.id)) {
            this.markRemoved();
            // What the owners did not acknowledge in time, and the acks the senders may miss.
            await Promise.all([this.handOffAcks(deadline - 1_000), this.handOffSpool(deadline - 1_000)]);
          }
        }
      }
    } catch (error) {
      this.logger.warn("graceful shutdown step failed; closing anyway", { error });
    }
    // Handed to another member, not merely lost (a leader without a quorum steps down too).
    if (wasLeader && !this.host.isLeader()) {
      let leader = "";
      try {
        leader = this.host.status().leader;
      } catch {
        // closed meanwhile: no leader known
      }
      leadershipTransferred = leader !== "" && leader !== this.id;
    }
    const unacknowledged = this.forwarder.pendingTotal();
    await this.closeQuietly();
    const report = {
      forwarded,
      unacknowledged,
      durationMs: Date.now() - started,
      wasLeader,
      leadershipTransferred,
    };
    this.logger.info("node stopped", report);
    return report;
  }

  /** Closes every component without the graceful steps (also the failure path of start). */
  private async closeQuietly(): Promise<void> {
    this.state = "stopped";
    for (const timer of this.timers) clearInterval(timer);
    this.control?.close();
    this.receiver?.close();
    this.park?.close(); // what is parked stays on the bus's tmpfs; the next start moves it in
    // Acks of frames already written go out (after their durability round) before the mirror closes.
    await this.receiver?.idle().catch(() => undefined);
    await this.forwarder?.close().catch(() => undefined);
    await this.api?.close().catch(() => undefined);
    await this.mirror?.close().catch(() => undefined);
    if (this.host)
      await this.host.stop().catch((error) => this.logger.warn("raft host stop failed", { error }));
    else {
      await this.transport?.close().catch(() => undefined);
      await this.store?.close().catch(() => undefined);
    }
    this.ledger?.close();
    await this.spool?.close().catch(() => undefined);
    await this.security?.close().catch(() => undefined);
    this.persistIdentity();
    this.unsubscribeStorage?.();
    this.bus.close();
  }
}

function batch(commands: RoutingCommand[]): RoutingCommand {
  return commands.length === 1 ? commands[0] : { op: "batch", commands };
}

function msAgo(ms: number | undefined): number | null {
  return ms === undefined ? null : Date.now() - ms;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), Math.max(1, ms));
  });
  try {
    return await Promise.race([promise.catch(() => undefined), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The members of the cluster joined through `apiUrl`, refused when it is another cluster. */
async function fetchMembers(
  apiUrl: string,
  token: string,
  clusterId: string,
): Promise<{ id: string; peerUrl: string }[]> {
  const deadline = Date.now() + 30_000;
  let status: { node?: { clusterId?: string }; members: { id: string; peerUrl: string }[] };
  for (;;) {
    try {
      status = (await apiRequest(apiUrl, "GET", "/v1/status", token)) as typeof status;
      break;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(250);
    }
  }
  const theirs = status.node?.clusterId;
  if (theirs !== clusterId)
    throw new CfnError(
      "CFN_ERR_CONFIG_INVALID",
      `--join ${apiUrl}: that member is of cluster ${JSON.stringify(theirs)}, this node's node.clusterId is ${JSON.stringify(clusterId)} (start it with --cluster-id ${theirs})`,
      { field: "clusterId", clusterId, memberClusterId: theirs },
    );
  return status.members;
}

export type { WireMessage };
