// A member's URLs receive the cluster token: every peer dials its peerUrl with it in the WebSocket
// handshake, and a follower forwards member changes and leadership transfers to the leader's
// apiUrl with it. So on a 3-node cluster (real node processes) an operator token can neither add
// a member nor point an existing one at another address (found on 2026-12-07: both leaked the
// cluster token to a listener of the operator's choosing), an admin token can add members but not
// re-point existing ones, every refusal is a typed, audited 403 whose entry names the member and
// its URLs — and the documented join flow (`cfn cluster join`, then `--join`) still works with
// the cluster token. A listener stands where the operator would have pointed the cluster.

import { execFile } from "node:child_process";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { CLI_PATH } from "../../cluster/node-launcher.js";
import { api, freePort, type NodeProcess, TestCluster, TOKEN, tryStatus, waitFor } from "../node/harness.js";

let cluster: TestCluster | undefined;
let listener: Server | undefined;

afterAll(async () => {
  await cluster?.stop();
  await new Promise((resolve) => (listener ? listener.close(resolve) : resolve(undefined)));
});

/** Every request and WebSocket upgrade that reaches the attacker's address, with its headers. */
async function listen(): Promise<{ port: number; seen: IncomingHttpHeaders[] }> {
  const seen: IncomingHttpHeaders[] = [];
  const port = await freePort();
  listener = createServer((request, response) => {
    seen.push(request.headers);
    request.resume();
    response.writeHead(200, { "content-type": "application/json" });
    response.end('{"ok":true}');
  });
  listener.on("upgrade", (request, socket) => {
    seen.push(request.headers);
    socket.destroy();
  });
  await new Promise<void>((resolve) => listener?.listen(port, "127.0.0.1", resolve));
  return { port, seen };
}

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [CLI_PATH, ...args], {
      timeout: 60_000,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string };
    return { code: failed.code ?? 1, stdout: failed.stdout ?? "", stderr: failed.stderr ?? "" };
  }
}

async function token(node: NodeProcess, principal: string, role: string): Promise<string> {
  const created = await api(node.api, "POST", "/v1/security/tokens", { principal, roles: [role] });
  expect(created.status).toBe(201);
  return created.json.token as string;
}

/** As `api`, but with `Authorization: Bearer` (an API token). */
async function as(bearer: string, base: string, method: string, path: string, body?: unknown) {
  const response = await fetch(new URL(path, base), {
    method,
    headers: { "content-type": "application/json", authorization: `Bearer ${bearer}` },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(20_000),
  });
  const text = await response.text();
  return { status: response.status, json: text ? JSON.parse(text) : {} };
}

describe("member addresses are the cluster token's destinations", () => {
  it("refuses API tokens re-pointing members or (below admin) adding them; the cluster token still joins nodes", async () => {
    cluster = await TestCluster.create(3, "cfn-sec-members-");
    await cluster.startAll();
    const attacker = await listen();
    const fakeApi = `http://127.0.0.1:${attacker.port}`;
    const fakePeer = `ws://127.0.0.1:${attacker.port}`;
    const leader = await cluster.leader();
    const follower = cluster.nodes.find((node) => node !== leader) as NodeProcess;
    const operator = await token(leader, "olga", "operator");
    const admin = await token(leader, "adam", "admin");
    await waitFor("tokens applied on the follower", async () => {
      const me = await as(admin, follower.api, "GET", "/v1/security/whoami");
      return me.status === 200;
    });

    // (a) An operator re-points the leader's apiUrl with a raw routing command (then a follower
    // would forward POST /v1/leader there with the cluster token): refused, nothing changes.
    const repoint = {
      op: "member.upsert",
      id: leader.id,
      peerUrl: leader.peerUrl,
      apiUrl: fakeApi,
    };
    for (const bearer of [operator, admin]) {
      const refused = await as(bearer, follower.api, "POST", "/v1/routing", { command: repoint });
      expect(refused.status, JSON.stringify(refused.json)).toBe(403);
      expect(refused.json.error.code).toBe("CFN_ERR_FORBIDDEN");
    }
    // Also hidden in a batch, behind a removal of the same member.
    const batch = { op: "batch", commands: [{ op: "member.remove", id: leader.id }, repoint] };
    expect((await as(admin, follower.api, "POST", "/v1/routing", { command: batch })).status).toBe(403);
    const moved = await as(operator, follower.api, "POST", "/v1/leader", { to: leader.id });
    expect(moved.status).toBeLessThan(500);

    // (b) The documented route with an existing id and another peerUrl: every node would dial it.
    const existing = cluster.nodes[0];
    const hijack = { id: existing.id, peerUrl: fakePeer, apiUrl: existing.api };
    const byOperator = await as(operator, follower.api, "POST", "/v1/members", hijack);
    expect(byOperator.status).toBe(403);
    expect(byOperator.json.error).toMatchObject({ code: "CFN_ERR_FORBIDDEN", permission: "members.add" });
    const byAdmin = await as(admin, follower.api, "POST", "/v1/members", hijack);
    expect(byAdmin.status).toBe(403);
    expect(byAdmin.json.error.code).toBe("CFN_ERR_FORBIDDEN");
    // An operator cannot add a new member either (its URLs would receive the cluster token).
    const added = await as(operator, follower.api, "POST", "/v1/members", {
      id: "n9",
      peerUrl: fakePeer,
      apiUrl: fakeApi,
    });
    expect(added.status).toBe(403);
    // Re-adding a member with the URLs it has changes nothing and is allowed to an admin.
    const same = await as(admin, follower.api, "POST", "/v1/members", {
      id: existing.id,
      peerUrl: existing.peerUrl,
      apiUrl: existing.api,
    });
    expect(same.status, JSON.stringify(same.json)).toBe(200);

    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(attacker.seen).toEqual([]);
    for (const node of cluster.nodes) {
      const routing = await api(node.api, "GET", "/v1/routing");
      expect(JSON.stringify(routing.json.members)).not.toContain(`:${attacker.port}`);
    }

    // Each refusal is audited on the node that served it, naming the member and its URLs.
    const audit = await api(follower.api, "GET", "/v1/audit?outcome=denied&action=POST%20/v1/routing");
    const routingDenied = audit.json.entries as { principal: string; detail: Record<string, unknown> }[];
    expect(routingDenied.length).toBeGreaterThanOrEqual(3);
    expect(routingDenied[0].detail.commands).toEqual([
      { op: "member.upsert", id: leader.id, peerUrl: leader.peerUrl, apiUrl: fakeApi },
    ]);
    const memberAudit = await api(follower.api, "GET", "/v1/audit?outcome=denied&action=POST%20/v1/members");
    const memberDenied = memberAudit.json.entries as { principal: string; detail: Record<string, unknown> }[];
    expect(memberDenied.map((entry) => entry.principal)).toEqual(["olga", "adam", "olga"]);
    expect(memberDenied[1].detail).toMatchObject({ id: existing.id, peerUrl: fakePeer });

    // The documented join flow with the cluster token: prepare (`cfn cluster join`), then start.
    const n4 = await cluster.makeNode("n4");
    const join = (token: string) =>
      cli(["cluster", "join", n4.id, n4.peerUrl, n4.api, "--api", follower.api, "--token", token]);
    const byOperatorCli = await join(operator);
    expect(byOperatorCli.code).not.toBe(0);
    expect(byOperatorCli.stderr).toContain("CFN_ERR_FORBIDDEN");
    const joined = await join(TOKEN);
    expect(joined.code, joined.stderr).toBe(0);
    cluster.nodes.push(n4);
    await n4.start(["--join", follower.api]);
    await cluster.waitReady([n4]);
    await waitFor("n4 active", async () => {
      const status = await tryStatus(leader);
      return status?.members.some(
        (member: { id: string; state: string }) => member.id === "n4" && member.state === "active",
      );
    });
  }, 180_000);
});
