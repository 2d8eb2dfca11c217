// `cfn token` (API tokens: create, list, revoke, whoami) and `cfn audit` (query, verify): thin
// clients of a node's HTTP API; `cfn audit verify --data-dir` also checks a stopped node's log
// on disk (on a copy: the data dir is only read). docs/SECURITY.md describes roles, tokens and the
// audit log.

import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { CfnError } from "../errors.js";
import { apiRequest } from "../node/node.js";
import { type AuditEntry, type AuditVerifyReport, verifyAuditLogCopy } from "../security/audit-log.js";
import type { TokenListing } from "../security/tokens.js";
import { type ApiFlags, apiOf, collect, withApi } from "./api-flags.js";
import { printJson, printLine, table } from "./output.js";

export function registerSecurityCommands(program: Command): void {
  const token = program.command("token").description("API tokens bound to a principal and roles (RBAC)");

  withApi(token.command("create").description("create a token; it is printed once and never stored"))
    .requiredOption("--principal <name>", "who the token acts for, e.g. alice or ci-bot")
    .option(
      "--role <name>",
      "role: admin, operator, agent, auditor, viewer or a custom role (repeatable)",
      collect,
      [],
    )
    .option("--ttl-days <days>", "expire after this many days (default: no expiry)")
    .option(
      "--agents <list>",
      "act only as these agents: ids or prefixes ending in *, comma-separated (w1,w2 or team-a-*); default: any",
    )
    .action(
      async (flags: ApiFlags & { principal: string; role: string[]; ttlDays?: string; agents?: string }) => {
        const { api, token: credential } = apiOf(flags);
        if (flags.role.length === 0)
          throw new CfnError("CFN_ERR_INVALID_MESSAGE", "give at least one --role");
        const body: Record<string, unknown> = { principal: flags.principal, roles: flags.role };
        if (flags.ttlDays !== undefined) body.ttlDays = Number(flags.ttlDays);
        if (flags.agents !== undefined) body.agents = flags.agents.split(",").map((agent) => agent.trim());
        const created = (await apiRequest(
          api,
          "POST",
          "/v1/security/tokens",
          credential,
          body,
        )) as TokenListing & {
          token: string;
        };
        if (flags.json) return printJson(created);
        printLine(created.token);
        printLine(
          `token ${created.id} for ${created.principal} (${created.roles.join(", ")}${created.agents ? `; agents ${created.agents.join(", ")}` : ""}), expires ${created.expiresAt ?? "never"}.`,
        );
        printLine("Store it now: it is not shown again (only its hash is kept).");
      },
    );

  withApi(
    token.command("list").description("tokens of the cluster (ids, principals, roles; never secrets)"),
  ).action(async (flags: ApiFlags) => {
    const { api, token: credential } = apiOf(flags);
    const { tokens } = (await apiRequest(api, "GET", "/v1/security/tokens", credential)) as {
      tokens: TokenListing[];
    };
    if (flags.json) return printJson({ tokens });
    const rows = tokens.map((t) => [
      t.id,
      t.principal,
      t.roles.join(","),
      t.agents?.join(",") ?? "*",
      t.createdAt,
      t.expiresAt ?? "never",
      t.createdBy,
    ]);
    printLine(table([["ID", "PRINCIPAL", "ROLES", "AGENTS", "CREATED", "EXPIRES", "BY"], ...rows]));
  });

  withApi(token.command("revoke").description("revoke a token on every node"))
    .argument("<id>", "the token id (the 12 hex digits after cfn_)")
    .action(async (id: string, flags: ApiFlags) => {
      const { api, token: credential } = apiOf(flags);
      const result = await apiRequest(
        api,
        "DELETE",
        `/v1/security/tokens/${encodeURIComponent(id)}`,
        credential,
      );
      if (flags.json) printJson(result);
      else printLine(`token ${id} revoked`);
    });

  withApi(
    token.command("whoami").description("the principal, roles and permissions of the token in use"),
  ).action(async (flags: ApiFlags) => {
    const { api, token: credential } = apiOf(flags);
    const me = (await apiRequest(api, "GET", "/v1/security/whoami", credential)) as {
      name: string;
      roles: string[];
      permissions: string[];
    };
    if (flags.json) printJson(me);
    else
      printLine(
        `${me.name}: roles ${me.roles.join(", ") || "none"}; permissions ${me.permissions.join(", ")}`,
      );
  });

  const audit = withApi(program.command("audit").description("the audit log of a node (needs audit.read)"))
    .option("--since <when>", "ISO time, epoch ms, or a duration back from now: 90s, 15m, 2h, 7d")
    .option("--principal <name>", "only this principal's entries")
    .option("--action <prefix>", "only actions starting with this, e.g. 'POST /v1/members' or 'DELETE'")
    .option("--outcome <outcome>", "ok, denied or failed")
    .option("--limit <n>", "most recent entries shown")
    .action(
      async (
        flags: ApiFlags & {
          since?: string;
          principal?: string;
          action?: string;
          outcome?: string;
          limit?: string;
        },
      ) => {
        const { api, token: credential } = apiOf(flags);
        const query = new URLSearchParams();
        for (const name of ["since", "principal", "action", "outcome", "limit"] as const) {
          const value = flags[name];
          if (value !== undefined) query.set(name, value);
        }
        const { entries } = (await apiRequest(api, "GET", `/v1/audit?${query}`, credential)) as {
          entries: AuditEntry[];
        };
        if (flags.json) return printJson({ entries });
        const rows = entries.map((e) => [
          String(e.seq),
          e.at,
          e.principal,
          e.action,
          `${e.outcome} ${e.status}`,
          e.requestId,
        ]);
        printLine(table([["SEQ", "AT", "PRINCIPAL", "ACTION", "OUTCOME", "REQUEST"], ...rows]));
      },
    );

  // `cfn audit` has the same --api/--token/--json options: commander hands them to the parent
  // when they follow `verify`, so the action reads them with the parent's (optsWithGlobals).
  withApi(audit.command("verify").description("walk the audit hash chain; exit 1 when it is broken"))
    .option("--data-dir <dir>", "check a stopped node's log on disk instead of asking the API")
    .action(async (_flags: unknown, command: Command) => {
      const flags = command.optsWithGlobals<ApiFlags & { dataDir?: string }>();
      const report = flags.dataDir ? await verifyOnDisk(flags.dataDir) : await verifyThroughApi(flags);
      if (flags.json) printJson(report);
      else if (report.ok)
        printLine(
          `audit chain intact: ${report.entries} entries (seq ${report.firstSeq}..${report.headSeq}), head ${report.headHash}`,
        );
      if (!report.ok) {
        throw new CfnError(
          "CFN_ERR_AUDIT_TAMPERED",
          `audit chain broken at seq ${report.problem?.seq}: ${report.problem?.reason}`,
          { ...report.problem },
        );
      }
    });
}

async function verifyThroughApi(flags: ApiFlags): Promise<AuditVerifyReport> {
  const { api, token } = apiOf(flags);
  return (await apiRequest(api, "GET", "/v1/audit/verify", token)) as AuditVerifyReport;
}

async function verifyOnDisk(dataDir: string): Promise<AuditVerifyReport> {
  if (!existsSync(join(dataDir, "audit")))
    throw new CfnError(
      "CFN_ERR_CONFIG_INVALID",
      `no audit log in ${dataDir} (expected ${join(dataDir, "audit")})`,
    );
  return verifyAuditLogCopy(join(dataDir, "audit"));
}
