// RBAC, the pure part: route and command permissions, built-in and custom roles, tokens.

import { describe, expect, it } from "vitest";
import {
  BUILT_IN_ROLES,
  PERMISSIONS,
  permissionForRoute,
  permissionsForCommand,
  permissionsOf,
  roleExists,
  TOKEN_POLICY_PREFIX,
} from "../../src/security/permissions.js";
import {
  agentInScope,
  asTokenRecord,
  hashSecret,
  listTokens,
  mintToken,
  parseToken,
  verifyToken,
} from "../../src/security/tokens.js";

const NOW = new Date("2026-11-24T05:00:00.000Z");

describe("permissions", () => {
  it("maps every API route to the permission it needs", () => {
    expect(permissionForRoute("GET", "/healthz")).toBeUndefined();
    expect(permissionForRoute("GET", "/readyz")).toBeUndefined();
    expect(permissionForRoute("GET", "/metrics")).toBe("metrics.read");
    expect(permissionForRoute("GET", "/v1/status")).toBe("status.read");
    expect(permissionForRoute("GET", "/v1/audit")).toBe("audit.read");
    expect(permissionForRoute("GET", "/v1/audit/verify")).toBe("audit.read");
    expect(permissionForRoute("POST", "/v1/send")).toBe("messages.send");
    expect(permissionForRoute("POST", "/v1/agents")).toBe("agents.write");
    expect(permissionForRoute("DELETE", "/v1/agents/a1")).toBe("agents.write");
    // Adding a member hands its URLs the cluster token: admin only (found on 2026-12-07).
    expect(permissionForRoute("POST", "/v1/members")).toBe("members.add");
    expect(permissionForRoute("DELETE", "/v1/members/n3")).toBe("members.write");
    expect(permissionForRoute("POST", "/v1/leader")).toBe("members.write");
    expect(permissionForRoute("POST", "/v1/teams/t1/checkpoint")).toBe("swarm.write");
    expect(permissionForRoute("POST", "/v1/security/tokens")).toBe("policy.write");
    expect(permissionForRoute("DELETE", "/v1/security/tokens/abc")).toBe("policy.write");
    expect(permissionForRoute("POST", "/v1/routing")).toBe("authenticated");
  });

  it("needs each command's permission, for every command of a batch", () => {
    expect([
      ...permissionsForCommand({ op: "topology.set", topology: { kind: "flat", teamSize: 5 } }),
    ]).toEqual(["swarm.write"]);
    const batch = permissionsForCommand({
      op: "batch",
      commands: [
        { op: "agent.remove", agent: "a" },
        { op: "member.remove", id: "n2" },
        { op: "policy.set", name: "retention", value: 3 },
      ],
    });
    expect([...batch].sort()).toEqual(["agents.write", "members.write", "policy.write"]);
    const upsert = { op: "member.upsert", id: "n2", peerUrl: "ws://h:1", apiUrl: "http://h:2" } as const;
    expect([...permissionsForCommand(upsert)]).toEqual(["members.add"]);
    expect([
      ...permissionsForCommand({ op: "batch", commands: [{ op: "batch", commands: [upsert] }] }),
    ]).toEqual(["members.add"]);
    expect(BUILT_IN_ROLES.operator).not.toContain("members.add");
    expect(BUILT_IN_ROLES.admin).toContain("members.add");
  });

  it("resolves built-in and custom roles; unknown roles grant nothing", () => {
    const policies = new Map<string, unknown>([
      ["sec.role.deployer", { permissions: ["swarm.write", "status.read"] }],
    ]);
    expect([...permissionsOf(["admin"], policies)].sort()).toEqual([...PERMISSIONS].sort());
    expect(permissionsOf(["viewer"], policies).has("messages.send")).toBe(false);
    expect(permissionsOf(["operator"], policies).has("policy.write")).toBe(false);
    expect([...permissionsOf(["deployer"], policies)].sort()).toEqual(["status.read", "swarm.write"]);
    expect(permissionsOf(["ghost"], policies).size).toBe(0);
    expect(roleExists("deployer", policies)).toBe(true);
    expect(roleExists("ghost", policies)).toBe(false);
    // A malformed custom role (unknown permission) is no role at all.
    policies.set("sec.role.bad", { permissions: ["root"] });
    expect(roleExists("bad", policies)).toBe(false);
    for (const permissions of Object.values(BUILT_IN_ROLES))
      for (const p of permissions) expect(PERMISSIONS).toContain(p);
  });
});

describe("API tokens", () => {
  it("mints a token whose secret is stored only as its hash, and verifies it", () => {
    const minted = mintToken("alice", ["operator"], "cluster", NOW, 30);
    expect(minted.token).toMatch(/^cfn_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/);
    const parsed = parseToken(minted.token);
    expect(parsed?.id).toBe(minted.id);
    expect(JSON.stringify(minted.record)).not.toContain(parsed?.secret);
    expect(minted.record.sha256).toBe(hashSecret(parsed?.secret ?? ""));
    expect(minted.record.expiresAt).toBe("2026-12-24T05:00:00.000Z");
    const policies = new Map<string, unknown>([[`${TOKEN_POLICY_PREFIX}${minted.id}`, minted.record]]);
    const verified = verifyToken(minted.token, policies, NOW);
    expect(verified).toMatchObject({
      ok: true,
      id: minted.id,
      record: { principal: "alice", roles: ["operator"] },
    });
    expect(listTokens(policies)).toEqual([
      {
        id: minted.id,
        principal: "alice",
        roles: ["operator"],
        createdAt: NOW.toISOString(),
        createdBy: "cluster",
        expiresAt: minted.record.expiresAt,
      },
    ]);
  });

  it("refuses a wrong secret, an unknown id, an expired or a malformed token", () => {
    const minted = mintToken("bob", ["viewer"], "cluster", NOW, 1);
    const policies = new Map<string, unknown>([[`${TOKEN_POLICY_PREFIX}${minted.id}`, minted.record]]);
    const other = mintToken("bob", ["viewer"], "cluster", NOW);
    const wrongSecret = `cfn_${minted.id}_${parseToken(other.token)?.secret}`;
    expect(verifyToken(wrongSecret, policies, NOW)).toEqual({ ok: false, reason: "unknown" });
    expect(verifyToken(other.token, policies, NOW)).toEqual({ ok: false, reason: "unknown" });
    expect(verifyToken(minted.token, policies, new Date(NOW.getTime() + 86_400_000))).toEqual({
      ok: false,
      reason: "expired",
    });
    expect(verifyToken("not-a-token", policies, NOW)).toEqual({ ok: false, reason: "malformed" });
    // A revoked token (policy deleted) is unknown.
    policies.clear();
    expect(verifyToken(minted.token, policies, NOW)).toEqual({ ok: false, reason: "unknown" });
  });

  it("keeps a token's agent scope; a scope it cannot read makes the record no token", () => {
    const minted = mintToken("w-bot", ["agent"], "cluster", NOW, undefined, ["w1", "team-a-*"]);
    const policies = new Map<string, unknown>([[`${TOKEN_POLICY_PREFIX}${minted.id}`, minted.record]]);
    const verified = verifyToken(minted.token, policies, NOW);
    expect(verified.ok && verified.record.agents).toEqual(["w1", "team-a-*"]);
    expect(agentInScope(["w1", "team-a-*"], "w1")).toBe(true);
    expect(agentInScope(["w1", "team-a-*"], "team-a-9")).toBe(true);
    expect(agentInScope(["w1", "team-a-*"], "w10")).toBe(false);
    expect(agentInScope(["w1", "team-a-*"], "team-b-1")).toBe(false);
    expect(agentInScope(undefined, "anyone")).toBe(true);
    expect(mintToken("x", ["agent"], "cluster", NOW).record).not.toHaveProperty("agents");
    for (const agents of [[], "w1", ["*"], ["a b"], [".."], [1]])
      expect(asTokenRecord({ ...minted.record, agents }), JSON.stringify(agents)).toBeUndefined();
  });
});
