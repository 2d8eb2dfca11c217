// The security gate of a node's HTTP API: who is asking (cluster token, API token, or nobody),
// may they (the route's permission under the replicated policy), and a record of what they did
// (the audit log). It also serves the security routes: tokens and the audit log.
//
// The API calls `admit` first for every request (it throws CFN_ERR_AUTH 401 / CFN_ERR_FORBIDDEN
// 403), `admitCommand` for each routing command, and `route` before its own routes. Auditing
// hangs on the response's close event, so the entry carries the status the caller saw.

import { createHash, randomUUID, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { CfnError } from "../errors.js";
import { isValidId, type RoutingCommand, type RoutingResult } from "../node/routing/commands.js";
import type { Logger } from "../obs/logger.js";
import type { Metrics } from "../obs/metrics.js";
import type { AuditLog, AuditOutcome } from "./audit-log.js";
import type { SecurityConfig } from "./config.js";
import {
  customRolePermissions,
  PERMISSIONS,
  type Permission,
  permissionForRoute,
  permissionsForCommand,
  permissionsOf,
  ROLE_POLICY_PREFIX,
  roleExists,
  TOKEN_POLICY_PREFIX,
} from "./permissions.js";
import { RefusalThrottle, type SuppressedRefusals } from "./refusal-throttle.js";
import {
  agentInScope,
  asTokenRecord,
  isAgentScopeEntry,
  listTokens,
  mintToken,
  TOKEN_AGENTS_MAX,
  TOKEN_ROLES_MAX,
  verifyToken,
} from "./tokens.js";

/** Who a request acts for. The cluster token is a superuser (compatibility, node-to-node calls). */
export interface Principal {
  name: string;
  kind: "cluster" | "token" | "anonymous";
  tokenId?: string;
  roles: string[];
  /** A token's agent scope (ids, `prefix*`): the agents it may act as; absent: any. */
  agents?: string[];
}

/** One admitted request: its id, principal, and what the audit entry will say. */
export interface RequestAccess {
  requestId: string;
  principal: Principal;
  method: string;
  path: string;
  /** Set when the request changes state or was refused: it gets an audit entry. */
  audited: boolean;
  /** A refusal past security.auditRefusalsPerSecondMax: counted in a later summary instead. */
  suppressed?: boolean;
  /** The caller's address (read at admission: a cut-off request's socket is detached later). */
  remote: string;
  detail: Record<string, unknown>;
}

/** A member's addresses as the routing state holds them. */
export interface MemberAddresses {
  peerUrl: string;
  apiUrl: string;
}

export interface SecurityGateOptions {
  nodeId: string;
  clusterToken: string;
  config: SecurityConfig;
  /** The replicated policies (routing state), read at every request. */
  policies: () => ReadonlyMap<string, unknown>;
  propose: (command: RoutingCommand) => Promise<RoutingResult>;
  /**
   * The members the routing state knows: an API token may not change an existing member's URLs
   * (they receive the cluster token). Without it, no member is known.
   */
  members?: () => ReadonlyMap<string, MemberAddresses>;
  audit: AuditLog | undefined;
  logger: Logger;
  metrics: Metrics;
  /** Also counts refusals in the API's own metric (cfn_node_api_rejected_total). */
  onRejected?: (reason: string) => void;
  now?: () => number;
}

export interface SecurityAnswer {
  status: number;
  body: unknown;
}

const ANONYMOUS: Principal = { name: "anonymous", kind: "anonymous", roles: [] };
const CLUSTER: Principal = { name: "cluster", kind: "cluster", roles: ["admin"] };
const REQUEST_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;
/** Names no token may carry: the audit log and `createdBy` would read as these principals. */
const RESERVED_PRINCIPALS = new Set([ANONYMOUS.name, CLUSTER.name]);
/** Body fields copied into an audit entry's detail (small identifiers, never payloads). */
const DETAIL_FIELDS = [
  "agent",
  "team",
  "id",
  "to",
  "peerUrl",
  "apiUrl",
  "principal",
  "roles",
  "agents",
  "from",
  "epoch",
  "seq",
];
const TOKEN_BYTES_MAX = 1024;
/** `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 7235). */
const BEARER_PATTERN = /^bearer +(\S+) *$/i;
/** Routing command fields copied into an audit entry's detail: ids and URLs, never values. */
const COMMAND_DETAIL_FIELDS = [
  "id",
  "peerUrl",
  "apiUrl",
  "state",
  "agent",
  "node",
  "team",
  "coordinator",
  "name",
  "scope",
  "round",
] as const;
/** Commands of a batch described in an audit entry's detail; the rest are counted. */
const COMMAND_DETAILS_MAX = 16;

export class SecurityGate {
  private readonly options: SecurityGateOptions;
  private readonly logger: Logger;
  private readonly clusterDigest: Buffer;
  private readonly now: () => number;
  private readonly denied;
  private readonly auditEntries;
  private readonly auditErrors;
  private readonly refusalsSuppressed;
  private readonly refusals: RefusalThrottle;

  constructor(options: SecurityGateOptions) {
    this.options = options;
    this.logger = options.logger.child("security");
    this.clusterDigest = digest(options.clusterToken);
    this.now = options.now ?? Date.now;
    this.denied = options.metrics.counter(
      "cfn_security_denied_total",
      "API requests refused by the security gate, by reason (token: missing, wrong or expired; forbidden: role lacks the permission)",
      ["reason"],
    );
    this.auditEntries = options.metrics.counter(
      "cfn_security_audit_entries_total",
      "Entries appended to the audit log, by outcome",
      ["outcome"],
    );
    this.auditErrors = options.metrics.counter(
      "cfn_security_audit_errors_total",
      "Audit entries that could not be written (the request itself was served)",
    );
    this.refusalsSuppressed = options.metrics.counter(
      "cfn_security_refusals_suppressed_total",
      "Refused requests not audited or logged one by one (past security.auditRefusalsPerSecondMax from one address); summarised per address",
    );
    this.refusals = new RefusalThrottle({
      perSecondMax: options.config.auditRefusalsPerSecondMax,
      now: this.now,
      onSuppressed: (summary) => {
        try {
          this.reportSuppressed(summary);
        } catch (error) {
          // Called from a timer too: it must never throw.
          this.auditErrors.inc();
          this.logger.error("audit summary lost", { error });
        }
      },
    });
  }

  /** Writes the summaries of refusals still being counted (call before the audit log closes). */
  close(): void {
    this.refusals.close();
  }

  /**
   * Authenticates and authorizes a request by its route; throws CFN_ERR_AUTH (401) or
   * CFN_ERR_FORBIDDEN (403). Sets x-request-id on the response and arranges its audit entry.
   */
  admit(request: IncomingMessage, response: ServerResponse, method: string, path: string): RequestAccess {
    const header = request.headers["x-request-id"];
    const requestId = typeof header === "string" && REQUEST_ID_PATTERN.test(header) ? header : randomUUID();
    response.setHeader("x-request-id", requestId);
    const access: RequestAccess = {
      requestId,
      principal: ANONYMOUS,
      method,
      path,
      audited: isAuditedRoute(method, path),
      // Read now: once a request is cut off (a body past apiBodyBytesMax) its socket is detached
      // by the time the response closes.
      remote: request.socket?.remoteAddress ?? "",
      detail: {},
    };
    response.once("close", () => {
      try {
        this.recordOutcome(access, response);
      } catch (error) {
        // A listener must never throw: it would end the process.
        this.auditErrors.inc();
        this.logger.error("audit entry lost", { requestId: access.requestId, error });
      }
    });
    access.principal = this.authenticate(request, access);
    const needed = permissionForRoute(method, path);
    if (needed === undefined) return access;
    if (access.principal.kind === "anonymous") {
      const openRead = needed === "status.read" || needed === "metrics.read";
      if (openRead && this.options.config.anonymousReadAllowed) return access;
      this.refuse(access, "token", "missing token (x-cfn-cluster-token or Authorization: Bearer)");
    }
    if (needed !== "authenticated") this.require(access, needed);
    const parts = path.split("/");
    if (method === "DELETE" && parts.length === 4 && parts[1] === "v1" && parts[2] === "agents")
      this.requireAgent(access, parts[3]);
    return access;
  }

  /** Checks a routing command against the caller's permissions (a batch: each command in it). */
  admitCommand(access: RequestAccess, command: RoutingCommand): void {
    const commands = flatten(command);
    access.detail.ops = [...new Set(commands.map((inner) => inner.op))];
    access.detail.commands = commands.slice(0, COMMAND_DETAILS_MAX).map(commandDetail);
    if (commands.length > COMMAND_DETAILS_MAX)
      access.detail.commandsNotShown = commands.length - COMMAND_DETAILS_MAX;
    for (const permission of permissionsForCommand(command)) this.require(access, permission);
    for (const inner of commands) {
      if (inner.op === "member.upsert")
        this.admitMemberAddresses(access, inner.id, inner.peerUrl, inner.apiUrl);
      if (inner.op === "agent.register" || inner.op === "agent.up" || inner.op === "agent.remove")
        this.requireAgent(access, inner.agent);
    }
    // Security policies written raw must be what the gate can read: a role naming a permission
    // that does not exist, or a token record it cannot parse, would fail only later.
    for (const inner of commands) {
      if (inner.op !== "policy.set" || inner.value === null) continue;
      if (inner.name.startsWith(ROLE_POLICY_PREFIX) && customRolePermissions(inner.value) === undefined)
        throw invalid(`${inner.name}: value must be {permissions: [...]} of ${PERMISSIONS.join(", ")}`);
      if (inner.name.startsWith(TOKEN_POLICY_PREFIX) && asTokenRecord(inner.value) === undefined)
        throw invalid(`${inner.name}: not a token record (create tokens with POST /v1/security/tokens)`);
    }
  }

  /** Serves the security routes; undefined for any other route. */
  async route(
    access: RequestAccess,
    method: string,
    url: URL,
    body?: Record<string, unknown>,
  ): Promise<SecurityAnswer | undefined> {
    if (body) Object.assign(access.detail, pickDetail(body));
    const path = url.pathname;
    if (path === "/v1/members" && method === "POST" && body)
      this.admitMemberAddresses(access, body.id, body.peerUrl, body.apiUrl);
    // A token scoped to some agents registers and sends only as them.
    if (path === "/v1/agents" && method === "POST") this.requireAgent(access, body?.agent);
    if (path === "/v1/send" && method === "POST") this.requireAgent(access, body?.from);
    if (path === "/v1/security/whoami" && method === "GET") return this.whoami(access);
    if (path === "/v1/security/tokens") {
      if (method === "GET") return { status: 200, body: { tokens: listTokens(this.options.policies()) } };
      if (method === "POST") return this.createToken(access, body ?? {});
    }
    if (path.startsWith("/v1/security/tokens/") && method === "DELETE")
      return this.revokeToken(access, decodeURIComponent(path.slice("/v1/security/tokens/".length)));
    if (path === "/v1/audit" && method === "GET") return this.queryAudit(url);
    if (path === "/v1/audit/verify" && method === "GET") {
      const report = await this.requireAudit().verify();
      return { status: 200, body: report };
    }
    return undefined;
  }

  private authenticate(request: IncomingMessage, access: RequestAccess): Principal {
    const header = request.headers["x-cfn-cluster-token"];
    const authorization = request.headers.authorization;
    const bearer = authorization === undefined ? undefined : BEARER_PATTERN.exec(authorization)?.[1];
    const token = typeof header === "string" ? header : bearer;
    if (token === undefined) return ANONYMOUS;
    if (
      token.length > 0 &&
      token.length <= TOKEN_BYTES_MAX &&
      timingSafeEqual(digest(token), this.clusterDigest)
    )
      return CLUSTER;
    const verified = verifyToken(token, this.options.policies(), new Date(this.now()));
    if (!verified.ok) {
      access.detail.tokenProblem = verified.reason;
      this.refuse(access, "token", `${verified.reason === "expired" ? "expired" : "wrong"} token`);
    }
    return {
      name: verified.record.principal,
      kind: "token",
      tokenId: verified.id,
      roles: verified.record.roles,
      ...(verified.record.agents ? { agents: verified.record.agents } : {}),
    };
  }

  private require(access: RequestAccess, permission: Permission): void {
    const { principal } = access;
    if (principal.kind === "cluster") return;
    if (principal.kind === "token" && permissionsOf(principal.roles, this.options.policies()).has(permission))
      return;
    if (principal.kind === "anonymous") this.refuse(access, "token", "missing token");
    access.detail.permission = permission;
    this.refuse(
      access,
      "forbidden",
      `principal "${principal.name}" (roles ${principal.roles.join(", ") || "none"}) lacks ${permission}`,
    );
  }

  /**
   * A member's URLs receive the cluster token (every peer dials its peerUrl with it, a follower
   * forwards to the leader's apiUrl with it): an existing member's URLs change only with the
   * cluster token — a node announces its own addresses so. Re-adding with the same URLs passes.
   */
  private admitMemberAddresses(access: RequestAccess, id: unknown, peerUrl: unknown, apiUrl: unknown): void {
    if (access.principal.kind === "cluster" || typeof id !== "string") return;
    const existing = this.options.members?.().get(id);
    if (!existing || (existing.peerUrl === peerUrl && existing.apiUrl === apiUrl)) return;
    access.detail.needs = "cluster token";
    this.refuse(
      access,
      "forbidden",
      `member ${JSON.stringify(id)} exists: only the cluster token may change its peerUrl or apiUrl (a node announces its own)`,
    );
  }

  /** A token with an agent scope acts only as the agents in it (unscoped tokens: any agent). */
  private requireAgent(access: RequestAccess, agent: unknown): void {
    const scope = access.principal.agents;
    if (access.principal.kind !== "token" || scope === undefined) return;
    if (typeof agent === "string" && agentInScope(scope, agent)) return;
    access.detail.outOfScope = typeof agent === "string" && agent.length <= 512 ? agent : null;
    this.refuse(
      access,
      "forbidden",
      `principal "${access.principal.name}" may act only as agents ${scope.join(", ")}, not ${JSON.stringify(agent ?? null)}`,
    );
  }

  private refuse(access: RequestAccess, reason: "token" | "forbidden", message: string): never {
    access.audited = true;
    this.denied.inc({ reason });
    this.options.onRejected?.(reason);
    if (this.refusals.admit(access.remote, access.principal.name, reason))
      this.logger.warn("api request denied", {
        requestId: access.requestId,
        principal: access.principal.name,
        method: access.method,
        path: access.path,
        reason: message,
      });
    else {
      access.suppressed = true;
      this.refusalsSuppressed.inc();
    }
    if (reason === "token") throw new CfnError("CFN_ERR_AUTH", message, { requestId: access.requestId });
    throw new CfnError("CFN_ERR_FORBIDDEN", message, {
      requestId: access.requestId,
      permission: access.detail.permission,
    });
  }

  private whoami(access: RequestAccess): SecurityAnswer {
    const { principal } = access;
    const permissions =
      principal.kind === "cluster"
        ? ["*"]
        : [...permissionsOf(principal.roles, this.options.policies())].sort();
    return { status: 200, body: { ...principal, permissions } };
  }

  private async createToken(access: RequestAccess, body: Record<string, unknown>): Promise<SecurityAnswer> {
    const policies = this.options.policies();
    const { principal, ttlDays } = body;
    const roles = Array.isArray(body.roles) ? body.roles : typeof body.role === "string" ? [body.role] : [];
    if (!isValidId(principal)) throw invalid("principal must match [A-Za-z0-9._-]{1,128}");
    if (RESERVED_PRINCIPALS.has(principal))
      throw invalid(
        `principal ${JSON.stringify(principal)} is reserved (the cluster token, unauthenticated callers)`,
      );
    if (roles.length === 0 || roles.length > TOKEN_ROLES_MAX || !roles.every(isValidId))
      throw invalid(`roles: 1 to ${TOKEN_ROLES_MAX} role names`);
    const unknown = roles.filter((role) => !roleExists(role, policies));
    if (unknown.length > 0) throw invalid(`unknown role(s): ${unknown.join(", ")}`);
    const agents = body.agents;
    if (
      agents !== undefined &&
      (!Array.isArray(agents) ||
        agents.length === 0 ||
        agents.length > TOKEN_AGENTS_MAX ||
        !agents.every(isAgentScopeEntry))
    )
      throw invalid(`agents: 1 to ${TOKEN_AGENTS_MAX} agent ids or prefixes ending in * (w1, team-a-*)`);
    const ttlMax = this.options.config.tokenTtlDaysMax;
    if (ttlDays !== undefined && (typeof ttlDays !== "number" || !(ttlDays > 0) || ttlDays > ttlMax))
      throw invalid(`ttlDays must be a number in (0, ${ttlMax}] (security.tokenTtlDaysMax)`);
    if (listTokens(policies).length >= this.options.config.tokensMax)
      throw invalid(
        `the cluster holds security.tokensMax (${this.options.config.tokensMax}) tokens; revoke one first`,
      );
    const minted = mintToken(
      principal,
      roles,
      access.principal.name,
      new Date(this.now()),
      ttlDays as number | undefined,
      agents as string[] | undefined,
    );
    access.detail.tokenId = minted.id;
    const result = await this.options.propose({
      op: "policy.set",
      name: `${TOKEN_POLICY_PREFIX}${minted.id}`,
      value: minted.record,
    });
    if (!result.ok) return { status: 409, body: result };
    this.logger.info("api token created", {
      tokenId: minted.id,
      principal,
      roles,
      ...(agents === undefined ? {} : { agents }),
      by: access.principal.name,
    });
    const { sha256: _hash, ...visible } = minted.record;
    return { status: 201, body: { id: minted.id, token: minted.token, ...visible } };
  }

  private async revokeToken(access: RequestAccess, id: string): Promise<SecurityAnswer> {
    access.detail.tokenId = id;
    if (!/^[0-9a-f]{12}$/.test(id) || !this.options.policies().has(`${TOKEN_POLICY_PREFIX}${id}`))
      return { status: 404, body: { error: { code: "CFN_ERR_INVALID_MESSAGE", message: `no token ${id}` } } };
    const result = await this.options.propose({
      op: "policy.set",
      name: `${TOKEN_POLICY_PREFIX}${id}`,
      value: null,
    });
    if (!result.ok) return { status: 409, body: result };
    this.logger.info("api token revoked", { tokenId: id, by: access.principal.name });
    return { status: 200, body: { ok: true, revoked: id } };
  }

  private async queryAudit(url: URL): Promise<SecurityAnswer> {
    const log = this.requireAudit();
    const params = url.searchParams;
    const limitMax = this.options.config.auditQueryEntriesMax;
    const limit = params.has("limit") ? Number(params.get("limit")) : limitMax;
    if (!Number.isSafeInteger(limit) || limit < 1) throw invalid("limit must be a whole number ≥ 1");
    const since = params.get("since");
    const outcome = params.get("outcome") ?? undefined;
    if (outcome !== undefined && !["ok", "denied", "failed"].includes(outcome))
      throw invalid("outcome: ok, denied or failed");
    const entries = await log.query({
      sinceMs: since ? parseSince(since, this.now()) : undefined,
      principal: params.get("principal") ?? undefined,
      action: params.get("action") ?? undefined,
      outcome: outcome as AuditOutcome | undefined,
      limit: Math.min(limit, limitMax),
    });
    return { status: 200, body: { node: this.options.nodeId, entries } };
  }

  private requireAudit(): AuditLog {
    if (!this.options.audit) throw invalid("the audit log is off on this node (security.auditEnabled)");
    return this.options.audit;
  }

  private recordOutcome(access: RequestAccess, response: ServerResponse): void {
    const log = this.options.audit;
    if (!access.audited || access.suppressed || !log) return;
    const status = response.headersSent ? response.statusCode : 0;
    const outcome: AuditOutcome =
      status === 401 || status === 403 ? "denied" : status > 0 && status < 400 ? "ok" : "failed";
    // The data plane (message sends) is audited only when refused: one entry per message would
    // make the audit log the bottleneck of the bus.
    if (access.path === "/v1/send" && outcome !== "denied") return;
    this.auditEntries.inc({ outcome });
    log
      .append({
        node: this.options.nodeId,
        requestId: access.requestId,
        principal: access.principal.name,
        // A token's principal is only a name: the kind and the token id tell a token named
        // "cluster" from the cluster token.
        principalKind: access.principal.kind,
        ...(access.principal.tokenId ? { tokenId: access.principal.tokenId } : {}),
        action: `${access.method} ${access.path}`,
        outcome,
        status,
        remote: access.remote,
        ...(Object.keys(access.detail).length > 0 ? { detail: access.detail } : {}),
      })
      .catch((error) => {
        this.auditErrors.inc();
        this.logger.error("audit entry lost", { requestId: access.requestId, error });
      });
  }

  /** One audit entry and one warn line for the refusals of one address that were not recorded. */
  private reportSuppressed(summary: SuppressedRefusals): void {
    const requestId = randomUUID();
    const detail = {
      summary: `${summary.suppressed} refusals from ${summary.remote || "(unknown address)"} suppressed`,
      suppressed: summary.suppressed,
      from: new Date(summary.firstMs).toISOString(),
      to: new Date(summary.lastMs).toISOString(),
      reasons: summary.reasons,
      principals: summary.principals,
    };
    this.logger.warn("api requests denied, not logged one by one", { remote: summary.remote, ...detail });
    const log = this.options.audit;
    if (!log) return;
    this.auditEntries.inc({ outcome: "denied" });
    log
      .append({
        node: this.options.nodeId,
        requestId,
        // No principal is named "(several)": principals are ids ([A-Za-z0-9._-]).
        principal: summary.principals.length === 1 ? summary.principals[0] : "(several)",
        action: "refusals.suppressed",
        outcome: "denied",
        status: 0,
        remote: summary.remote,
        detail,
      })
      .catch((error) => {
        this.auditErrors.inc();
        this.logger.error("audit entry lost", { requestId, error });
      });
  }
}

/** The commands of a batch (nested batches included), or the command itself. */
function flatten(command: RoutingCommand): Exclude<RoutingCommand, { op: "batch" }>[] {
  if (command.op !== "batch") return [command];
  return command.commands.flatMap(flatten);
}

/** A routing command's identifiers and URLs for the audit log (never values, data or secrets). */
function commandDetail(command: RoutingCommand): Record<string, unknown> {
  const detail: Record<string, unknown> = { op: command.op };
  const fields = command as unknown as Record<string, unknown>;
  for (const field of COMMAND_DETAIL_FIELDS) {
    const value = fields[field];
    if (typeof value === "string" && value.length <= 512) detail[field] = value;
  }
  return detail;
}

/** State-changing routes and reads of sensitive data get an audit entry even when they succeed. */
function isAuditedRoute(method: string, path: string): boolean {
  if (method !== "GET" && method !== "HEAD") return true;
  return path.startsWith("/v1/audit") || path === "/v1/security/tokens";
}

/**
 * `since` of an audit query: an ISO time, epoch milliseconds, or a duration back from now
 * (`90s`, `15m`, `2h`, `7d`). CFN_ERR_INVALID_MESSAGE otherwise.
 */
export function parseSince(text: string, nowMs: number): number {
  const relative = /^(\d+)(s|m|h|d)$/.exec(text);
  if (relative) {
    const unitMs = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[relative[2] as "s" | "m" | "h" | "d"];
    return nowMs - Number(relative[1]) * unitMs;
  }
  if (/^\d{10,}$/.test(text)) return Number(text);
  const parsed = Date.parse(text);
  if (Number.isNaN(parsed))
    throw invalid(`since: an ISO time, epoch ms or a duration like 15m, 2h, 7d (got ${text})`);
  return parsed;
}

function pickDetail(body: Record<string, unknown>): Record<string, unknown> {
  const detail: Record<string, unknown> = {};
  for (const field of DETAIL_FIELDS) {
    const value = body[field];
    if (typeof value === "number" || (typeof value === "string" && value.length <= 512))
      detail[field] = value;
    else if (Array.isArray(value) && value.length <= 64 && value.every((item) => typeof item === "string"))
      detail[field] = value;
  }
  return detail;
}

function invalid(message: string): CfnError {
  return new CfnError("CFN_ERR_INVALID_MESSAGE", message);
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}
