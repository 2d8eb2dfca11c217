// The live dashboard over real HTTP against a real single-node ClusterNode (the demo's embedded
// cluster: a Raft group of one on LevelDB, the HTTP API on loopback): / redirects, /dashboard is
// one self-contained page whose script parses, and /v1/dashboard reports leader, term, members,
// agents, inbox depths, dead letters and cumulative counters that move with real traffic.

import { request } from "node:http";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DemoCluster, startDemoCluster } from "../../src/coordination/demo-cluster.js";
import {
  DASHBOARD_INBOXES_MAX,
  DASHBOARD_SNAPSHOT_REUSE_MS,
  type DashboardSnapshot,
} from "../../src/obs/dashboard.js";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { tempRoot } from "../bus/helpers.js";

let cluster: DemoCluster;
let cleanup: () => void;

beforeAll(async () => {
  const temp = tempRoot();
  cleanup = temp.cleanup;
  cluster = await startDemoCluster({
    workDir: join(temp.root, "work"),
    bus: { root: temp.root, name: "dash", deliveriesMax: 1 },
    logger: silentLogger,
    metrics: new Metrics(),
  });
});

afterAll(async () => {
  await cluster?.node.shutdown("test");
  cleanup?.();
});

function get(path: string): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    request(`${cluster.apiUrl}${path}`, (response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk) => {
        body += chunk;
      });
      response.on("end", () =>
        resolve({ status: response.statusCode ?? 0, headers: response.headers, body }),
      );
    })
      .on("error", reject)
      .end();
  });
}

/** A snapshot built after this call (an older one is reused for DASHBOARD_SNAPSHOT_REUSE_MS). */
async function snapshot(): Promise<DashboardSnapshot> {
  await new Promise((resolve) => setTimeout(resolve, DASHBOARD_SNAPSHOT_REUSE_MS + 10));
  const response = await get("/v1/dashboard");
  expect(response.status).toBe(200);
  expect(response.headers["content-type"]).toBe("application/json");
  return JSON.parse(response.body) as DashboardSnapshot;
}

describe("dashboard", () => {
  it("/ redirects to /dashboard, a self-contained page whose script parses", async () => {
    const root = await get("/");
    expect(root.status).toBe(302);
    expect(root.headers.location).toBe("/dashboard");
    const page = await get("/dashboard");
    expect(page.status).toBe(200);
    expect(page.headers["content-type"]).toBe("text/html; charset=utf-8");
    expect(String(page.headers["content-security-policy"])).toContain("default-src 'none'");
    // No CDN, no external asset: nothing is loaded from another origin.
    expect(page.body).not.toMatch(/(src|href)=["']?(https?:)?\/\//i);
    expect(page.body).toContain('fetch("v1/dashboard"');
    const scripts = [...page.body.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((match) => match[1]);
    expect(scripts).toHaveLength(1);
    expect(() => new Function(scripts[0])).not.toThrow();
  });

  it("viewers polling within the reuse interval share one snapshot build", async () => {
    const first = await snapshot();
    const second = JSON.parse((await get("/v1/dashboard")).body) as DashboardSnapshot;
    expect(second.takenAtMs).toBe(first.takenAtMs);
    expect(first.buildMs).toBeGreaterThanOrEqual(0);
    const third = await snapshot();
    expect(third.takenAtMs).toBeGreaterThan(first.takenAtMs);
  });

  it("reports the leader, term and members of the node's Raft group", async () => {
    const view = await snapshot();
    const raft = view.raft as { role: string; leader: string; term: number; commit: number };
    expect(raft.role).toBe("leader");
    expect(raft.leader).toBe(cluster.node.id);
    expect(raft.term).toBeGreaterThanOrEqual(1);
    expect(raft.commit).toBeGreaterThanOrEqual(1);
    const members = view.members as Array<{ id: string; leader: boolean; voter: boolean }>;
    expect(members.map((member) => member.id)).toEqual([cluster.node.id]);
    expect(members[0]).toMatchObject({ leader: true, voter: true });
    expect(view.node).toMatchObject({ id: cluster.node.id, clusterId: "cfn-demo", state: "running" });
    expect(view.takenAtMs).toBeGreaterThan(Date.now() - 60_000);
  });

  it("counts agents per node, inbox depths, dead letters and message counters from real traffic", async () => {
    const before = await snapshot();
    // Without a team: a team member also gets the coordination traffic of its team's coordinator.
    for (const agent of ["worker-a", "worker-b"]) {
      const result = await cluster.node.registerAgent(agent, null);
      expect(result.ok).toBe(true);
    }
    for (let index = 0; index < 5; index++) cluster.node.send("master", "worker-a", { type: "task" });
    cluster.node.send("master", "worker-b", { type: "task" });
    // One poison message: delivered once (deliveriesMax 1), refused, so it goes to dead-letter.
    const mailbox = cluster.node.bus.openMailbox("worker-b");
    const deliveries = await mailbox.receive({ timeoutMs: 2000, max: 1 });
    expect(deliveries).toHaveLength(1);
    mailbox.nack(deliveries[0], { reason: "poison" });
    mailbox.close();

    const after = await snapshot();
    const self = (after.members as Array<{ id: string; agentsUp: number; agentsDown: number }>)[0];
    expect(self.agentsUp + self.agentsDown).toBe(2);
    const depthOf = new Map(after.inboxes.deepest.map((agent) => [agent.agentId, agent]));
    expect(depthOf.get("worker-a")?.inboxDepth).toBe(5);
    expect(depthOf.get("worker-b")?.deadLetters).toBe(1);
    expect(after.inboxes.deepest[0].agentId).toBe("worker-a"); // deepest first
    expect(after.inboxes.depthTotal).toBeGreaterThanOrEqual(5);
    expect(after.inboxes.deadLettersTotal).toBe(1);
    expect(after.inboxes.deepest.length).toBeLessThanOrEqual(DASHBOARD_INBOXES_MAX);
    expect(after.counters.busMessagesSent - before.counters.busMessagesSent).toBe(6);
    expect(after.counters.busMessagesReceived - before.counters.busMessagesReceived).toBe(1);
    expect(after.counters.busDeadLetters - before.counters.busDeadLetters).toBe(1);
    // Registering agents went through the log: the commit index moved.
    expect((after.raft as { commit: number }).commit).toBeGreaterThan(
      (before.raft as { commit: number }).commit,
    );
  });

  it("shows a team with the coordinator node the leader assigned it", async () => {
    // Runs after the counting test: this agent's team traffic would disturb its figures.
    expect((await cluster.node.registerAgent("worker-c", "team-x")).ok).toBe(true);
    const deadline = Date.now() + 10_000;
    let teams: Array<{ id: string; coordinator: string | null }> = [];
    while (Date.now() < deadline) {
      teams = (await snapshot()).teams as typeof teams;
      if (teams.some((team) => team.id === "team-x" && team.coordinator)) break;
    }
    expect(teams.find((team) => team.id === "team-x")).toMatchObject({ coordinator: cluster.node.id });
  });
});
