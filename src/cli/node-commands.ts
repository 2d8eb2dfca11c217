// `cfn node start` (the cluster node daemon) and `cfn cluster status|join|leave|register|
// checkpoint|transfer` (operations through a node's HTTP API). docs/NODE.md describes both.

import type { Command } from "commander";
import { attachCoordination } from "../coordination/node-coordination.js";
import { CfnError, isCfnError } from "../errors.js";
import { idleBackgroundThreads } from "../node/background-threads.js";
import { nodeSettingsFromClusterFile, readClusterFile } from "../node/cluster-file.js";
import { checkFileDescriptorLimit } from "../node/listen-probe.js";
import { apiRequest, ClusterNode } from "../node/node.js";
import { NODE_DEFAULT_DATA_DIR, parseNodeConfig } from "../node/node-config.js";
import { handOffDataDir } from "../node/offline-handoff.js";
import { isValidId } from "../node/routing/commands.js";
import type { Logger } from "../obs/logger.js";
import { startTracing, type Tracing } from "../obs/tracing.js";
import { setDamagedLogPolicy } from "../storage/level-open.js";
import { type ApiFlags, apiOf, apiRead, collect, withApi } from "./api-flags.js";
import { buildContext } from "./context.js";
import { EXIT, printJson, printLine, reportError, table } from "./output.js";

/**
 * How long a command waits for a node's answer to a routing change. Above the node's own bound
 * (5 s, docs/NODE.md "HTTP API"), so a change that cannot commit (no leader, quorum lost) reads
 * as the node's CFN_ERR_TIMEOUT, not as an unreachable API.
 */
const PROPOSAL_ANSWER_TIMEOUT_MS = 10_000;

interface StartFlags {
  id?: string;
  clusterId?: string;
  token?: string;
  dataDir?: string;
  peerListen?: string;
  apiListen?: string;
  advertisePeer?: string;
  advertiseApi?: string;
  peer: string[];
  join?: string;
  clusterFile?: string;
  persistence?: boolean;
  leaveOnShutdown?: boolean;
  salvageDamagedLogs?: boolean;
  set: string[];
}

/** `--peer n2=ws://h:7102,http://h:7202` */
function parsePeer(text: string): [string, { peerUrl: string; apiUrl: string }] {
  const match = /^([A-Za-z0-9._-]{1,128})=(wss?:\/\/[^,\s]+),(https?:\/\/\S+)$/.exec(text);
  if (!match)
    throw new CfnError(
      "CFN_ERR_CONFIG_INVALID",
      `--peer takes id=ws://host:port,http://host:port, got ${JSON.stringify(text)}`,
    );
  return [match[1], { peerUrl: match[2], apiUrl: match[3] }];
}

/** `--set nodeDownAfterMs=1500`: numbers and booleans are parsed, the rest stays a string. */
function parseSetting(text: string): [string, unknown] {
  const at = text.indexOf("=");
  if (at <= 0)
    throw new CfnError("CFN_ERR_CONFIG_INVALID", `--set takes name=value, got ${JSON.stringify(text)}`);
  const raw = text.slice(at + 1);
  const value =
    raw === "true"
      ? true
      : raw === "false"
        ? false
        : raw !== "" && Number.isFinite(Number(raw))
          ? Number(raw)
          : raw;
  return [text.slice(0, at), value];
}

/**
 * The node settings the flags (and a cluster file) give, over the configuration's `node` section.
 * `configured` is that section: a data dir it sets (file or CFN_NODE_DATA_DIR) is kept with --id;
 * only its default becomes ./cfn-data/<id>.
 */
export function nodeSettingsFromFlags(
  flags: StartFlags,
  env: NodeJS.ProcessEnv = process.env,
  configured: { dataDir?: string } = {},
): Record<string, unknown> {
  let settings: Record<string, unknown> = {};
  const token = flags.token ?? env.CFN_CLUSTER_TOKEN;
  if (flags.clusterFile) {
    if (!flags.id)
      throw new CfnError("CFN_ERR_CONFIG_INVALID", "--cluster-file needs --id to pick this node");
    const file = readClusterFile(flags.clusterFile);
    // A file of one node (no peers) and no --join runs on the single-node default when its
    // tokenEnv is unset (cluster/single-node.yaml); every other node needs the cluster's secret.
    const alone = file.nodes.length === 1 && flags.join === undefined;
    if (
      file.token === undefined &&
      file.tokenEnv !== undefined &&
      !env[file.tokenEnv] &&
      token === undefined &&
      !alone
    )
      throw new CfnError(
        "CFN_ERR_CONFIG_INVALID",
        `cluster file ${flags.clusterFile}: its tokenEnv ${file.tokenEnv} is not set (export ${file.tokenEnv}, or pass --token)`,
        { field: "tokenEnv" },
      );
    settings = nodeSettingsFromClusterFile(file, flags.id, flags.clusterFile, env);
  }
  if (flags.id !== undefined) settings.id = flags.id;
  if (flags.clusterId !== undefined) settings.clusterId = flags.clusterId;
  if (token !== undefined) settings.clusterToken = token;
  const defaultDataDir = configured.dataDir === undefined || configured.dataDir === NODE_DEFAULT_DATA_DIR;
  if (flags.dataDir !== undefined) settings.dataDir = flags.dataDir;
  else if (settings.dataDir === undefined && flags.id !== undefined && defaultDataDir)
    settings.dataDir = `./cfn-data/${flags.id}`;
  if (flags.peerListen !== undefined) settings.peerListen = flags.peerListen;
  if (flags.apiListen !== undefined) settings.apiListen = flags.apiListen;
  if (flags.advertisePeer !== undefined) settings.advertisePeerUrl = flags.advertisePeer;
  if (flags.advertiseApi !== undefined) settings.advertiseApiUrl = flags.advertiseApi;
  if (flags.peer.length > 0)
    settings.peers = { ...(settings.peers as object), ...Object.fromEntries(flags.peer.map(parsePeer)) };
  if (flags.join !== undefined) settings.join = flags.join;
  if (flags.persistence) settings.persistence = true;
  if (flags.leaveOnShutdown) settings.leaveOnShutdown = true;
  for (const [name, value] of flags.set.map(parseSetting)) settings[name] = value;
  return settings;
}

export function registerNodeCommands(program: Command): void {
  const node = program.command("node").description("the cluster node daemon");
  node
    .command("start")
    .description(
      "run a cluster node: Raft member, routing state, cross-node delivery, HTTP API (SIGTERM stops it gracefully)",
    )
    .option("--id <id>", "this node's id (node.id)")
    .option("--cluster-id <name>", "cluster name (node.clusterId)")
    .option("--token <secret>", "cluster token (node.clusterToken); also CFN_CLUSTER_TOKEN")
    .option("--data-dir <dir>", "Raft log and spool directory (node.dataDir)")
    .option("--peer-listen <host:port>", "peer WebSocket listen address (node.peerListen)")
    .option("--api-listen <host:port>", "HTTP API listen address (node.apiListen)")
    .option("--advertise-peer <url>", "URL peers dial (node.advertisePeerUrl)")
    .option("--advertise-api <url>", "API URL given to others (node.advertiseApiUrl)")
    .option("--peer <id=ws://…,http://…>", "a founding peer (repeatable)", collect, [])
    .option("--join <api-url>", "join a running cluster through this member's API")
    .option("--cluster-file <file>", "cluster definition (cluster/*.yaml); needs --id")
    .option("--persistence", "mirror inboxes to disk (node.persistence)")
    .option("--leave-on-shutdown", "leave the membership at SIGTERM (node.leaveOnShutdown)")
    .option(
      "--salvage-damaged-logs",
      "open LevelDBs whose write-ahead log is damaged, dropping the damaged blocks (a copy of each is kept); without it such a start is refused",
    )
    .option("--set <name=value>", "any node setting, e.g. nodeDownAfterMs=1500 (repeatable)", collect, [])
    .action(async (flags: StartFlags) => {
      const { config, logger, metrics } = buildContext(program);
      // Signal handlers first: a SIGTERM that arrives while the node starts (or right after the
      // "started" line) must shut it down gracefully, never kill it with the default action.
      let signalled: string | undefined;
      let onSignal: (signal: string) => void = (signal) => {
        signalled = signal;
      };
      const sigterm = () => onSignal("SIGTERM");
      const sigint = () => onSignal("SIGINT");
      process.on("SIGTERM", sigterm);
      process.on("SIGINT", sigint);
      let started: ClusterNode;
      let tracing: Tracing | undefined;
      try {
        // Flags and the cluster file override the `node` section of the configuration.
        const nodeConfig = parseNodeConfig({
          ...config.node,
          ...nodeSettingsFromFlags(flags, process.env, config.node),
        });
        // Too few file descriptors refuse the start here, not as a raw EMFILE halfway through it.
        checkFileDescriptorLimit(nodeConfig, logger);
        // A damaged write-ahead log refuses the start (src/storage/wal-check.ts) unless salvaged.
        if (flags.salvageDamagedLogs)
          setDamagedLogPolicy({
            salvage: true,
            report: (message, details) => logger.child("cfn:storage").error(message, details),
          });
        // Before the node starts, so its first spans (and the delivery/coordination ones) export.
        tracing = await startTracing({
          config: config.tracing,
          defaultServiceName: "cfn-node",
          instanceId: nodeConfig.id,
          nodeId: nodeConfig.id,
          logger,
          metrics,
        });
        started = await ClusterNode.start({
          config: nodeConfig,
          bus: config.bus,
          security: config.security,
          logger,
          metrics,
        });
      } catch (error) {
        await tracing?.shutdown();
        process.off("SIGTERM", sigterm);
        process.off("SIGINT", sigint);
        // A node that cannot start safely refuses with a clear message and exit status 2.
        const refusal =
          isCfnError(error, "CFN_ERR_CONFIG_INVALID") ||
          isCfnError(error, "CFN_ERR_CONFIG_FILE") ||
          isCfnError(error, "CFN_ERR_DATA_DIR_FOREIGN") ||
          isCfnError(error, "CFN_ERR_DATA_DIR_LOCKED") ||
          isCfnError(error, "CFN_ERR_NODE_REMOVED") ||
          isCfnError(error, "CFN_ERR_KEY_FILE");
        reportError(error, false);
        process.exitCode = refusal ? EXIT.usage : EXIT.failure;
        return;
      }
      // Swarm coordination follows the routing state: team coordinators run where the leader
      // placed them, the master runs on the leader (docs/COORDINATION.md, "On a cluster").
      const coordination = attachCoordination(started, { logger, metrics, config: config.coordination });
      const stopIdling = started.config.idleBackgroundThreads ? keepBackgroundThreadsIdle(logger) : () => {};
      printJson({
        event: "started",
        id: started.id,
        peerUrl: started.peerUrl,
        apiUrl: started.apiUrl,
        bus: started.bus.dir,
        pid: process.pid,
      });
      await new Promise<void>((resolve) => {
        let stopping = false;
        onSignal = (signal: string) => {
          if (stopping) return; // a second signal during the shutdown is ignored: it is bounded
          stopping = true;
          stopIdling();
          void coordination
            .stop()
            .then(() => started.shutdown(signal))
            .then(async (report) => {
              // The node's last spans (its shutdown included) are flushed before the process ends.
              await tracing?.shutdown();
              printJson({ event: "stopped", id: started.id, ...report });
              resolve();
            });
        };
        if (signalled) onSignal(signalled);
        // Removed from the cluster (`cfn cluster leave`): it stops as on SIGTERM, exit status 0.
        started.onRemoved(() => onSignal("removed from the cluster"));
        // Its data dir stopped taking writes, or Raft failed: it says why, stops, exit status 1.
        started.onFatal((error) => {
          reportError(error, false);
          process.exitCode = EXIT.failure;
          onSignal("failure");
        });
      });
      process.off("SIGTERM", sigterm);
      process.off("SIGINT", sigint);
    });

  node
    .command("handoff")
    .description(
      "hand a stopped, removed node's spool and last acks to the cluster's members (its data dir is not started again)",
    )
    .option("--id <id>", "the removed node's id (node.id)")
    .option("--cluster-id <name>", "cluster name (node.clusterId)")
    .option("--token <secret>", "cluster token (node.clusterToken); also CFN_CLUSTER_TOKEN")
    .option("--data-dir <dir>", "the removed node's data dir (node.dataDir)")
    .option("--peer <id=ws://…,http://…>", "a member whose API may take it (repeatable)", collect, [])
    .option("--cluster-file <file>", "cluster definition (cluster/*.yaml); needs --id")
    .option("--to <api-url>", "offer to this member's API first (repeatable)", collect, [])
    .option("--timeout-ms <ms>", "give up on what no member took by then", "30000")
    .option("--set <name=value>", "any node setting (repeatable)", collect, [])
    .option("--json", "print the report as JSON")
    .action(async (flags: StartFlags & { to: string[]; timeoutMs: string; json?: boolean }) => {
      const { config, logger } = buildContext(program);
      const timeoutMs = Number(flags.timeoutMs);
      if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1_000 || timeoutMs > 3_600_000)
        throw new CfnError(
          "CFN_ERR_CONFIG_INVALID",
          `--timeout-ms takes 1000 to 3600000 ms, got ${JSON.stringify(flags.timeoutMs)}`,
        );
      for (const url of flags.to)
        if (!/^https?:\/\/\S+$/.test(url))
          throw new CfnError(
            "CFN_ERR_CONFIG_INVALID",
            `--to takes http://host:port, got ${JSON.stringify(url)}`,
          );
      const nodeConfig = parseNodeConfig({
        ...config.node,
        ...nodeSettingsFromFlags(flags, process.env, config.node),
      });
      const report = await handOffDataDir({
        config: nodeConfig,
        security: config.security,
        logger,
        to: flags.to,
        deadlineMs: Date.now() + timeoutMs,
      });
      if (flags.json) printJson(report);
      else {
        printLine(
          `node ${report.node}: ${report.handed} of ${report.spooled} spooled message(s) handed off` +
            (report.member ? ` (last to ${report.member})` : "") +
            `, ${report.left} left in its spool`,
        );
        if (report.removalRecorded)
          printLine("its removal is now recorded in node.json (the leader no longer lists it)");
        if (report.acks.told.length > 0) printLine(`last acks taken by ${report.acks.told.join(", ")}`);
        if (report.acks.missed.length > 0)
          printLine(
            `last acks not taken by ${report.acks.missed.join(", ")} (they may send those messages again)`,
          );
      }
      if (report.left > 0 || report.acks.missed.length > 0) process.exitCode = EXIT.failure;
    });

  const cluster = program.command("cluster").description("cluster operations through a node's HTTP API");

  withApi(
    cluster
      .command("status")
      .description("leader, term, members with lag, agents per node, teams, spool, inbox depths"),
  ).action(async (flags: ApiFlags) => {
    // A read: with no token given none is sent (apiRead), as curl would.
    const status = (await apiRead(flags, "/v1/status")) as ClusterStatus;
    // Lag is known by the leader only: ask it when this node is a follower.
    const leader = status.members.find((member) => member.leader);
    if (status.raft.role !== "leader" && leader?.apiUrl) {
      try {
        const leaderStatus = (await apiRead(flags, "/v1/status", leader.apiUrl)) as ClusterStatus;
        const lagOf = new Map(leaderStatus.members.map((member) => [member.id, member]));
        for (const member of status.members) {
          member.match = lagOf.get(member.id)?.match ?? member.match;
          member.lag = lagOf.get(member.id)?.lag ?? member.lag;
        }
      } catch {
        // the leader's API is not reachable from here: lag stays unknown
      }
    }
    // The bus shown is the node's own (in its status), not this command's bus setting: the node
    // asked may run on another bus root or another host.
    if (flags.json) {
      printJson(status);
      return;
    }
    printClusterStatus(status);
  });

  withApi(cluster.command("join").description("add a node to the cluster (it then starts with --join)"))
    .argument("<id>", "the new node's id")
    .argument("<peer-url>", "its transport URL, ws://host:port")
    .argument("<api-url>", "its API URL, http://host:port")
    .action(async (id: string, peerUrl: string, apiUrl: string, flags: ApiFlags) => {
      const { api, token } = apiOf(flags);
      const result = await apiRequest(api, "POST", "/v1/members", token, { id, peerUrl, apiUrl }, 15_000);
      if (flags.json) printJson(result);
      else printLine(`member ${id} added`);
    });

  withApi(
    cluster.command("leave").description("remove a node from the cluster (its teams move to live nodes)"),
  )
    .argument("<id>", "the node to remove")
    .action(async (id: string, flags: ApiFlags) => {
      // Checked here: a URL path of "." or ".." would resolve to another route.
      if (!isValidId(id))
        throw new CfnError("CFN_ERR_INVALID_MESSAGE", `invalid member id ${JSON.stringify(id)}`);
      const { api, token } = apiOf(flags);
      const result = await apiRequest(
        api,
        "DELETE",
        `/v1/members/${encodeURIComponent(id)}`,
        token,
        undefined,
        15_000,
      );
      if (flags.json) printJson(result);
      else printLine(`member ${id} removed`);
    });

  withApi(
    cluster
      .command("register")
      .description("register an agent on the node (agents then receive cross-node messages)"),
  )
    .argument("<agent>", "agent id")
    .option("--team <team>", "team of the agent")
    .action(async (agent: string, flags: ApiFlags & { team?: string }) => {
      const { api, token } = apiOf(flags);
      const result = await apiRequest(
        api,
        "POST",
        "/v1/agents",
        token,
        { agent, team: flags.team ?? null },
        PROPOSAL_ANSWER_TIMEOUT_MS,
      );
      if (flags.json) printJson(result);
      else printLine(`agent ${agent} registered`);
    });

  withApi(
    cluster.command("checkpoint").description("replicate a team coordinator's checkpoint (fenced by epoch)"),
  )
    .argument("<team>", "team id")
    .argument("<data>", "checkpoint data (JSON)")
    .requiredOption("--epoch <n>", "coordinator epoch of the team")
    .requiredOption("--seq <n>", "progress sequence, increasing")
    .action(async (team: string, data: string, flags: ApiFlags & { epoch: string; seq: string }) => {
      const { api, token } = apiOf(flags);
      let parsed: unknown;
      try {
        parsed = JSON.parse(data);
      } catch {
        parsed = data;
      }
      const result = await apiRequest(
        api,
        "POST",
        `/v1/teams/${encodeURIComponent(team)}/checkpoint`,
        token,
        {
          epoch: Number(flags.epoch),
          seq: Number(flags.seq),
          data: parsed,
        },
        PROPOSAL_ANSWER_TIMEOUT_MS,
      );
      if (flags.json) printJson(result);
      else printLine(`checkpoint of ${team} replicated`);
    });

  withApi(cluster.command("transfer").description("transfer Raft leadership to a member"))
    .argument("<to>", "member id")
    .action(async (to: string, flags: ApiFlags) => {
      const { api, token } = apiOf(flags);
      const result = await apiRequest(api, "POST", "/v1/leader", token, { to }, 10_000);
      if (flags.json) printJson(result);
      else printLine(`leader is ${to}`);
    });
}

interface ClusterStatus {
  node: { id: string; clusterId: string; state: string; apiUrl: string };
  raft: { role: string; term: number; leader: string; commit: number; applied: number };
  members: {
    id: string;
    state: string;
    leader: boolean;
    voter: boolean;
    apiUrl: string;
    match: number | null;
    lag: number | null;
    lastHeardMsAgo: number | null;
    agentsUp: number;
    agentsDown: number;
    teams: string[];
  }[];
  teams: { id: string; coordinator: string | null; epoch: number }[];
  delivery: {
    spooled: number;
    streams: { dest: string; pending: number; inflight: number }[];
    held?: { from: string; lane: number; agent: string; seq: number }[];
    parked?: { agent: string; messages: number }[];
  };
  bus: {
    dir: string;
    agents: { agentId: string; inboxDepth: number; claimed: number; deadLetters: number }[];
  };
}

function printClusterStatus(status: ClusterStatus): void {
  printLine(
    `cluster ${status.node.clusterId}: leader ${status.raft.leader || "(none)"}, term ${status.raft.term}, commit ${status.raft.commit}`,
  );
  printLine(
    `this node ${status.node.id} (${status.raft.role}, ${status.node.state}), applied ${status.raft.applied}`,
  );
  if (!status.raft.leader)
    // Member states are what the leader last replicated: a node cut off from it cannot know better.
    printLine(
      "no leader known here: STATE is the replicated state as this node last applied it (it may be stale); HEARD is this node's own view",
    );
  printLine();
  printLine(
    table([
      ["MEMBER", "STATE", "ROLE", "LAG", "HEARD", "AGENTS UP", "DOWN", "TEAMS"],
      ...status.members.map((member) => [
        member.id,
        member.state,
        member.leader ? "leader" : member.voter ? "voter" : "learner",
        member.lag === null ? "?" : String(member.lag),
        member.lastHeardMsAgo === null ? "never" : `${member.lastHeardMsAgo} ms`,
        String(member.agentsUp),
        String(member.agentsDown),
        String(member.teams.length),
      ]),
    ]),
  );
  if (status.teams.length > 0) {
    printLine();
    printLine(
      table([
        ["TEAM", "COORDINATOR", "EPOCH"],
        ...status.teams.map((team) => [team.id, team.coordinator ?? "-", String(team.epoch)]),
      ]),
    );
  }
  printLine();
  printLine(
    `spool: ${status.delivery.spooled} messages${status.delivery.streams.map((s) => `; → ${s.dest}: ${s.pending} pending, ${s.inflight} in flight`).join("")}`,
  );
  for (const hold of status.delivery.held ?? [])
    printLine(`held: from ${hold.from} lane ${hold.lane} at seq ${hold.seq}: inbox of ${hold.agent} full`);
  for (const entry of status.delivery.parked ?? [])
    printLine(`parked: ${entry.messages} message(s) for ${entry.agent}, waiting for room in its inbox`);
  const agents = status.bus.agents;
  printLine(`bus of ${status.node.id} ${status.bus.dir}: ${agents.length} mailboxes`);
  if (agents.length > 0) {
    printLine(
      table([
        ["AGENT", "INBOX", "CLAIMED", "DEAD"],
        ...agents.map((a) => [a.agentId, String(a.inboxDepth), String(a.claimed), String(a.deadLetters)]),
      ]),
    );
  }
}

/** Checks for new helper threads of the daemon this often (LevelDB starts its compaction late). */
const BACKGROUND_THREADS_RESCAN_MS = 10_000;

/**
 * Moves the daemon's helper threads to SCHED_IDLE now and again every BACKGROUND_THREADS_RESCAN_MS
 * for threads started since (src/node/background-threads.ts). Returns the stop function.
 */
function keepBackgroundThreadsIdle(logger: Logger): () => void {
  const done = new Set<number>();
  const first = idleBackgroundThreads(done);
  if (first.skipped) {
    logger.info("helper threads keep their scheduling", { reason: first.skipped });
    return () => {};
  }
  logger.debug("helper threads under SCHED_IDLE", { threads: first.moved });
  const timer = setInterval(() => {
    const again = idleBackgroundThreads(done);
    if (again.skipped) {
      logger.warn("could not move new helper threads to SCHED_IDLE", { reason: again.skipped });
      clearInterval(timer);
    }
  }, BACKGROUND_THREADS_RESCAN_MS);
  timer.unref();
  return () => clearInterval(timer);
}
