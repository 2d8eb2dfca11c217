// What a node's security needs at run time, opened once per node before the components that
// use it: the record cipher (encryption at rest; a bad key refuses the start before anything
// is written), the audit log at <dataDir>/audit with its retention timer, and the API gate.
// It also checks the delivery spool's sealed records before the spool opens (spool-scrub.ts),
// so it must open before the spool; it claims the data dir in this process so that check never
// opens a LevelDB another node of this process holds (classic-level would lose its lock).

import { join, resolve } from "node:path";
import { CfnError } from "../errors.js";
import type { RoutingCommand, RoutingResult } from "../node/routing/commands.js";
import type { Logger } from "../obs/logger.js";
import type { Metrics } from "../obs/metrics.js";
import { AuditLog } from "./audit-log.js";
import { parseSecurityConfig, type SecurityConfig } from "./config.js";
import { type MemberAddresses, SecurityGate } from "./gate.js";
import { PLAINTEXT_CODEC, RecordCipher, type SealedRecordCodec } from "./record-cipher.js";
import { scrubSpool } from "./spool-scrub.js";

export interface NodeSecurityOptions {
  nodeId: string;
  clusterToken: string;
  dataDir: string;
  config?: Partial<SecurityConfig>;
  policies: () => ReadonlyMap<string, unknown>;
  propose: (command: RoutingCommand) => Promise<RoutingResult>;
  /** The cluster's members and their URLs (only the cluster token may change them). */
  members?: () => ReadonlyMap<string, MemberAddresses>;
  logger: Logger;
  metrics: Metrics;
  onRejected?: (reason: string) => void;
}

/** Data dirs whose security is open in this process. */
const claimedDataDirs = new Set<string>();

export class NodeSecurity {
  readonly config: SecurityConfig;
  readonly gate: SecurityGate;
  readonly audit: AuditLog | undefined;
  /** Seals mirrored and spooled records; the identity codec when encryption is off. */
  readonly codec: SealedRecordCodec;
  private readonly pruneTimer: NodeJS.Timeout | undefined;
  private readonly dataDir: string;

  private constructor(
    options: NodeSecurityOptions,
    dataDir: string,
    config: SecurityConfig,
    audit: AuditLog | undefined,
    codec: SealedRecordCodec,
  ) {
    this.config = config;
    this.audit = audit;
    this.codec = codec;
    this.dataDir = dataDir;
    this.gate = new SecurityGate({ ...options, config, audit });
    if (audit) {
      const logger = options.logger.child("audit");
      this.pruneTimer = setInterval(() => {
        audit.prune().catch((error) => logger.warn("audit retention sweep failed", { error }));
      }, config.auditPruneIntervalMs);
      this.pruneTimer.unref();
    }
  }

  /**
   * CFN_ERR_CONFIG_INVALID (settings), CFN_ERR_KEY_FILE (key file, or a stored record sealed with
   * a key not configured) or CFN_ERR_DATA_DIR_LOCKED when the node must not start.
   */
  static async open(options: NodeSecurityOptions): Promise<NodeSecurity> {
    const config = parseSecurityConfig(options.config);
    const codec = config.encryptionKeyFile
      ? RecordCipher.fromKeyFiles(config.encryptionKeyFile, config.encryptionPreviousKeyFiles)
      : PLAINTEXT_CODEC;
    const logger = options.logger.child("security");
    if (codec instanceof RecordCipher)
      logger.info("encryption at rest on", { keyId: codec.activeKeyId, keys: codec.keyIds });
    const dataDir = resolve(options.dataDir);
    if (claimedDataDirs.has(dataDir))
      throw new CfnError("CFN_ERR_DATA_DIR_LOCKED", `data dir ${dataDir} is already open in this process`);
    claimedDataDirs.add(dataDir);
    let audit: AuditLog | undefined;
    try {
      await scrubSpool(join(dataDir, "spool"), codec, logger);
      if (config.auditEnabled) {
        audit = await AuditLog.open({
          path: join(dataDir, "audit"),
          logger: options.logger,
          retentionDays: config.auditRetentionDays,
          entriesMax: config.auditEntriesMax,
          batchEntriesMax: config.auditBatchEntriesMax,
        });
        await audit.prune();
      }
    } catch (error) {
      claimedDataDirs.delete(dataDir);
      await audit?.close().catch(() => undefined);
      throw error;
    }
    return new NodeSecurity(options, dataDir, config, audit, codec);
  }

  async close(): Promise<void> {
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    try {
      this.gate.close(); // its last summaries of suppressed refusals go into the log first
      await this.audit?.close();
    } finally {
      claimedDataDirs.delete(this.dataDir);
    }
  }
}
