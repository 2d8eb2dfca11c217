// The `security` settings (RBAC, audit, encryption at rest): a group of the main schema
// (src/config/schema.ts), documented in docs/CONFIGURATION.md and docs/SECURITY.md.

import { z } from "zod";
import { CfnError } from "../errors.js";

const int = (min: number, max: number) => z.number().int().min(min).max(max);

export const securitySchema = z
  .object({
    anonymousReadAllowed: z
      .boolean()
      .default(true)
      .describe(
        "GET /v1/status, /v1/routing, /metrics and dashboard pages without a token (as before RBAC); false: they need a token with status.read / metrics.read.",
      ),
    tokensMax: int(1, 200)
      .default(100)
      .describe(
        "API tokens the cluster holds (each is one routing-state policy; routing policiesMax is 256).",
      ),
    tokenTtlDaysMax: int(1, 36_500)
      .default(3650)
      .describe("Longest lifetime a new API token may be given, in days."),
    auditEnabled: z
      .boolean()
      .default(true)
      .describe("Record state-changing and refused API requests in <dataDir>/audit."),
    auditRetentionDays: int(1, 36_500)
      .default(90)
      .describe("Audit entries older than this are deleted, in days."),
    auditEntriesMax: int(100, 100_000_000)
      .default(1_000_000)
      .describe("Audit entries kept; the oldest are deleted past it."),
    auditBatchEntriesMax: int(1, 10_000)
      .default(256)
      .describe("Audit entries written in one synced LevelDB batch (group commit)."),
    auditQueryEntriesMax: int(1, 100_000)
      .default(1000)
      .describe("Most audit entries one query (GET /v1/audit, cfn audit) returns."),
    auditPruneIntervalMs: int(1000, 86_400_000)
      .default(60_000)
      .describe("How often entries past auditRetentionDays are deleted, in ms."),
    auditRefusalsPerSecondMax: int(1, 100_000)
      .default(10)
      .describe(
        "Refused requests from one source address audited and warn-logged per second; past it they are counted and summarised in one later entry.",
      ),
    encryptionKeyFile: z
      .string()
      .default("")
      .describe(
        "File with the 32-byte AES-256-GCM key (mode 0600) sealing mirrored and spooled messages; empty: off.",
      ),
    encryptionPreviousKeyFiles: z
      .array(z.string().min(1))
      .max(16)
      .default([])
      .describe(
        "Older key files, to read records sealed before a key rotation (JSON list in the environment).",
      ),
  })
  .strict();

export type SecurityConfig = z.infer<typeof securitySchema>;

/** Validates the settings; CFN_ERR_CONFIG_INVALID names every problem. */
export function parseSecurityConfig(value: Partial<SecurityConfig> = {}): SecurityConfig {
  const parsed = securitySchema.safeParse(value);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => `security.${issue.path.join(".")}: ${issue.message}`);
  throw new CfnError("CFN_ERR_CONFIG_INVALID", `invalid security configuration: ${problems.join("; ")}`, {
    problems,
  });
}
