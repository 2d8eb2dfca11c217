// `cfn node handoff`: hands a stopped, removed node's data dir over to the cluster
// (docs/NODE.md, "Handing off a stopped node's data dir"). A removed node hands off its spool and
// last acks itself before it stops, but only until its shutdown deadline and only while some
// member answers; a node removed while it was down and never started again hands off nothing.
// What is left stays in its data dir's spool, which no node opens again (a start on it is refused
// with CFN_ERR_NODE_REMOVED). This opens that spool and ledger without starting a node — no Raft,
// no transport, no bus — and offers them to the members' APIs as the node itself would.

import { join } from "node:path";
import { CfnError } from "../errors.js";
import type { Logger } from "../obs/logger.js";
import { parseSecurityConfig, type SecurityConfig } from "../security/config.js";
import { PLAINTEXT_CODEC, RecordCipher } from "../security/record-cipher.js";
import { scrubSpool } from "../security/spool-scrub.js";
import { type DataDirIdentity, readDataDirIdentity, writeDataDirIdentity } from "./data-dir.js";
import { DeliveryLedger, LEDGER_FILE_BYTES_MAX } from "./delivery/ledger.js";
import { DeliverySpool, type SpooledMessage } from "./delivery/spool.js";
import {
  askLeaderAboutMember,
  HANDOFF_RETRY_MS,
  type HandOffSender,
  handOffAcks,
  handOffChunk,
  type MemberApi,
  memberHandOff,
} from "./handoff.js";
import type { NodeConfig } from "./node-config.js";

export interface OfflineHandOffOptions {
  config: NodeConfig;
  security?: Partial<SecurityConfig>;
  logger: Logger;
  /** Member API URLs to offer to first (`--to`); then the cluster config's peers and node.json's. */
  to?: string[];
  /** Give up on what no member took by then (Date.now() based). */
  deadlineMs: number;
}

export interface OfflineHandOffReport {
  node: string;
  clusterId: string;
  /** The removal was recorded here (the leader no longer listed the node), not by the node. */
  removalRecorded: boolean;
  /** Messages the spool held. */
  spooled: number;
  /** Messages a member took. */
  handed: number;
  /** Messages still in the spool (node.json's removal record says so too). */
  left: number;
  /** The member that took the last chunk. */
  member?: string;
  /** Senders that took the node's last acks, and those that did not (they may send those again). */
  acks: { told: string[]; missed: string[] };
}

/**
 * Hands off a stopped node's spool and last acks. The data dir must be this node's of this
 * cluster (CFN_ERR_DATA_DIR_FOREIGN) and not open (CFN_ERR_DATA_DIR_LOCKED). A node not yet
 * recorded as removed must be confirmed removed by the cluster's leader first: a member still
 * listed delivers its spool itself when it starts (CFN_ERR_CONF_CHANGE), and with no leader
 * answering nothing is done (CFN_ERR_PEER_UNREACHABLE).
 */
export async function handOffDataDir(options: OfflineHandOffOptions): Promise<OfflineHandOffReport> {
  const { config, logger } = options;
  const { dataDir, clusterId, id } = config;
  const stored = readDataDirIdentity(dataDir, clusterId, id);
  if (!stored)
    throw new CfnError(
      "CFN_ERR_DATA_DIR_FOREIGN",
      `data dir ${dataDir} has no node.json: it is not a node's data dir (check --data-dir and --id)`,
    );
  let identity: DataDirIdentity = stored;
  const sender: HandOffSender = { from: id, clusterId, token: config.clusterToken, logger };
  const members = memberApis(identity, config, options.to ?? []);
  if (members.length === 0)
    throw new CfnError(
      "CFN_ERR_CONFIG_INVALID",
      `no member API known for node ${id}'s cluster: name one with --to http://host:port`,
    );

  // The spool opens first: it is LevelDB's lock that refuses a node still running on this dir.
  const security = parseSecurityConfig(options.security);
  const codec = security.encryptionKeyFile
    ? RecordCipher.fromKeyFiles(security.encryptionKeyFile, security.encryptionPreviousKeyFiles)
    : PLAINTEXT_CODEC;
  await scrubSpool(join(dataDir, "spool"), codec, logger);
  const spool = await DeliverySpool.open({ path: join(dataDir, "spool"), sync: true, logger, codec });
  let ledger: DeliveryLedger | undefined;
  try {
    const outbound = await spool.loadOutbound();
    const spooled = spool.size;
    let removalRecorded = false;
    if (!identity.removed) {
      const answer = await askLeaderAboutMember(members, sender);
      if (answer === undefined)
        throw new CfnError(
          "CFN_ERR_PEER_UNREACHABLE",
          `no leader of cluster ${clusterId} answered at ${members.map((member) => member.apiUrl).join(", ")}: ` +
            `cannot tell whether node ${id} was removed; nothing was handed off`,
        );
      if (answer.member)
        throw new CfnError(
          "CFN_ERR_CONF_CHANGE",
          `node ${id} is still a member of cluster ${clusterId} (leader ${answer.leader} lists it): ` +
            `start it and it delivers its spool itself, or remove it first (cfn cluster leave ${id})`,
        );
      identity = { ...identity, removed: { atMs: Date.now(), applied: 0, spooled } };
      writeDataDirIdentity(dataDir, identity);
      removalRecorded = true;
      logger.info("the leader no longer lists this node: its removal is recorded", { leader: answer.leader });
    }

    ledger = DeliveryLedger.open({
      dir: join(dataDir, "delivery-in"),
      sync: false,
      fileBytesMax: LEDGER_FILE_BYTES_MAX,
    });
    const [acks, handOff] = await Promise.all([
      handOffAcks(ledger.cursors(), senderApis(identity, config), sender, options.deadlineMs),
      handOffSpool(outbound, spool, memberHandOff(members, sender), options.deadlineMs, logger),
    ]);
    await spool.flush();
    const left = spool.size;
    if (identity.removed)
      writeDataDirIdentity(dataDir, { ...identity, removed: { ...identity.removed, spooled: left } });
    return {
      node: id,
      clusterId,
      removalRecorded,
      spooled,
      handed: handOff.handed,
      left,
      member: handOff.member,
      acks,
    };
  } finally {
    ledger?.close();
    await spool.close();
  }
}

/** Each destination's spooled messages in sequence order, chunk by chunk, until the deadline. */
async function handOffSpool(
  outbound: Map<string, SpooledMessage[]>,
  spool: DeliverySpool,
  members: ReturnType<typeof memberHandOff>,
  deadlineMs: number,
  logger: Logger,
): Promise<{ handed: number; member?: string }> {
  let handed = 0;
  for (const [dest, items] of outbound) {
    let head = 0;
    while (head < items.length && Date.now() < deadlineMs) {
      const chunk = handOffChunk(items.slice(head, head + 1024), (item) => item.message);
      let taken: number;
      try {
        taken = await members.deliver(chunk.map((item) => item.message));
      } catch (error) {
        logger.error("hand-off failed; the rest stays spooled", { handed, error });
        return { handed, member: members.member() };
      }
      if (taken > 0) {
        await spool.remove(dest, chunk[0].seq, chunk[taken - 1].seq);
        head += taken;
        handed += taken;
      }
      if (taken < chunk.length) await new Promise((resolve) => setTimeout(resolve, HANDOFF_RETRY_MS));
    }
  }
  return { handed, member: members.member() };
}

/** `--to` first, then the configured peers' APIs, then the members node.json last recorded. */
function memberApis(identity: DataDirIdentity, config: NodeConfig, to: string[]): MemberApi[] {
  const apis = new Map<string, string>();
  for (const [index, apiUrl] of to.entries()) apis.set(`--to[${index}]`, apiUrl);
  const known = new Set(apis.values());
  const add = (id: string, apiUrl: string | undefined) => {
    if (!apiUrl || id === config.id || known.has(apiUrl)) return;
    apis.set(id, apiUrl);
    known.add(apiUrl);
  };
  for (const [id, peer] of Object.entries(config.peers)) add(id, peer.apiUrl);
  for (const [id, member] of Object.entries(identity.members)) add(id, member.apiUrl);
  return [...apis].map(([id, apiUrl]) => ({ id, apiUrl }));
}

/** The senders' APIs by node id (for the last acks): the configured peers' and node.json's. */
function senderApis(identity: DataDirIdentity, config: NodeConfig): Map<string, string> {
  const apis = new Map<string, string>();
  for (const [id, member] of Object.entries(identity.members)) if (member.apiUrl) apis.set(id, member.apiUrl);
  for (const [id, peer] of Object.entries(config.peers)) if (peer.apiUrl) apis.set(id, peer.apiUrl);
  apis.delete(config.id);
  return apis;
}
