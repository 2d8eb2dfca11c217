// API tokens: `cfn_<id>_<secret>`. The id (12 hex digits) is public and names the token's record
// in the replicated routing state (`sec.token.<id>`); the secret (32 random bytes, base64url) is
// shown once at creation and stored only as its SHA-256 — a fast hash is enough because the
// secret has 256 bits of entropy (no dictionary to slow down), and it keeps authentication cheap.

import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { isValidId } from "../node/routing/commands.js";
import { TOKEN_POLICY_PREFIX } from "./permissions.js";

/** What the routing state holds per token (never the secret). */
export interface TokenRecord {
  principal: string;
  roles: string[];
  /** Hex SHA-256 of the secret part. */
  sha256: string;
  createdAt: string;
  createdBy: string;
  /** ISO time after which the token is refused; null: no expiry. */
  expiresAt: string | null;
  /**
   * The agents the token may act as (register, deregister, agent.* commands, send from): ids, or
   * prefixes ending in `*` (`w*`). Absent: any agent (tokens made before 2026-12-07).
   */
  agents?: string[];
}

export interface TokenListing extends Omit<TokenRecord, "sha256"> {
  id: string;
}

const TOKEN_PATTERN = /^cfn_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;
/** Roles one token may carry. */
export const TOKEN_ROLES_MAX = 8;
/** Agent ids or prefixes one token's scope may list. */
export const TOKEN_AGENTS_MAX = 64;
const AGENT_SCOPE_PATTERN = /^[A-Za-z0-9._-]{1,128}\*?$/;

/** An entry of a token's agent scope: an agent id, or a prefix ending in `*` (not a bare `*`). */
export function isAgentScopeEntry(value: unknown): value is string {
  return (
    typeof value === "string" && AGENT_SCOPE_PATTERN.test(value) && (value.endsWith("*") || isValidId(value))
  );
}

/** Whether `agent` is inside a token's scope; an unscoped token (undefined) covers every agent. */
export function agentInScope(scope: readonly string[] | undefined, agent: string): boolean {
  if (scope === undefined) return true;
  return scope.some((entry) =>
    entry.endsWith("*") ? agent.startsWith(entry.slice(0, -1)) : agent === entry,
  );
}

export function hashSecret(secret: string): string {
  return createHash("sha256").update(secret, "utf8").digest("hex");
}

/** A new token: the text to hand to the user once, and the record to replicate. */
export function mintToken(
  principal: string,
  roles: string[],
  createdBy: string,
  now: Date,
  ttlDays?: number,
  agents?: string[],
): { id: string; token: string; record: TokenRecord } {
  const id = randomBytes(6).toString("hex");
  const secret = randomBytes(32).toString("base64url");
  const expiresAt =
    ttlDays === undefined ? null : new Date(now.getTime() + ttlDays * 86_400_000).toISOString();
  return {
    id,
    token: `cfn_${id}_${secret}`,
    record: {
      principal,
      roles,
      sha256: hashSecret(secret),
      createdAt: now.toISOString(),
      createdBy,
      expiresAt,
      ...(agents === undefined ? {} : { agents }),
    },
  };
}

/** Splits a presented token; undefined when it does not have the token shape. */
export function parseToken(text: string): { id: string; secret: string } | undefined {
  const match = TOKEN_PATTERN.exec(text);
  return match ? { id: match[1], secret: match[2] } : undefined;
}

/** A stored record, checked (the routing state accepts any JSON under a policy name). */
export function asTokenRecord(value: unknown): TokenRecord | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const r = value as Record<string, unknown>;
  if (!isValidId(r.principal) || typeof r.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(r.sha256))
    return undefined;
  if (!Array.isArray(r.roles) || !r.roles.every(isValidId) || r.roles.length > TOKEN_ROLES_MAX)
    return undefined;
  // An expiry that is no time would never pass (NaN compares false): such a record is no token.
  if (r.expiresAt !== null && (typeof r.expiresAt !== "string" || Number.isNaN(Date.parse(r.expiresAt))))
    return undefined;
  // A scope that cannot be read is no token (read as unscoped it would grant every agent).
  if (
    r.agents !== undefined &&
    (!Array.isArray(r.agents) ||
      r.agents.length === 0 ||
      r.agents.length > TOKEN_AGENTS_MAX ||
      !r.agents.every(isAgentScopeEntry))
  )
    return undefined;
  return {
    principal: r.principal,
    roles: r.roles as string[],
    sha256: r.sha256,
    createdAt: String(r.createdAt ?? ""),
    createdBy: String(r.createdBy ?? ""),
    expiresAt: r.expiresAt as string | null,
    ...(r.agents === undefined ? {} : { agents: r.agents as string[] }),
  };
}

/** The matching record of a presented token, or why there is none. */
export function verifyToken(
  text: string,
  policies: ReadonlyMap<string, unknown>,
  now: Date,
):
  | { ok: true; id: string; record: TokenRecord }
  | { ok: false; reason: "malformed" | "unknown" | "expired" } {
  const parsed = parseToken(text);
  if (!parsed) return { ok: false, reason: "malformed" };
  const record = asTokenRecord(policies.get(`${TOKEN_POLICY_PREFIX}${parsed.id}`));
  // Compare even when unknown, so the time taken does not tell which ids exist.
  const expected = Buffer.from(record?.sha256 ?? "0".repeat(64), "hex");
  const matches = timingSafeEqual(Buffer.from(hashSecret(parsed.secret), "hex"), expected);
  if (!record || !matches) return { ok: false, reason: "unknown" };
  if (record.expiresAt !== null && Date.parse(record.expiresAt) <= now.getTime())
    return { ok: false, reason: "expired" };
  return { ok: true, id: parsed.id, record };
}

/** Every token record in the policies, without hashes. */
export function listTokens(policies: ReadonlyMap<string, unknown>): TokenListing[] {
  const listed: TokenListing[] = [];
  for (const [name, value] of policies) {
    if (!name.startsWith(TOKEN_POLICY_PREFIX)) continue;
    const record = asTokenRecord(value);
    if (!record) continue;
    const { sha256: _hash, ...visible } = record;
    listed.push({ id: name.slice(TOKEN_POLICY_PREFIX.length), ...visible });
  }
  return listed.sort((a, b) => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : 0));
}
