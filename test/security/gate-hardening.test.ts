// The gate against a flood of refused requests and odd headers, on a real single node over real
// HTTP: refusals from one address past security.auditRefusalsPerSecondMax are not audited or
// logged one by one but counted and summarised in one later entry (found on 2026-12-07: ~2,000
// synced entries a second from one client pruned the real ones out), authorized requests are
// never suppressed; the audit entry of a routing command names its ids and URLs (never values);
// and the Authorization scheme is case-insensitive (RFC 7235).

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ClusterNode } from "../../src/node/node.js";
import type { AuditEntry } from "../../src/security/audit-log.js";
import { parseSecurityConfig } from "../../src/security/config.js";
import { RefusalThrottle, type SuppressedRefusals } from "../../src/security/refusal-throttle.js";
import { tempRoot } from "../bus/helpers.js";
import { CLUSTER_TOKEN, call, createToken, startSecureNode } from "./helpers.js";

const PER_SECOND = 5;
let node: ClusterNode;
let cleanup: () => void;

beforeAll(async () => {
  const temp = tempRoot();
  cleanup = temp.cleanup;
  node = await startSecureNode({ root: temp.root, security: { auditRefusalsPerSecondMax: PER_SECOND } });
}, 30_000);

afterAll(async () => {
  await node?.shutdown("test");
  cleanup?.();
});

async function audit(query: string): Promise<AuditEntry[]> {
  const answer = await call(node, "GET", `/v1/audit?limit=1000&${query}`, CLUSTER_TOKEN);
  expect(answer.status).toBe(200);
  return answer.body.entries as AuditEntry[];
}

async function metric(name: string): Promise<number> {
  const text = (await call(node, "GET", "/metrics")).body.text as string;
  return Number(new RegExp(`^${name} (\\d+)`, "m").exec(text)?.[1] ?? 0);
}

describe("refusal flood", () => {
  it("audits at most auditRefusalsPerSecondMax refusals a second per address and summarises the rest", async () => {
    const flood = 120;
    const answers = await Promise.all(
      Array.from({ length: flood }, () => call(node, "POST", "/v1/agents", undefined, { agent: "x" })),
    );
    expect(answers.every((answer) => answer.status === 401)).toBe(true);
    // An authorized action from the same address, amid the flood, is recorded.
    const real = await call(node, "POST", "/v1/agents", CLUSTER_TOKEN, { agent: "real-1" });
    expect(real.status).toBe(200);

    const summaries = await (async () => {
      const deadline = Date.now() + 5000;
      for (;;) {
        const found = await audit("action=refusals.suppressed");
        const total = found.reduce((sum, entry) => sum + Number(entry.detail?.suppressed), 0);
        const single = (await audit("action=POST%20/v1/agents&outcome=denied")).length;
        if (total + single === flood || Date.now() > deadline) return { found, total, single };
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    })();
    expect(summaries.total + summaries.single).toBe(flood);
    // The flood took at most a few one-second windows: as many entries, not one per request.
    expect(summaries.single).toBeLessThanOrEqual(PER_SECOND * 3);
    expect(summaries.found.length).toBeLessThanOrEqual(3);
    expect(summaries.found[0]).toMatchObject({
      principal: "anonymous",
      outcome: "denied",
      remote: expect.stringContaining("127.0.0.1"),
      detail: { reasons: { token: expect.any(Number) }, principals: ["anonymous"] },
    });
    expect(summaries.found[0].detail?.summary).toMatch(/^\d+ refusals from .*127\.0\.0\.1 suppressed$/);
    expect(await metric("cfn_security_refusals_suppressed_total")).toBe(summaries.total);
    // Every refusal still counts in the denial metric.
    expect(await metric('cfn_security_denied_total\\{reason="token"\\}')).toBeGreaterThanOrEqual(flood);
    const ok = await audit("action=POST%20/v1/agents&outcome=ok");
    expect(ok.some((entry) => entry.detail?.agent === "real-1")).toBe(true);
    expect((await call(node, "GET", "/v1/audit/verify", CLUSTER_TOKEN)).body.ok).toBe(true);
  });

  it("counts per window and per address, and reports what is left at close", () => {
    let now = 1_000_000;
    const reported: SuppressedRefusals[] = [];
    const throttle = new RefusalThrottle({
      perSecondMax: 2,
      now: () => now,
      onSuppressed: (summary) => reported.push(summary),
      remotesMax: 2,
    });
    const admitted = (remote: string, count: number) =>
      Array.from({ length: count }, () => throttle.admit(remote, "anonymous", "token")).filter(Boolean)
        .length;
    expect(admitted("a", 5)).toBe(2);
    expect(admitted("b", 1)).toBe(1); // another address has its own budget
    expect(reported).toEqual([]);
    now += 1000; // a's window is over: its next refusal reports the three suppressed ones
    expect(admitted("a", 1)).toBe(1);
    expect(reported).toEqual([
      expect.objectContaining({
        remote: "a",
        suppressed: 3,
        reasons: { token: 3 },
        principals: ["anonymous"],
      }),
    ]);
    // Past remotesMax addresses, the others share one bucket.
    expect(admitted("c", 3) + admitted("d", 3)).toBe(2);
    throttle.close();
    expect(reported.map((summary) => [summary.remote, summary.suppressed])).toEqual([
      ["a", 3],
      ["(other addresses)", 4],
    ]);
  });

  it("validates the limit", () => {
    expect(parseSecurityConfig({}).auditRefusalsPerSecondMax).toBe(10);
    expect(() => parseSecurityConfig({ auditRefusalsPerSecondMax: 0 })).toThrow(/auditRefusalsPerSecondMax/);
    expect(() => parseSecurityConfig({ auditRefusalsPerSecondMax: 1.5 })).toThrow(
      /auditRefusalsPerSecondMax/,
    );
  });
});

describe("audit detail of routing commands", () => {
  it("names the members, agents and teams a routing command touches, never values", async () => {
    const operator = await createToken(node, "opal", ["operator"]);
    const command = {
      op: "batch",
      commands: [
        { op: "agent.register", agent: "w7", node: node.id, team: "t7" },
        { op: "member.state", id: node.id, state: "active" },
        { op: "team.checkpoint", team: "t7", epoch: 0, seq: 1, data: { secret: "payload-xyz" } },
      ],
    };
    // 409 when the team has no coordinator yet: audited either way.
    expect([200, 409]).toContain(
      (await call(node, "POST", "/v1/routing", operator.token, { command })).status,
    );
    const [batch] = (await audit("action=POST%20/v1/routing")).slice(-1);
    expect(batch.detail).toMatchObject({
      ops: ["agent.register", "member.state", "team.checkpoint"],
      commands: [
        { op: "agent.register", agent: "w7", node: node.id, team: "t7" },
        { op: "member.state", id: node.id, state: "active" },
        { op: "team.checkpoint", team: "t7" },
      ],
    });
    const refused = {
      op: "member.upsert",
      id: "n8",
      peerUrl: "ws://10.0.0.8:7101",
      apiUrl: "http://10.0.0.8:7201",
    };
    expect((await call(node, "POST", "/v1/routing", operator.token, { command: refused })).status).toBe(403);
    const admin = await createToken(node, "adele", ["admin"]);
    const policy = { op: "policy.set", name: "retention.x", value: { secret: "policy-value-xyz" } };
    expect((await call(node, "POST", "/v1/routing", admin.token, { command: policy })).status).toBe(200);
    const entries = await audit("action=POST%20/v1/routing");
    const [member, set] = entries.slice(-2);
    expect(member).toMatchObject({
      outcome: "denied",
      detail: { commands: [refused], permission: "members.add" },
    });
    expect(set.detail?.commands).toEqual([{ op: "policy.set", name: "retention.x" }]);
    expect(JSON.stringify(entries)).not.toMatch(/payload-xyz|policy-value-xyz/);
  });
});

describe("Authorization header", () => {
  it("takes the Bearer scheme in any case", async () => {
    const viewer = await createToken(node, "vera", ["viewer"]);
    for (const scheme of ["bearer", "BEARER", "Bearer", "bEaReR"]) {
      const response = await fetch(new URL("/v1/security/whoami", node.apiUrl), {
        headers: { authorization: `${scheme} ${viewer.token}` },
      });
      expect(response.status, scheme).toBe(200);
      expect(((await response.json()) as { name: string }).name).toBe("vera");
    }
    const other = await fetch(new URL("/v1/security/whoami", node.apiUrl), {
      headers: { authorization: `Basic ${viewer.token}` },
    });
    expect(other.status).toBe(401);
  });
});

describe("agent scope of a token", () => {
  it("lets a scoped token register, deregister, command and send only as its agents", async () => {
    // A fresh second of the refusal budget (PER_SECOND) for this address: the first refusals
    // below have their own entries.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const created = await call(node, "POST", "/v1/security/tokens", CLUSTER_TOKEN, {
      principal: "worker-bot",
      roles: ["agent"],
      agents: ["w1", "team-a-*"],
    });
    expect(created.status).toBe(201);
    expect(created.body.agents).toEqual(["w1", "team-a-*"]);
    const scoped = created.body.token as string;
    const me = await call(node, "GET", "/v1/security/whoami", scoped);
    expect(me.body).toMatchObject({ name: "worker-bot", agents: ["w1", "team-a-*"] });
    const listed = await call(node, "GET", "/v1/security/tokens", CLUSTER_TOKEN);
    expect(listed.body.tokens).toContainEqual(
      expect.objectContaining({ id: created.body.id, agents: ["w1", "team-a-*"] }),
    );

    expect((await call(node, "POST", "/v1/agents", scoped, { agent: "w1" })).status).toBe(200);
    expect((await call(node, "POST", "/v1/agents", scoped, { agent: "team-a-7" })).status).toBe(200);
    const outside = await call(node, "POST", "/v1/agents", scoped, { agent: "w2" });
    expect(outside.status).toBe(403);
    expect(outside.body.error).toMatchObject({ code: "CFN_ERR_FORBIDDEN" });
    expect(node.routing.state.agents.has("w2")).toBe(false);
    // Someone else's agent cannot be deregistered, moved or impersonated.
    expect((await call(node, "POST", "/v1/agents", CLUSTER_TOKEN, { agent: "w2" })).status).toBe(200);
    expect((await call(node, "DELETE", "/v1/agents/w2", scoped)).status).toBe(403);
    expect(node.routing.state.agents.has("w2")).toBe(true);
    const move = { op: "agent.register", agent: "w2", node: node.id, team: "elsewhere" };
    expect((await call(node, "POST", "/v1/routing", scoped, { command: move })).status).toBe(403);
    const hidden = {
      op: "batch",
      commands: [
        { op: "agent.up", agent: "w1", node: node.id, up: true },
        { op: "agent.remove", agent: "w2" },
      ],
    };
    expect((await call(node, "POST", "/v1/routing", scoped, { command: hidden })).status).toBe(403);
    expect(node.routing.state.agents.has("w2")).toBe(true);
    const forged = await call(node, "POST", "/v1/send", scoped, { from: "w2", to: "w1", type: "t" });
    expect(forged.status).toBe(403);
    expect((await call(node, "POST", "/v1/send", scoped, { to: "w1", type: "t" })).status).toBe(403);
    expect((await call(node, "POST", "/v1/send", scoped, { from: "w1", to: "w2", type: "t" })).status).toBe(
      200,
    );
    const own = { op: "agent.up", agent: "team-a-7", node: node.id, up: true };
    expect((await call(node, "POST", "/v1/routing", scoped, { command: own })).status).toBe(200);
    expect((await call(node, "DELETE", "/v1/agents/w1", scoped)).status).toBe(200);
    const denied = await audit("principal=worker-bot&outcome=denied");
    expect(denied.slice(0, PER_SECOND).map((entry) => entry.detail?.outOfScope)).toEqual(
      Array(PER_SECOND).fill("w2"),
    );

    // An unscoped agent token still acts as any agent (as before scopes).
    const any = await createToken(node, "any-bot", ["agent"]);
    expect(
      (await call(node, "POST", "/v1/send", any.token, { from: "w2", to: "w1", type: "t" })).status,
    ).toBe(200);
  });

  it("refuses scopes it could not read, through the API and as a raw policy", async () => {
    for (const agents of [[], ["*"], ["a b"], [".."], "w1", Array.from({ length: 65 }, (_, i) => `a${i}`)]) {
      const answer = await call(node, "POST", "/v1/security/tokens", CLUSTER_TOKEN, {
        principal: "bad-scope",
        roles: ["agent"],
        agents,
      });
      expect(answer.status, JSON.stringify(agents)).toBe(400);
    }
    const record = {
      principal: "raw",
      roles: ["agent"],
      sha256: "0".repeat(64),
      createdAt: new Date().toISOString(),
      createdBy: "cluster",
      expiresAt: null,
      agents: "w1",
    };
    const raw = { op: "policy.set", name: `sec.token.${"a".repeat(12)}`, value: record };
    expect((await call(node, "POST", "/v1/routing", CLUSTER_TOKEN, { command: raw })).status).toBe(400);
  });
});
