// RBAC and the audit log over real HTTP against a real single-node cluster: tokens created
// through the API are replicated policies, each role is allowed exactly its actions, refusals are
// typed (401 / 403), counted and audited, and the audit chain verifies — then fails to once an
// entry is changed on disk (through `cfn audit verify --data-dir`, the compiled CLI).

import { spawnSync } from "node:child_process";
import { request } from "node:http";
import { join } from "node:path";
import { ClassicLevel } from "classic-level";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI_PATH } from "../../cluster/node-launcher.js";
import type { ClusterNode } from "../../src/node/node.js";
import type { AuditEntry } from "../../src/security/audit-log.js";
import { tempRoot } from "../bus/helpers.js";
import { CLUSTER_TOKEN, call, createToken, startSecureNode } from "./helpers.js";

let node: ClusterNode;
let root: string;
let cleanup: () => void;
const tokens: Record<string, { token: string; id: string }> = {};

beforeAll(async () => {
  const temp = tempRoot();
  root = temp.root;
  cleanup = temp.cleanup;
  // Every refusal of these tests gets its own entry (gate-hardening.test.ts tests the throttle).
  node = await startSecureNode({ root, security: { auditRefusalsPerSecondMax: 10_000 } });
  tokens.alice = await createToken(node, "alice", ["operator"]);
  tokens.bob = await createToken(node, "bob", ["viewer"]);
  tokens.carl = await createToken(node, "carl", ["agent"]);
  tokens.dora = await createToken(node, "dora", ["auditor"]);
}, 30_000);

afterAll(async () => {
  await node?.shutdown("test");
  cleanup?.();
});

describe("RBAC over the HTTP API", () => {
  it("keeps reads open and refuses anonymous and wrong-token writes with 401", async () => {
    expect((await call(node, "GET", "/v1/status")).status).toBe(200);
    expect((await call(node, "GET", "/healthz")).status).toBe(200);
    const anonymous = await call(node, "POST", "/v1/agents", undefined, { agent: "a1" });
    expect(anonymous.status).toBe(401);
    expect(anonymous.body.error).toMatchObject({ code: "CFN_ERR_AUTH" });
    const forged = `cfn_${tokens.bob.id}_${"A".repeat(43)}`;
    expect((await call(node, "GET", "/v1/status", forged)).status).toBe(401);
  });

  it("tells each principal who it is", async () => {
    const me = await call(node, "GET", "/v1/security/whoami", tokens.alice.token);
    expect(me.status).toBe(200);
    expect(me.body).toMatchObject({ name: "alice", kind: "token", roles: ["operator"] });
    expect(me.body.permissions).toContain("members.write");
    expect(me.body.permissions).not.toContain("policy.write");
    const cluster = await call(node, "GET", "/v1/security/whoami", CLUSTER_TOKEN);
    expect(cluster.body).toMatchObject({ name: "cluster", kind: "cluster", permissions: ["*"] });
  });

  it("lets a viewer read and nothing else (403 CFN_ERR_FORBIDDEN)", async () => {
    expect((await call(node, "GET", "/v1/status", tokens.bob.token)).status).toBe(200);
    expect((await call(node, "GET", "/metrics", tokens.bob.token)).status).toBe(200);
    const denied = await call(node, "POST", "/v1/agents", tokens.bob.token, { agent: "b1" });
    expect(denied.status).toBe(403);
    expect(denied.body.error).toMatchObject({ code: "CFN_ERR_FORBIDDEN", permission: "agents.write" });
    expect((await call(node, "GET", "/v1/audit", tokens.bob.token)).status).toBe(403);
    expect(
      (await call(node, "POST", "/v1/send", tokens.bob.token, { from: "b", to: "c", type: "t" })).status,
    ).toBe(403);
  });

  it("lets an agent register and send but not change members or topology", async () => {
    expect((await call(node, "POST", "/v1/agents", tokens.carl.token, { agent: "carl-1" })).status).toBe(200);
    expect(node.routing.state.agents.has("carl-1")).toBe(true);
    const sent = await call(node, "POST", "/v1/send", tokens.carl.token, {
      from: "carl-0",
      to: "carl-1",
      type: "hello",
    });
    expect(sent.status).toBe(200);
    const member = await call(node, "POST", "/v1/members", tokens.carl.token, {
      id: "n9",
      peerUrl: "ws://127.0.0.1:1",
      apiUrl: "http://127.0.0.1:1",
    });
    expect(member.status).toBe(403);
    const topology = { op: "topology.set", topology: { kind: "flat", teamSize: 4 } };
    expect((await call(node, "POST", "/v1/routing", tokens.carl.token, { command: topology })).status).toBe(
      403,
    );
    // A batch needs every command's permission: one member command makes it forbidden.
    const batch = {
      op: "batch",
      commands: [
        { op: "agent.register", agent: "carl-2", node: node.id, team: null },
        { op: "member.state", id: node.id, state: "active" },
      ],
    };
    expect((await call(node, "POST", "/v1/routing", tokens.carl.token, { command: batch })).status).toBe(403);
    expect(node.routing.state.agents.has("carl-2")).toBe(false);
  });

  it("lets an operator run swarm operations but not write policy or tokens", async () => {
    const topology = { op: "topology.set", topology: { kind: "hybrid", teamSize: 7 } };
    expect((await call(node, "POST", "/v1/routing", tokens.alice.token, { command: topology })).status).toBe(
      200,
    );
    expect(node.routing.state.topology).toMatchObject({ kind: "hybrid", teamSize: 7 });
    const policy = { op: "policy.set", name: `sec.token.${"0".repeat(12)}`, value: { principal: "x" } };
    expect((await call(node, "POST", "/v1/routing", tokens.alice.token, { command: policy })).status).toBe(
      403,
    );
    const escalate = await call(node, "POST", "/v1/security/tokens", tokens.alice.token, {
      principal: "alice",
      roles: ["admin"],
    });
    expect(escalate.status).toBe(403);
    const listed = await call(node, "GET", "/v1/security/tokens", tokens.alice.token);
    expect(listed.status).toBe(200);
    const principals = (listed.body.tokens as { principal: string }[]).map((t) => t.principal).sort();
    expect(principals).toEqual(["alice", "bob", "carl", "dora"]);
    expect(JSON.stringify(listed.body)).not.toMatch(/sha256|cfn_[0-9a-f]{12}_/);
  });

  it("refuses unknown roles and bad principals when creating tokens", async () => {
    const unknown = await call(node, "POST", "/v1/security/tokens", CLUSTER_TOKEN, {
      principal: "eve",
      roles: ["root"],
    });
    expect(unknown.status).toBe(400);
    expect(unknown.body.error).toMatchObject({ code: "CFN_ERR_INVALID_MESSAGE" });
    const bad = await call(node, "POST", "/v1/security/tokens", CLUSTER_TOKEN, {
      principal: "e v e",
      roles: ["viewer"],
    });
    expect(bad.status).toBe(400);
  });

  it("revokes a token on the spot", async () => {
    const temporary = await createToken(node, "temp", ["viewer"]);
    expect((await call(node, "GET", "/v1/status", temporary.token)).status).toBe(200);
    const revoked = await call(node, "DELETE", `/v1/security/tokens/${temporary.id}`, CLUSTER_TOKEN);
    expect(revoked.status).toBe(200);
    expect((await call(node, "GET", "/v1/status", temporary.token)).status).toBe(401);
    expect((await call(node, "DELETE", `/v1/security/tokens/${temporary.id}`, CLUSTER_TOKEN)).status).toBe(
      404,
    );
  });

  it("counts refusals in cfn_security_denied_total and the API's rejected counter", async () => {
    const text = (await call(node, "GET", "/metrics")).body.text as string;
    const forbidden = Number(/cfn_security_denied_total\{reason="forbidden"\} (\d+)/.exec(text)?.[1]);
    const token = Number(/cfn_security_denied_total\{reason="token"\} (\d+)/.exec(text)?.[1]);
    expect(forbidden).toBeGreaterThanOrEqual(7);
    expect(token).toBeGreaterThanOrEqual(3);
    expect(text).toMatch(/cfn_node_api_rejected_total\{reason="forbidden"\} \d+/);
  });
});

describe("RBAC holds against odd requests", () => {
  it("refuses percent-encoded and empty path segments, which would reach a route under another permission", async () => {
    await call(node, "POST", "/v1/agents", CLUSTER_TOKEN, { agent: "keep-me" });
    for (const path of ["/v1/%61gents/keep-me", "/v1//agents/keep-me", "/v1/agents/keep%2Dme"]) {
      const answer = await call(node, "DELETE", path, tokens.bob.token);
      expect(answer.status, path).toBe(400);
      expect(answer.body.error).toMatchObject({ code: "CFN_ERR_INVALID_MESSAGE" });
    }
    expect(node.routing.state.agents.has("keep-me")).toBe(true);
    expect((await call(node, "DELETE", "/v1/agents/keep-me", tokens.bob.token)).status).toBe(403);
  });

  it("answers a body past apiBodyBytesMax from a valid token with 413, audits it, and keeps serving", async () => {
    // Its own connection: the server answers before it read the body and then drops the socket.
    const status = await new Promise<number>((resolve, reject) => {
      const upload = request(new URL("/v1/routing", node.apiUrl), {
        method: "POST",
        agent: false,
        headers: { authorization: `Bearer ${tokens.bob.token}`, "content-type": "application/json" },
      });
      upload.on("response", (response) => {
        response.resume();
        resolve(response.statusCode ?? 0);
      });
      upload.on("error", reject);
      upload.end("a".repeat(5 * 1024 * 1024));
    });
    expect(status).toBe(413);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect((await call(node, "GET", "/healthz")).status).toBe(200);
    const entries = (await call(node, "GET", "/v1/audit?limit=1000", tokens.dora.token)).body
      .entries as AuditEntry[];
    expect(entries.some((entry) => entry.action === "POST /v1/routing" && entry.status === 413)).toBe(true);
  });

  it("does not show token hashes to status readers, and answers HEAD like GET", async () => {
    const routing = await call(node, "GET", "/v1/routing", tokens.bob.token);
    expect(routing.status).toBe(200);
    const policies = routing.body.policies as Record<string, Record<string, unknown>>;
    const records = Object.entries(policies).filter(([name]) => name.startsWith("sec.token."));
    expect(records.length).toBeGreaterThanOrEqual(4);
    for (const [, record] of records) {
      expect(record.principal).toBeTypeOf("string");
      expect(record).not.toHaveProperty("sha256");
    }
    expect((await fetch(new URL("/healthz", node.apiUrl), { method: "HEAD" })).status).toBe(200);
  });

  it("refuses roles named after object properties, reserved principals and unreadable raw policies", async () => {
    for (const role of ["constructor", "__proto__", "toString"]) {
      const answer = await call(node, "POST", "/v1/security/tokens", CLUSTER_TOKEN, {
        principal: "weird",
        roles: [role],
      });
      expect(answer.status, role).toBe(400);
      expect(JSON.stringify(answer.body)).toContain("unknown role");
    }
    for (const principal of ["cluster", "anonymous"]) {
      const answer = await call(node, "POST", "/v1/security/tokens", CLUSTER_TOKEN, {
        principal,
        roles: ["agent"],
      });
      expect(answer.status, principal).toBe(400);
      expect(JSON.stringify(answer.body)).toContain("reserved");
    }
    const typo = await call(node, "POST", "/v1/routing", CLUSTER_TOKEN, {
      command: { op: "policy.set", name: "sec.role.typo", value: { permissions: ["swarm.writ"] } },
    });
    expect(typo.status).toBe(400);
    expect(JSON.stringify(typo.body)).toContain("sec.role.typo");
    const forged = await call(node, "POST", "/v1/routing", CLUSTER_TOKEN, {
      command: {
        op: "policy.set",
        name: "sec.token.0123456789ab",
        value: { principal: "x", roles: ["admin"], sha256: "0".repeat(64), expiresAt: "not-a-date" },
      },
    });
    expect(forged.status).toBe(400);
    const role = await call(node, "POST", "/v1/routing", CLUSTER_TOKEN, {
      command: { op: "policy.set", name: "sec.role.lister", value: { permissions: ["status.read"] } },
    });
    expect(role.status).toBe(200);
  });

  it("records in the audit log how the caller authenticated and with which token", async () => {
    await call(node, "POST", "/v1/agents", tokens.carl.token, { agent: "carl-kind" });
    const entries = (await call(node, "GET", "/v1/audit?limit=1000", tokens.dora.token)).body
      .entries as AuditEntry[];
    const carl = entries.find((entry) => entry.detail?.agent === "carl-kind");
    expect(carl).toMatchObject({ principal: "carl", principalKind: "token", tokenId: tokens.carl.id });
    const cluster = entries.find((entry) => entry.principal === "cluster");
    expect(cluster?.principalKind).toBe("cluster");
    expect(cluster).not.toHaveProperty("tokenId");
    expect((await call(node, "GET", "/v1/audit/verify", tokens.dora.token)).body.ok).toBe(true);
  });
});

describe("audit log over the HTTP API", () => {
  it("records who did what with which outcome, chained, with the caller's request id", async () => {
    const marked = await fetch(new URL("/v1/agents", node.apiUrl), {
      method: "POST",
      headers: {
        authorization: `Bearer ${tokens.carl.token}`,
        "x-request-id": "req-carl-77",
        "content-type": "application/json",
      },
      body: JSON.stringify({ agent: "carl-77", team: "t1" }),
    });
    expect(marked.status).toBe(200);
    expect(marked.headers.get("x-request-id")).toBe("req-carl-77");
    const answer = await call(node, "GET", "/v1/audit?limit=1000", tokens.dora.token);
    expect(answer.status).toBe(200);
    const entries = answer.body.entries as AuditEntry[];
    for (let i = 1; i < entries.length; i++) expect(entries[i].prev).toBe(entries[i - 1].hash);
    const created = entries.filter(
      (entry) => entry.action === "POST /v1/security/tokens" && entry.outcome === "ok",
    );
    expect(created.map((entry) => entry.detail?.principal)).toEqual(
      expect.arrayContaining(["alice", "bob", "carl", "dora"]),
    );
    expect(created[0]).toMatchObject({ principal: "cluster", status: 201, node: node.id });
    const carl = entries.find((entry) => entry.requestId === "req-carl-77");
    expect(carl).toMatchObject({
      principal: "carl",
      action: "POST /v1/agents",
      outcome: "ok",
      status: 200,
      detail: { agent: "carl-77", team: "t1" },
    });
    const denied = entries.filter((entry) => entry.outcome === "denied");
    expect(
      denied.some(
        (entry) => entry.principal === "bob" && entry.action === "POST /v1/agents" && entry.status === 403,
      ),
    ).toBe(true);
    expect(denied.some((entry) => entry.principal === "anonymous" && entry.status === 401)).toBe(true);
    expect(
      entries.some(
        (entry) => entry.action.startsWith("DELETE /v1/security/tokens/") && entry.outcome === "ok",
      ),
    ).toBe(true);
    // Successful sends are data plane, not audited.
    expect(entries.some((entry) => entry.action === "POST /v1/send" && entry.outcome === "ok")).toBe(false);
  });

  it("filters by principal, outcome and time", async () => {
    const bob = await call(node, "GET", "/v1/audit?principal=bob&outcome=denied", tokens.dora.token);
    const entries = bob.body.entries as AuditEntry[];
    expect(entries.length).toBeGreaterThanOrEqual(3);
    expect(entries.every((entry) => entry.principal === "bob" && entry.outcome === "denied")).toBe(true);
    const future = await call(
      node,
      "GET",
      `/v1/audit?since=${new Date(Date.now() + 60_000).toISOString()}`,
      tokens.dora.token,
    );
    expect(future.body.entries).toEqual([]);
    expect((await call(node, "GET", "/v1/audit?since=yesterday-ish", tokens.dora.token)).status).toBe(400);
  });

  it("verifies the chain, and the CLI finds an entry changed on disk", async () => {
    const report = await call(node, "GET", "/v1/audit/verify", tokens.dora.token);
    expect(report.body).toMatchObject({ ok: true, firstSeq: 1 });
    const entries = report.body.entries as number;
    expect(entries).toBeGreaterThan(10);
    await node.shutdown("test");

    const dataDir = join(root, "data");
    const intact = spawnSync(
      process.execPath,
      [CLI_PATH, "audit", "verify", "--data-dir", dataDir, "--json"],
      { encoding: "utf8" },
    );
    expect(intact.status).toBe(0);
    // The verify request itself was audited too.
    expect(JSON.parse(intact.stdout)).toMatchObject({ ok: true, entries: entries + 1 });

    const db = new ClassicLevel<string, string>(join(dataDir, "audit"), { valueEncoding: "utf8" });
    await db.open();
    const key = `e!${String(5).padStart(16, "0")}`;
    const entry = JSON.parse((await db.get(key)) as string) as AuditEntry;
    await db.put(key, JSON.stringify({ ...entry, principal: "someone-else" }));
    await db.close();

    const broken = spawnSync(process.execPath, [CLI_PATH, "audit", "verify", "--data-dir", dataDir], {
      encoding: "utf8",
    });
    expect(broken.status).toBe(1);
    expect(broken.stderr).toMatch(/CFN_ERR_AUDIT_TAMPERED audit chain broken at seq 5/);
  });
});
