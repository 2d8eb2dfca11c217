// Bad input and lifecycle with real node processes: malformed peer frames, a wrong cluster
// token, oversized frames, unknown node ids, bad API calls (rejected, logged, counted, and the
// node keeps serving); refusal to start on an invalid config or another cluster's data dir
// (exit 2); the single-node default; graceful shutdown with queued messages.

import { execFile } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { loadNativeFileIo } from "../../src/bus/file-io.js";
import { BUSY_PROCESS_NODE_FLAGS } from "../../src/runtime-flags.js";
import { encodeFrame } from "../../src/transport/frame.js";
import {
  api,
  CLI,
  drainInbox,
  freePort,
  metricOf,
  type NodeProcess,
  TestCluster,
  TOKEN,
  tryStatus,
  waitFor,
} from "./harness.js";

const run = promisify(execFile);

let cluster: TestCluster | undefined;

afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

const metric = metricOf;

/** The node's last words: its `{"event":"stopped",…}` line on stdout. */
// biome-ignore lint/suspicious/noExplicitAny: the report's JSON, read loosely by tests
function stoppedReport(node: NodeProcess): any {
  return JSON.parse(
    node.stdout
      .trim()
      .split("\n")
      .find((line) => line.includes('"stopped"')) as string,
  );
}

/** Opens a peer connection to `node` claiming to be `as`; resolves with the socket or the HTTP status of the refusal. */
function dial(node: NodeProcess, as: string, token: string): Promise<WebSocket | number> {
  return new Promise((resolve) => {
    const socket = new WebSocket(`${node.peerUrl}/cfn/v1/peer`, {
      headers: { "x-cfn-cluster-token": token, "x-cfn-node-id": as, "x-cfn-target-node-id": node.id },
    });
    socket.once("open", () => resolve(socket));
    socket.once("unexpected-response", (_request, response) => resolve(response.statusCode ?? 0));
    socket.once("error", () => resolve(0));
  });
}

/** Scheduling policy (0 SCHED_OTHER, 5 SCHED_IDLE) of every thread of process `pid`, by tid. */
function threadPolicies(pid: number): Map<number, number> {
  return new Map(
    readdirSync(`/proc/${pid}/task`).map((tid) => {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      return [Number(tid), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[38])];
    }),
  );
}

describe("node robustness (real processes)", () => {
  it("with idleBackgroundThreads moves its helper threads to SCHED_IDLE, never its main thread", async () => {
    if (!loadNativeFileIo()) {
      // The compiled helper is built wherever a C compiler exists (test/bus/file-io.test.ts checks that).
      console.warn("background threads: the compiled helper is not built; nothing to check");
      return;
    }
    cluster = await TestCluster.create(1);
    const [n1] = cluster.nodes;
    await n1.start(["--set", "idleBackgroundThreads=true"]);
    await cluster.waitReady([n1]);
    const pid = n1.child?.pid as number;
    const policies = threadPolicies(pid);
    expect(policies.get(pid)).toBe(0);
    const helpers = [...policies].filter(([tid]) => tid !== pid).map(([, policy]) => policy);
    expect(helpers.length).toBeGreaterThan(0);
    expect(helpers.every((policy) => policy === 5)).toBe(true);
    // Still serving.
    expect((await fetch(`${n1.api}/healthz`)).status).toBe(200);
  });

  it("runs as a single-node cluster with no peers: ready, registers agents, serves metrics", async () => {
    cluster = await TestCluster.create(1);
    const [n1] = cluster.nodes;
    await n1.start([]);
    await cluster.waitReady([n1]);
    expect((await fetch(`${n1.api}/healthz`)).status).toBe(200);
    // A busy process: the launcher starts the daemon with cfn's heap flags (src/runtime-flags.ts).
    const cmdline = readFileSync(`/proc/${n1.child?.pid}/cmdline`, "utf8").split("\0");
    expect(cmdline.slice(0, cmdline.indexOf(CLI))).toEqual(
      expect.arrayContaining([...BUSY_PROCESS_NODE_FLAGS]),
    );
    // By default every thread keeps SCHED_OTHER (node.idleBackgroundThreads is opt-in).
    expect(new Set(threadPolicies(n1.child?.pid as number).values())).toEqual(new Set([0]));
    const registered = await api(n1.api, "POST", "/v1/agents", { agent: "solo", team: "crew" });
    expect(registered.status).toBe(200);
    const status = await waitFor("team assigned", async () => {
      const s = await tryStatus(n1);
      return s?.teams[0]?.coordinator === "n1" ? s : undefined;
    });
    expect(status.raft).toMatchObject({ role: "leader", leader: "n1" });
    expect(status.members).toHaveLength(1);
    const metrics = await (await fetch(`${n1.api}/metrics`)).text();
    expect(metrics).toContain("cfn_raft_is_leader 1");
    expect(metrics).toContain("cfn_node_agents");

    // The CLI: register through the node, then `cfn cluster status` with the bus view — the
    // node's own bus, whatever bus this command is set to (here an empty root of its own).
    const cliBusRoot = join(cluster.root, "cli-bus");
    const cli = (args: string[]) =>
      run(process.execPath, [
        CLI,
        "--bus-root",
        cliBusRoot,
        "--log-level",
        "warn",
        "cluster",
        ...args,
        "--api",
        n1.api,
        "--token",
        TOKEN,
      ]);
    await cli(["register", "cli-agent", "--team", "crew"]);
    const { stdout } = await cli(["status", "--json"]);
    const viaCli = JSON.parse(stdout);
    expect(viaCli.raft.leader).toBe("n1");
    expect(viaCli.agents.map((agent: { id: string }) => agent.id)).toEqual(["cli-agent", "solo"]);
    expect(viaCli.bus.dir).toBe(status.bus.dir);
    expect(viaCli.bus.dir.startsWith(n1.spec.busRoot)).toBe(true);
    expect(viaCli.bus.agents.map((agent: { agentId: string }) => agent.agentId)).toContain("solo");
    const text = (await cli(["status"])).stdout;
    expect(text).toMatch(/leader n1, term [0-9]+/);
    expect(text).toContain("MEMBER");
    expect(text).toContain(`bus of n1 ${status.bus.dir}: `);
    expect(text).toMatch(/\nsolo +[0-9]+ +0 +0/);

    // Refused credentials: where none was given the error says the default went out. (A read
    // sends no token when none is given: test/node/cluster-operations.test.ts.)
    const env = { ...process.env };
    delete env.CFN_API_TOKEN;
    delete env.CFN_CLUSTER_TOKEN;
    const refused = async (extra: string[]) => {
      const args = [CLI, "cluster", "register", "refused-agent", "--api", n1.api, ...extra];
      const failure = await run(process.execPath, args, { env }).then(
        () => undefined,
        (error: { code: number; stderr: string }) => error,
      );
      expect(failure?.code).toBe(1);
      return failure?.stderr ?? "";
    };
    const none = await refused([]);
    expect(none).toContain("CFN_ERR_AUTH");
    expect(none).toContain("no token given");
    const wrong = await refused(["--token", "not-the-token"]);
    expect(wrong).toContain("CFN_ERR_AUTH");
    expect(wrong).not.toContain("no token given");
  });

  it("rejects malformed, oversized and unauthenticated peer traffic and bad API calls, and keeps serving", async () => {
    cluster = await TestCluster.create(2);
    // Small frames, so a bus whose messages fit in them (a node refuses a frame limit its bus's
    // messages could not pass).
    const nodes = cluster.nodes;
    await Promise.all(
      nodes.map((node) =>
        node.start([...cluster!.peerFlags(node), "--set", "frameBytesMax=65536"], {
          CFN_BUS_MESSAGE_BYTES_MAX: "1024",
        }),
      ),
    );
    await cluster.waitReady(nodes);
    const [n1, n2] = cluster.nodes;
    await api(n2.api, "POST", "/v1/agents", { agent: "target" });
    await waitFor("target routed", async () =>
      (await tryStatus(n1))?.agents.some((a: { id: string }) => a.id === "target"),
    );

    // Wrong token and unknown node id: the handshake is refused (401) and counted.
    expect(await dial(n1, "n2", "wrong-token-wrong-token-wrong")).toBe(401);
    expect(await dial(n1, "n9", TOKEN)).toBe(401);
    expect(await metric(n1, "cfn_transport_auth_rejected_total", { reason: "token" })).toBeGreaterThanOrEqual(
      1,
    );
    expect(
      await metric(n1, "cfn_transport_auth_rejected_total", { reason: "unknown_node" }),
    ).toBeGreaterThanOrEqual(1);

    // An insider with the token sends malformed node-level frames on both channels.
    const socket = await dial(n1, "n2", TOKEN);
    expect(socket).toBeInstanceOf(WebSocket);
    const peer = socket as WebSocket;
    const badDeliveries = [
      {
        t: "d",
        s: "stream-1",
        f: 1,
        m: [
          {
            id: "x",
            from: "a",
            to: "../../etc",
            type: "t",
            priority: "normal",
            headers: {},
            payload: 1,
            ts: 1,
          },
        ],
      },
      { t: "d", s: "stream-1", f: 0, m: [] },
      { t: "zz", s: "stream-1" },
      "not even an object",
    ];
    for (const payload of badDeliveries) peer.send(encodeFrame("deliver", payload));
    peer.send(
      encodeFrame("node", {
        t: "prop",
        r: 1,
        c: { op: "agent.register", agent: "bad id!", node: "n1", team: null },
      }),
    );
    await waitFor("bad frames counted", async () => (await metric(n1, "cfn_node_bad_frames_total")) >= 5);
    expect(await metric(n1, "cfn_node_bad_frames_total", { channel: "deliver" })).toBe(4);
    expect(await metric(n1, "cfn_node_bad_frames_total", { channel: "node" })).toBe(1);
    // Garbage bytes that are not a frame at all: the transport closes that connection.
    const closed = new Promise<void>((resolve) => peer.once("close", () => resolve()));
    peer.send(Buffer.from([0xc1, 0xff, 0x00, 0x13]));
    await closed;
    // An oversized frame (past frameBytesMax, here 64 KiB) is refused too. (Our spoofed "n2"
    // connection may be replaced by the real n2 reconnecting: then we try again.)
    await waitFor("oversized frame counted", async () => {
      const big = await dial(n1, "n2", TOKEN);
      if (!(big instanceof WebSocket)) return false;
      const bigClosed = new Promise<void>((resolve) => big.once("close", () => resolve()));
      big.send(Buffer.alloc(100 * 1024, 1));
      await bigClosed;
      return (await metric(n1, "cfn_transport_bad_frames_total", { reason: "too_large" })) >= 1;
    });

    // The API refuses a wrong token and a malformed body, with typed errors.
    const wrong = await api(n1.api, "POST", "/v1/agents", { agent: "x" }, "not-the-token-at-all");
    expect(wrong.status).toBe(401);
    expect(wrong.json.error.code).toBe("CFN_ERR_AUTH");
    const malformed = await fetch(`${n1.api}/v1/agents`, {
      method: "POST",
      headers: { "x-cfn-cluster-token": TOKEN },
      body: "{oops",
    });
    expect(malformed.status).toBe(400);
    for (const agent of ["../escape", ".."]) {
      const badAgent = await api(n1.api, "POST", "/v1/agents", { agent });
      expect(badAgent.status).toBe(400);
      expect(badAgent.json.error.code).toBe("CFN_ERR_INVALID_AGENT_ID");
    }
    expect(await metric(n1, "cfn_node_api_rejected_total", { reason: "token" })).toBe(1);
    // The hand-off of a removed node's spool (POST /v1/handoff): refused from a member (it delivers
    // through its streams), for another cluster, and with a malformed message, naming it.
    const clusterId = (await tryStatus(n1)).node.clusterId;
    const message = {
      id: "h1",
      from: "a",
      to: "target",
      type: "t",
      priority: "normal",
      headers: {},
      payload: 1,
      ts: 1,
    };
    const handOffs = [
      { body: { from: "n2", clusterId, messages: [message] }, status: 409, says: "still a member" },
      { body: { from: "gone", clusterId: "other", messages: [message] }, status: 409, says: "cluster" },
      { body: { from: "gone", clusterId, messages: [] }, status: 400, says: "need messages" },
      { body: { from: "gone", clusterId }, status: 400, says: "need messages or acks" },
      {
        body: { from: "gone", clusterId, acks: [{ l: 99, s: "x", u: 1 }] },
        status: 400,
        says: "acks[0]: bad lane",
      },
      {
        body: { from: "gone", clusterId, messages: [message, { ...message, to: "../x" }] },
        status: 400,
        says: "messages[1]: bad to",
      },
    ];
    for (const { body, status, says } of handOffs) {
      const refused = await api(n1.api, "POST", "/v1/handoff", body);
      expect(refused.status, JSON.stringify(refused.json)).toBe(status);
      expect(refused.json.error.message).toContain(says);
    }

    // Request targets that are no URL (`//host:port/…`), raw on the peer port (no token needed:
    // it ended the process) and on the API (a 500 before): refused, and the node serves on.
    const raw = async (port: number, target: string): Promise<string> =>
      new Promise((resolve) => {
        let answer = "";
        const socket = connect(port, "127.0.0.1", () =>
          socket.write(
            `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
              "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
          ),
        );
        socket.on("data", (chunk) => {
          answer += String(chunk);
          socket.destroy();
        });
        socket.on("close", () => resolve(answer));
        socket.on("error", () => resolve(answer));
      });
    for (const target of ["//a:99999/cfn/v1/peer", "//", "///"]) await raw(n1.spec.peerPort, target);
    const apiPort = Number(new URL(n1.api).port);
    expect(await raw(apiPort, "//a:99999/healthz")).toMatch(/^HTTP\/1\.1 400/);
    expect(n1.running).toBe(true);

    // Still serving: healthy, and a cross-node message gets through.
    expect((await fetch(`${n1.api}/healthz`)).status).toBe(200);
    const bus = n1.bus();
    bus.sendSync("s", "target", { id: "after-abuse", type: "t", payload: 1 });
    bus.close();
    const got = await waitFor("delivered after the abuse", async () => {
      const messages = await drainInbox(n2, "target");
      return messages.length > 0 ? messages : undefined;
    });
    expect(got.map((m) => m.id)).toEqual(["after-abuse"]);
  });

  it("refuses to start on an invalid config or another cluster's data dir, with exit status 2", async () => {
    cluster = await TestCluster.create(1);
    const [n1] = cluster.nodes;
    const invalid = await n1.runToExit([
      "--token",
      TOKEN,
      "--peer-listen",
      "nowhere",
      "--api-listen",
      "127.0.0.1:1",
    ]);
    expect(invalid.code).toBe(2);
    expect(invalid.stderr).toContain("CFN_ERR_CONFIG_INVALID");
    expect(invalid.stderr).toContain("peerListen");
    const badSetting = await n1.runToExit([
      "--token",
      TOKEN,
      "--set",
      "nodeDownAfterMs=1",
      "--peer-listen",
      `127.0.0.1:${n1.spec.peerPort}`,
    ]);
    expect(badSetting.code).toBe(2);
    expect(badSetting.stderr).toContain("nodeDownAfterMs");

    // A data dir founded by cluster "alpha" …
    await n1.start(["--cluster-id", "alpha"]);
    n1.signal("SIGTERM");
    expect(await n1.waitExit(), n1.stderr + n1.stdout).toBe(0);
    // … is refused to cluster "beta".
    const foreign = await n1.runToExit([
      "--token",
      TOKEN,
      "--cluster-id",
      "beta",
      "--peer-listen",
      `127.0.0.1:${n1.spec.peerPort}`,
      "--api-listen",
      `127.0.0.1:${n1.spec.apiPort}`,
    ]);
    expect(foreign.code, foreign.stderr).toBe(2);
    expect(foreign.stderr).toContain("CFN_ERR_DATA_DIR_FOREIGN");
    expect(foreign.stderr).toContain('belongs to cluster "alpha"');

    // A second node on the data dir of a running one (other ports) is refused, naming the lock;
    // the first keeps serving.
    await n1.start(["--cluster-id", "alpha"]);
    await cluster.waitReady([n1]);
    const second = await n1.runToExit([
      "--token",
      TOKEN,
      "--cluster-id",
      "alpha",
      "--peer-listen",
      `127.0.0.1:${await freePort()}`,
      "--api-listen",
      `127.0.0.1:${await freePort()}`,
    ]);
    expect(second.code, second.stderr).toBe(2);
    expect(second.stderr).toContain("CFN_ERR_DATA_DIR_LOCKED");
    expect(second.stderr).toContain("is another cfn node running on this data dir?");
    expect((await fetch(`${n1.api}/readyz`)).status).toBe(200);
  });

  it("shuts down gracefully on SIGTERM: hands off 1,000 queued messages, transfers leadership, exits 0", async () => {
    cluster = await TestCluster.create(3);
    await cluster.startAll();
    const leader = await cluster.leader();
    const others = cluster.nodes.filter((node) => node !== leader);
    await api(others[0].api, "POST", "/v1/agents", { agent: "sink" });
    await waitFor("sink routed on the leader", async () =>
      (await tryStatus(leader))?.agents.some((a: { id: string }) => a.id === "sink"),
    );
    const bus = leader.bus();
    const ids: string[] = [];
    for (let i = 0; i < 1000; i++) {
      const id = `q-${i}`;
      bus.sendSync("src", "sink", { id, type: "t", payload: { i } });
      ids.push(id);
    }
    bus.close();
    leader.signal("SIGTERM");
    expect(await leader.waitExit()).toBe(0);
    const stopped = stoppedReport(leader);
    expect(stopped, leader.stderr.slice(-4000)).toMatchObject({ event: "stopped", unacknowledged: 0 });
    // On a loaded machine leadership may have moved before SIGTERM arrived; a node that was the
    // leader at shutdown must have handed leadership over.
    expect(stopped.leadershipTransferred).toBe(stopped.wasLeader);
    const got: string[] = [];
    await waitFor("all 1,000 delivered", async () => {
      got.push(...(await drainInbox(others[0], "sink")).map((m) => m.id));
      return got.length >= ids.length;
    });
    expect(got).toEqual(ids);
    // The rest of the cluster has a leader and saw the node leave: `leaving`, then `down` once
    // its pings stopped for nodeDownAfterMs.
    const newLeader = await cluster.leader(others);
    const status = await tryStatus(newLeader);
    expect(["leaving", "down"]).toContain(
      status.members.find((m: { id: string }) => m.id === leader.id).state,
    );
  });

  it("does not report a leadership transfer when the leader only lost its quorum at shutdown", async () => {
    cluster = await TestCluster.create(3);
    await cluster.startAll();
    const leader = await cluster.leader();
    for (const node of cluster.nodes) if (node !== leader) await node.kill9();
    leader.signal("SIGTERM");
    expect(await leader.waitExit()).toBe(0);
    const stopped = stoppedReport(leader);
    expect(stopped, leader.stderr.slice(-4000)).toMatchObject({ event: "stopped", wasLeader: true });
    expect(stopped.leadershipTransferred).toBe(false);
  });
});
