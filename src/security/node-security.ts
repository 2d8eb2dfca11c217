// What a node's security needs at run time, opened once per node before the components that
// use it: the record cipher (encryption at rest; a bad key refuses the start before anything
// is written), the audit log at <dataDir>/audit with its retention timer, and the API gate.

import { join } from "node:path";
import type { RoutingCommand, RoutingResult } from "../node/routing/commands.js";
import type { Logger } from "../obs/logger.js";
import type { Metrics } from "../obs/metrics.js";
import { AuditLog } from "./audit-log.js";
import { parseSecurityConfig, type SecurityConfig } from "./config.js";
import { SecurityGate } from "./gate.js";
import { PLAINTEXT_CODEC, RecordCipher, type SealedRecordCodec } from "./record-cipher.js";

export interface NodeSecurityOptions {
  nodeId: string;
  clusterToken: string;
  dataDir: string;
  config?: Partial<SecurityConfig>;
  policies: () => ReadonlyMap<string, unknown>;
  propose: (command: RoutingCommand) => Promise<RoutingResult>;
  logger: Logger;
  metrics: Metrics;
  onRejected?: (reason: string) => void;
}

export class NodeSecurity {
  readonly config: SecurityConfig;
  readonly gate: SecurityGate;
  readonly audit: AuditLog | undefined;
  /** Seals mirrored and spooled records; the identity codec when encryption is off. */
  readonly codec: SealedRecordCodec;
  private readonly pruneTimer: NodeJS.Timeout | undefined;

  private constructor(
    options: NodeSecurityOptions,
    config: SecurityConfig,
    audit: AuditLog | undefined,
    codec: SealedRecordCodec,
  ) {
    this.config = config;
    this.audit = audit;
    this.codec = codec;
    this.gate = new SecurityGate({ ...options, config, audit });
    if (audit) {
      const logger = options.logger.child("audit");
      this.pruneTimer = setInterval(() => {
        audit.prune().catch((error) => logger.warn("audit retention sweep failed", { error }));
      }, config.auditPruneIntervalMs);
      this.pruneTimer.unref();
    }
  }

  /** CFN_ERR_CONFIG_INVALID, CFN_ERR_KEY_FILE or CFN_ERR_DATA_DIR_LOCKED when the node must not start. */
  static async open(options: NodeSecurityOptions): Promise<NodeSecurity> {
    const config = parseSecurityConfig(options.config);
    const codec = config.encryptionKeyFile
      ? RecordCipher.fromKeyFiles(config.encryptionKeyFile, config.encryptionPreviousKeyFiles)
      : PLAINTEXT_CODEC;
    if (codec instanceof RecordCipher)
      options.logger
        .child("security")
        .info("encryption at rest on", { keyId: codec.activeKeyId, keys: codec.keyIds });
    const audit = config.auditEnabled
      ? await AuditLog.open({
          path: join(options.dataDir, "audit"),
          logger: options.logger,
          retentionDays: config.auditRetentionDays,
          entriesMax: config.auditEntriesMax,
          batchEntriesMax: config.auditBatchEntriesMax,
        })
      : undefined;
    const security = new NodeSecurity(options, config, audit, codec);
    await audit?.prune();
    return security;
  }

  async close(): Promise<void> {
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    await this.audit?.close();
  }
}
