// Coordinators and failover with real node processes: the leader assigns team coordinators,
// a node isolated by SIGSTOP (a minority) is marked down and its teams move to live nodes with
// their checkpoints, workers are told, and the isolated node catches up when it resumes. Also a
// node joining and a node leaving while traffic flows.

import { afterEach, describe, expect, it } from "vitest";
import {
  api,
  cli,
  drainInbox,
  metricOf,
  type NodeProcess,
  TestCluster,
  TOKEN,
  tryStatus,
  waitFor,
} from "./harness.js";

let cluster: TestCluster | undefined;

afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

async function register(node: NodeProcess, agent: string, team: string | null = null): Promise<void> {
  const { status, json } = await api(node.api, "POST", "/v1/agents", { agent, team });
  expect(status, JSON.stringify(json)).toBe(200);
}

type Team = {
  id: string;
  coordinator: string | null;
  epoch: number;
  checkpoint: { seq: number; data: unknown } | null;
};

async function teamsOf(node: NodeProcess): Promise<Team[]> {
  return ((await tryStatus(node))?.teams ?? []) as Team[];
}

/**
 * Three nodes; a follower ("victim") holds 30 messages (`<prefix>-0` …) for dst, an agent on the
 * other follower, unacknowledged in its spool (dst's inbox of 40 is full and nothing parks), and is
 * killed: it misses the commit of a removal that follows, and no member sends it anything after.
 */
async function killedWithHeldSpool(prefix: string): Promise<{
  cluster: TestCluster;
  leader: NodeProcess;
  victim: NodeProcess;
  other: NodeProcess;
  sent: string[];
}> {
  const created = await TestCluster.create(3);
  cluster = created;
  await Promise.all(
    created.nodes.map((node) =>
      node.start([...created.peerFlags(node), "--set", "parkedMessagesMax=0"], {
        CFN_BUS_INBOX_DEPTH_MAX: "40",
        CFN_BUS_BATCH_MESSAGES_MAX: "40",
      }),
    ),
  );
  await created.waitReady(created.nodes);
  const leader = await created.leader();
  const [victim, other] = created.nodes.filter((node) => node !== leader);
  await register(other, "dst");
  await waitFor("dst routed on the victim", async () =>
    (await tryStatus(victim))?.agents.some((a: { id: string }) => a.id === "dst"),
  );
  const otherBus = other.bus();
  for (let i = 0; i < 40; i++) otherBus.sendSync("local", "dst", { id: `fill-${i}`, type: "test" });
  otherBus.close();
  const bus = victim.bus();
  const sent = Array.from({ length: 30 }, (_, i) => `${prefix}-${i}`);
  for (const [i, id] of sent.entries()) bus.sendSync("src", "dst", { id, type: "test", payload: { i } });
  bus.close();
  await waitFor("the victim's stream to dst's node held", async () => {
    const status = await tryStatus(victim);
    const pending = (status?.delivery.streams ?? []).reduce(
      (sum: number, stream: { pending: number }) => sum + stream.pending,
      0,
    );
    return pending === 30 && status.delivery.proxied.length > 0;
  });
  victim.signal("SIGKILL");
  await victim.waitExit();
  return { cluster: created, leader, victim, other, sent };
}

/** Empties dst's inbox (the 40 fillers), removes the killed victim and waits for the others to apply it. */
async function removeWhileDown(leader: NodeProcess, victim: NodeProcess, other: NodeProcess): Promise<void> {
  expect((await drainInbox(other, "dst")).map((m) => m.id)).toEqual(
    Array.from({ length: 40 }, (_, i) => `fill-${i}`),
  );
  const removed = await api(leader.api, "DELETE", `/v1/members/${victim.id}`);
  expect(removed.status, JSON.stringify(removed.json)).toBe(200);
  await waitFor("the victim removed on the others", async () => {
    for (const node of [leader, other]) {
      const s = await tryStatus(node);
      if (!s || s.members.some((m: { id: string }) => m.id === victim.id)) return false;
    }
    return true;
  });
}

/** dst's messages once `count` arrived, and for 300 ms more (a duplicate would show). */
async function receivedOnce(other: NodeProcess, count: number): Promise<string[]> {
  const got: string[] = [];
  await waitFor("the handed-off messages delivered", async () => {
    got.push(...(await drainInbox(other, "dst")).map((m) => m.id));
    return got.length >= count;
  });
  await new Promise((resolve) => setTimeout(resolve, 300));
  got.push(...(await drainInbox(other, "dst")).map((m) => m.id));
  return got;
}

describe("coordinators and failover (3 node processes)", () => {
  it("reassigns the teams of an isolated node with their checkpoints, tells the workers, and takes the node back", async () => {
    cluster = await TestCluster.create(3);
    await cluster.startAll();
    const [n1, n2, n3] = cluster.nodes;
    // Six teams, each with one worker on every node.
    const teams = ["t1", "t2", "t3", "t4", "t5", "t6"];
    for (const team of teams) {
      await register(n1, `${team}-w1`, team);
      await register(n2, `${team}-w2`, team);
      await register(n3, `${team}-w3`, team);
    }
    const leader = await cluster.leader();
    const assigned = await waitFor("every team has a coordinator", async () => {
      const list = await teamsOf(leader);
      return list.length === teams.length && list.every((team) => team.coordinator !== null)
        ? list
        : undefined;
    });
    // Load is spread: every node coordinates two teams.
    const perNode = new Map<string, number>();
    for (const team of assigned)
      perNode.set(team.coordinator as string, (perNode.get(team.coordinator as string) ?? 0) + 1);
    expect([...perNode.values()].sort()).toEqual([2, 2, 2]);

    // Isolate a follower (a minority of one).
    const victim = cluster.nodes.find((node) => node !== leader) as NodeProcess;
    const victimTeams = assigned.filter((team) => team.coordinator === victim.id);
    expect(victimTeams.length).toBe(2);
    // Its coordinator checkpoints progress, replicated through the log.
    const checkpointed = victimTeams[0];
    const checkpoint = await api(victim.api, "POST", `/v1/teams/${checkpointed.id}/checkpoint`, {
      epoch: checkpointed.epoch,
      seq: 7,
      data: { round: 7, pending: ["task-8", "task-9"] },
    });
    expect(checkpoint.status, JSON.stringify(checkpoint.json)).toBe(200);
    await waitFor(
      "checkpoint replicated",
      async () => (await teamsOf(leader)).find((t) => t.id === checkpointed.id)?.checkpoint?.seq === 7,
    );

    // Drain the first notifications so that only the failover ones remain.
    const live = cluster.nodes.filter((node) => node !== victim);
    for (const node of live) for (const team of teams) await drainInbox(node, `${team}-w${node.id.slice(1)}`);

    victim.signal("SIGSTOP");
    const moved = await waitFor(
      "the isolated node's teams reassigned",
      async () => {
        const list = await teamsOf(leader);
        const now = list.filter((team) => victimTeams.some((old) => old.id === team.id));
        return now.every((team) => team.coordinator !== victim.id && team.coordinator !== null)
          ? now
          : undefined;
      },
      15_000,
    );
    for (const team of moved) {
      const before = victimTeams.find((old) => old.id === team.id) as Team;
      expect(team.epoch).toBe(before.epoch + 1);
    }
    // The checkpoint survives the move: the new coordinator resumes from it.
    expect(moved.find((team) => team.id === checkpointed.id)?.checkpoint).toMatchObject({
      seq: 7,
      data: { round: 7 },
    });
    // Teams of live nodes did not move.
    const after = await teamsOf(leader);
    for (const team of assigned.filter((t) => t.coordinator !== victim.id)) {
      expect(after.find((t) => t.id === team.id)).toMatchObject({
        coordinator: team.coordinator,
        epoch: team.epoch,
      });
    }
    const status = await tryStatus(leader);
    expect(status.members.find((member: { id: string }) => member.id === victim.id).state).toBe("down");

    // Workers on live nodes were told who coordinates them now, with the checkpoint.
    const liveNode = live[0];
    const worker = `${checkpointed.id}-w${liveNode.id.slice(1)}`;
    const notes = await waitFor("worker notified", async () => {
      const messages = await drainInbox(liveNode, worker);
      return messages.length > 0 ? messages : undefined;
    });
    expect(notes[0]).toMatchObject({
      from: "cfn-node",
      type: "cfn.team.coordinator",
      payload: { team: checkpointed.id, previous: victim.id, checkpoint: { seq: 7 } },
    });
    expect(notes[0].payload.coordinator).not.toBe(victim.id);

    // The majority keeps serving writes while the minority is away.
    await register(liveNode, "late-agent");
    // A message for an agent of the isolated node waits in the sender's spool …
    const bus = liveNode.bus();
    bus.sendSync("sender", `t1-w${victim.id.slice(1)}`, {
      id: "while-isolated",
      type: "test",
      payload: { i: 1 },
    });
    bus.close();

    // … and arrives once the node resumes; the node comes back as an active member.
    victim.signal("SIGCONT");
    await waitFor("isolated node active again", async () => {
      const s = await tryStatus(leader);
      return s?.members.find((member: { id: string }) => member.id === victim.id)?.state === "active";
    });
    await waitFor("the isolated node caught up", async () => {
      const s = await tryStatus(victim);
      return s?.agents.some((agent: { id: string }) => agent.id === "late-agent");
    });
    const delivered = await waitFor("message delivered after resume", async () => {
      const messages = (await drainInbox(victim, `t1-w${victim.id.slice(1)}`)).filter(
        (m) => m.id === "while-isolated",
      );
      return messages.length > 0 ? messages : undefined;
    });
    expect(delivered).toHaveLength(1);
    void n1;
    void n2;
    void n3;
  });

  it("adds a node that joins through a member and removes a node, while messages flow", async () => {
    cluster = await TestCluster.create(3);
    await cluster.startAll();
    const [n1, n2, n3] = cluster.nodes;
    await register(n2, "a2");
    await register(n3, "a3");
    await waitFor("a2 routed on n1", async () =>
      (await tryStatus(n1))?.agents.some((a: { id: string }) => a.id === "a2"),
    );

    const bus1 = n1.bus();
    let i = 0;
    let flowing = true;
    const sentToA2: string[] = [];
    const traffic = (async () => {
      while (flowing) {
        for (let k = 0; k < 20; k++) {
          const id = `m-${i++}`;
          bus1.sendSync("s1", "a2", { id, type: "test", payload: { i } });
          sentToA2.push(id);
        }
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();

    // n4 joins through n2 (a follower or the leader: either forwards to the leader).
    const n4 = await cluster.makeNode("n4");
    cluster.nodes.push(n4);
    await n4.start(["--join", n2.api]);
    await cluster.waitReady([n4]);
    await waitFor("n4 is a member everywhere", async () => {
      for (const node of [n1, n2, n3]) {
        const s = await tryStatus(node);
        if (!s?.members.some((m: { id: string; apiUrl: string }) => m.id === "n4" && m.apiUrl === n4.api))
          return false;
      }
      return true;
    });
    await register(n4, "a4");
    await waitFor("a4 routed on n1", async () =>
      (await tryStatus(n1))?.agents.some((a: { id: string }) => a.id === "a4"),
    );
    bus1.sendSync("s1", "a4", { id: "to-n4", type: "test", payload: { i: 0 } });
    const atN4 = await waitFor("message to the joined node", async () => {
      const got = await drainInbox(n4, "a4");
      return got.length > 0 ? got : undefined;
    });
    expect(atN4.map((m) => m.id)).toEqual(["to-n4"]);

    // n3 leaves (removed through n1's API) while traffic goes on.
    const removed = await api(n1.api, "DELETE", "/v1/members/n3");
    expect(removed.status, JSON.stringify(removed.json)).toBe(200);
    await waitFor("n3 removed everywhere", async () => {
      for (const node of [n1, n2, n4]) {
        const s = await tryStatus(node);
        if (!s || s.members.some((m: { id: string }) => m.id === "n3")) return false;
      }
      return true;
    });
    // Removing it again, or a node that never was a member, is refused: nothing reads "removed".
    for (const id of ["n3", "nosuch"]) {
      const again = await api(n2.api, "DELETE", `/v1/members/${id}`);
      expect(again.status, JSON.stringify(again.json)).toBe(409);
      expect(JSON.stringify(again.json)).toContain("unknown_member");
    }
    // The removed node learns it from the membership it applied and stops by itself (exit 0);
    // a start on its data dir is refused from then on, naming the removal.
    expect(await n3.waitExit(15_000), n3.stderr).toBe(0);
    expect(n3.stdout).toContain('"event":"stopped"');
    expect(n3.stdout + n3.stderr).toContain("this node was removed from the cluster");
    const again = await n3.runToExit(["--token", TOKEN, ...cluster.peerFlags(n3)]);
    expect(again.code, again.stderr).toBe(2);
    expect(again.stderr).toContain("CFN_ERR_NODE_REMOVED");
    expect(again.stderr).toContain("--join");
    await new Promise((resolve) => setTimeout(resolve, 300));
    flowing = false;
    await traffic;
    bus1.close();

    const got: string[] = [];
    await waitFor(
      "all traffic to a2 delivered",
      async () => {
        got.push(...(await drainInbox(n2, "a2")).map((m) => m.id));
        return got.length >= sentToA2.length;
      },
      20_000,
    );
    expect(new Set(got).size).toBe(got.length);
    expect(got).toEqual(sentToA2);
    const leaderStatus = await tryStatus(await cluster.leader([n1, n2, n4]));
    expect(leaderStatus.members.map((m: { id: string }) => m.id)).toEqual(["n1", "n2", "n4"]);
  });

  it("a coordinator notification a full inbox refused is sent again once there is room", async () => {
    cluster = await TestCluster.create(1);
    const [n1] = cluster.nodes;
    await n1.start(["--set", "agentScanIntervalMs=200"], {
      CFN_BUS_INBOX_DEPTH_MAX: "5",
      CFN_BUS_BATCH_MESSAGES_MAX: "5",
    });
    await cluster.waitReady(cluster.nodes);
    // The worker's inbox is full before its team gets a coordinator.
    const bus = n1.bus();
    for (let i = 0; i < 5; i++) bus.sendSync("local", "w1", { id: `fill-${i}`, type: "test" });
    bus.close();
    await register(n1, "w1", "t1");
    await waitFor("t1 has a coordinator", async () =>
      (await teamsOf(n1)).some((team) => team.id === "t1" && team.coordinator !== null),
    );
    await waitFor("the refused notification logged", async () =>
      n1.stderr.includes("coordinator notification not delivered"),
    );
    // Several agent scans pass while the inbox stays full: the one notice counts one overflow,
    // not one per scan.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(await metricOf(n1, "cfn_bus_inbox_overflows_total")).toBe(1);
    expect((await drainInbox(n1, "w1")).map((m) => m.id)).toEqual([0, 1, 2, 3, 4].map((i) => `fill-${i}`));
    const notes = await waitFor("the worker notified after all", async () => {
      const messages = await drainInbox(n1, "w1");
      return messages.length > 0 ? messages : undefined;
    });
    expect(notes).toHaveLength(1);
    expect(notes[0]).toMatchObject({
      from: "cfn-node",
      type: "cfn.team.coordinator",
      payload: { team: "t1", coordinator: "n1" },
    });
  });

  it("a node removed while it was down (it never applies its removal) learns it from the leader, hands its spool to a member and stops", async () => {
    const { cluster, leader, victim, other, sent } = await killedWithHeldSpool("h");
    await removeWhileDown(leader, victim, other);
    // Restarted on its data dir it still counts itself a member; the peers refuse its dials (401)
    // and the leader's status no longer lists it: it stops by itself.
    await victim.start(cluster.peerFlags(victim));
    const code = await victim.waitExit(20_000).catch((error: Error) => {
      throw new Error(`${error.message}; its log ends: ${victim.stderr.slice(-2000)}`);
    });
    expect(code).toBe(0);
    expect(victim.stdout + victim.stderr).toContain("the leader no longer lists it");
    // No member takes its frames any more (nor acknowledges them): its spool went to a member's
    // API, and from there to dst, once (what already landed is dropped by message id).
    expect(await receivedOnce(other, sent.length)).toEqual(sent);
    const again = await victim.runToExit(["--token", TOKEN, ...cluster.peerFlags(victim)]);
    expect(again.code, again.stderr).toBe(2);
    expect(again.stderr).toContain("CFN_ERR_NODE_REMOVED");
    expect(again.stderr).toContain("0 message(s) left undelivered");
  });

  it("`cfn node handoff` hands a stopped, removed node's spool to a member without starting it; refuses while it is a member", async () => {
    const { cluster, leader, victim, other, sent } = await killedWithHeldSpool("o");
    const handoff = (extra: string[] = []) =>
      cli([
        "--bus-root",
        victim.spec.busRoot,
        "--log-level",
        "warn",
        "node",
        "handoff",
        "--id",
        victim.id,
        "--data-dir",
        victim.spec.dataDir,
        "--token",
        TOKEN,
        "--json",
        ...cluster!.peerFlags(victim),
        ...extra,
      ]);
    // Still a member: its own start delivers the spool; the command refuses and takes nothing.
    const early = await handoff();
    expect(early.code, early.stderr).toBe(1);
    expect(early.stderr).toContain("CFN_ERR_CONF_CHANGE");
    expect(early.stderr).toContain("still a member");

    await removeWhileDown(leader, victim, other);
    // Removed while down, never started again: the command asks the leader, records the removal
    // and hands the spool to a member, which delivers it to dst once, in order.
    const done = await handoff();
    expect(done.code, done.stderr).toBe(0);
    const report = JSON.parse(done.stdout);
    expect(report).toMatchObject({
      node: victim.id,
      removalRecorded: true,
      spooled: 30,
      handed: 30,
      left: 0,
    });
    expect(await receivedOnce(other, sent.length)).toEqual(sent);
    // Nothing is left to hand off; the data dir stays refused.
    const again = await handoff();
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({
      removalRecorded: false,
      spooled: 0,
      handed: 0,
      left: 0,
    });
    const start = await victim.runToExit(["--token", TOKEN, ...cluster.peerFlags(victim)]);
    expect(start.code, start.stderr).toBe(2);
    expect(start.stderr).toContain("0 message(s) left undelivered");
  });

  it("with leaveOnShutdown, a SIGTERM leaves the membership; the data dir is refused after", async () => {
    cluster = await TestCluster.create(3);
    const [n1, n2, n3] = cluster.nodes;
    await Promise.all([
      n1.start(cluster.peerFlags(n1)),
      n2.start(cluster.peerFlags(n2)),
      n3.start([...cluster.peerFlags(n3), "--leave-on-shutdown"]),
    ]);
    await cluster.waitReady(cluster.nodes);
    n3.signal("SIGTERM");
    expect(await n3.waitExit(15_000), n3.stderr).toBe(0);
    await waitFor("n3 left the membership", async () => {
      for (const node of [n1, n2]) {
        const s = await tryStatus(node);
        if (!s || s.members.some((m: { id: string }) => m.id === "n3")) return false;
      }
      return true;
    });
    const again = await n3.runToExit(["--token", TOKEN, ...cluster.peerFlags(n3)]);
    expect(again.code, again.stderr).toBe(2);
    expect(again.stderr).toContain("CFN_ERR_NODE_REMOVED");
    // The two left are a cluster of their own: it still commits.
    await api(n1.api, "POST", "/v1/agents", { agent: "after-leave" });
    await waitFor("registered after the leave", async () =>
      (await tryStatus(n2))?.agents.some((a: { id: string }) => a.id === "after-leave"),
    );
  });
});
