// The security policy is replicated: a token created through one node of a 3-node cluster (real
// node processes) is honoured with the same roles by the others, a revocation through another
// node refuses it everywhere, and each node audits what it served (the CLI reads it).

import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { CLI_PATH } from "../../cluster/node-launcher.js";
import { api, TestCluster, TOKEN, waitFor } from "../node/harness.js";

let cluster: TestCluster | undefined;

afterAll(async () => {
  await cluster?.stop();
});

/** Runs the compiled CLI without blocking the event loop (a blocked loop leaves stale keep-alive sockets). */
async function cli(args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)(process.execPath, [CLI_PATH, ...args], { timeout: 60_000 });
  return stdout;
}

describe("security policy across a 3-node cluster", () => {
  it("a token made on one node works on every node, and a revocation anywhere ends it everywhere", async () => {
    cluster = await TestCluster.create(3, "cfn-sec-test-");
    await cluster.startAll();
    const [n1, n2, n3] = cluster.nodes;

    const created = await cli([
      "token",
      "create",
      "--principal",
      "erin",
      "--role",
      "agent",
      "--api",
      n2.api,
      "--token",
      TOKEN,
      "--json",
    ]);
    const { token, id } = JSON.parse(created) as { token: string; id: string };

    for (const node of cluster.nodes) {
      const registered = await waitFor(`token usable on ${node.id}`, async () => {
        const answer = await api(node.api, "POST", "/v1/agents", { agent: `erin-${node.id}` }, token);
        return answer.status === 200 ? answer : undefined;
      });
      expect(registered.json.ok).toBe(true);
      const forbidden = await api(node.api, "POST", "/v1/leader", { to: n1.id }, token);
      expect(forbidden.status).toBe(403);
      expect(forbidden.json.error.code).toBe("CFN_ERR_FORBIDDEN");
    }

    const revoked = await api(n3.api, "DELETE", `/v1/security/tokens/${id}`);
    expect(revoked.status).toBe(200);
    for (const node of cluster.nodes) {
      await waitFor(`revocation applied on ${node.id}`, async () => {
        const answer = await api(node.api, "GET", "/v1/status", undefined, token);
        return answer.status === 401;
      });
    }

    // Each node audited what it served: n1 saw erin's registration and refusal, then the 401s.
    const audit = await cli(["audit", "--principal", "erin", "--api", n1.api, "--token", TOKEN, "--json"]);
    const entries = (JSON.parse(audit) as { entries: { action: string; outcome: string; node: string }[] })
      .entries;
    expect(entries.some((entry) => entry.action === "POST /v1/agents" && entry.outcome === "ok")).toBe(true);
    expect(entries.some((entry) => entry.action === "POST /v1/leader" && entry.outcome === "denied")).toBe(
      true,
    );
    expect(entries.every((entry) => entry.node === n1.id)).toBe(true);
    const verified = await api(n2.api, "GET", "/v1/audit/verify");
    expect(verified.json).toMatchObject({ ok: true });
  }, 150_000);
});
