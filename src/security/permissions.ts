// Role-based access control, the pure part: the permissions an API action needs, the built-in
// roles, and how a principal's roles resolve to permissions. No I/O, no clock: the same policy
// (replicated in the routing state) gives the same answer on every node.

import type { RoutingCommand } from "../node/routing/commands.js";

/** Every permission an API action can need. */
export const PERMISSIONS = [
  "status.read", // GET /v1/status, /v1/routing
  "metrics.read", // GET /metrics
  "messages.send", // POST /v1/send
  "agents.write", // register / deregister agents, agent.* routing commands
  "swarm.write", // team checkpoints, topology, team.* routing commands (rounds, swarm ops)
  "members.write", // remove members, leadership transfer, a removed node's hand-off, member.state/remove
  // Add members (POST /v1/members, member.upsert): a member's URLs receive the cluster token (the
  // peers' handshake, a follower's forward to the leader), so adding one hands out the superuser
  // secret. Only admin has it; changing an existing member's URLs needs the cluster token itself.
  "members.add",
  "policy.read", // list API tokens and roles
  "policy.write", // create / revoke tokens, policy.set routing commands
  "audit.read", // query and verify the audit log
] as const;

export type Permission = (typeof PERMISSIONS)[number];

/** Roles every cluster knows; more can be defined as `sec.role.<name>` policies. */
export const BUILT_IN_ROLES: Record<string, readonly Permission[]> = {
  admin: PERMISSIONS,
  operator: [
    "status.read",
    "metrics.read",
    "messages.send",
    "agents.write",
    "swarm.write",
    "members.write",
    "policy.read",
    "audit.read",
  ],
  agent: ["status.read", "messages.send", "agents.write"],
  auditor: ["status.read", "metrics.read", "policy.read", "audit.read"],
  viewer: ["status.read", "metrics.read"],
};

/** Routing-state policy names used by security (policy.set); everything else is not ours. */
export const TOKEN_POLICY_PREFIX = "sec.token.";
export const ROLE_POLICY_PREFIX = "sec.role.";

const PERMISSION_SET = new Set<string>(PERMISSIONS);

export function isPermission(value: unknown): value is Permission {
  return typeof value === "string" && PERMISSION_SET.has(value);
}

/** A custom role as stored in the routing state: `sec.role.<name>` → {permissions}. */
export function customRolePermissions(value: unknown): Permission[] | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const permissions = (value as { permissions?: unknown }).permissions;
  if (!Array.isArray(permissions) || !permissions.every(isPermission)) return undefined;
  return permissions;
}

/** The permissions of a set of roles under the current policies; unknown roles grant nothing. */
export function permissionsOf(
  roles: readonly string[],
  policies: ReadonlyMap<string, unknown>,
): Set<Permission> {
  const granted = new Set<Permission>();
  for (const role of roles) {
    const permissions =
      builtInRole(role) ?? customRolePermissions(policies.get(`${ROLE_POLICY_PREFIX}${role}`));
    for (const permission of permissions ?? []) granted.add(permission);
  }
  return granted;
}

/** A built-in role's permissions; own keys only (`constructor`, `__proto__` are not roles). */
function builtInRole(role: string): readonly Permission[] | undefined {
  return Object.hasOwn(BUILT_IN_ROLES, role) ? BUILT_IN_ROLES[role] : undefined;
}

export function roleExists(role: string, policies: ReadonlyMap<string, unknown>): boolean {
  return (
    builtInRole(role) !== undefined ||
    customRolePermissions(policies.get(`${ROLE_POLICY_PREFIX}${role}`)) !== undefined
  );
}

/**
 * The permission a route needs, by method and path. `undefined`: open to anyone (liveness,
 * readiness). "authenticated": any valid token; the handler checks more (POST /v1/routing checks
 * each command with `permissionsForCommand`; unknown routes answer 404 to authenticated callers).
 */
export function permissionForRoute(method: string, path: string): Permission | "authenticated" | undefined {
  if (method === "GET") {
    if (path === "/healthz" || path === "/readyz") return undefined;
    if (path === "/metrics") return "metrics.read";
    if (path === "/v1/status" || path === "/v1/routing") return "status.read";
    if (path === "/v1/audit" || path === "/v1/audit/verify") return "audit.read";
    if (path === "/v1/security/tokens") return "policy.read";
    if (path === "/v1/security/whoami") return "authenticated";
    // Dashboard and other read-only pages: the same as status.
    return "status.read";
  }
  if (path === "/v1/send") return "messages.send";
  if (path === "/v1/agents" || path.startsWith("/v1/agents/")) return "agents.write";
  if (path === "/v1/members") return "members.add";
  if (path.startsWith("/v1/members/") || path === "/v1/leader" || path === "/v1/handoff")
    return "members.write";
  if (path.startsWith("/v1/teams/")) return "swarm.write";
  if (path === "/v1/security/tokens" || path.startsWith("/v1/security/tokens/")) return "policy.write";
  return "authenticated";
}

/** Permissions a routing command needs (a batch needs those of every command in it). */
export function permissionsForCommand(command: RoutingCommand): Set<Permission> {
  const needed = new Set<Permission>();
  const visit = (inner: RoutingCommand): void => {
    if (inner.op === "batch") {
      for (const nested of inner.commands) visit(nested);
      return;
    }
    needed.add(permissionOfOp(inner.op));
  };
  visit(command);
  return needed;
}

function permissionOfOp(op: Exclude<RoutingCommand["op"], "batch">): Permission {
  if (op === "member.upsert") return "members.add";
  if (op.startsWith("member.")) return "members.write";
  if (op.startsWith("agent.")) return "agents.write";
  if (op === "policy.set") return "policy.write";
  return "swarm.write"; // team.*, topology.set
}
