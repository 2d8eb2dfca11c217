import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { type AddressInfo, connect as connectTcp } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { WebSocket, WebSocketServer } from "ws";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { encodeFrame } from "../../src/transport/frame.js";
import type { TransportLimits } from "../../src/transport/transport.js";
import { WsTransport } from "../../src/transport/ws-transport.js";
import { inbox, message, transportCompliance, waitFor } from "./compliance.js";

const TOKEN = "test-cluster-token-0123456789";
const FAST_RECONNECT: Partial<TransportLimits> = { reconnectDelayMsMin: 10, reconnectDelayMsMax: 100 };
const created: WsTransport[] = [];

function build(
  nodeId: string,
  limits: Partial<TransportLimits> = {},
  metrics = new Metrics(),
  port?: number,
) {
  const transport = new WsTransport({
    nodeId,
    clusterToken: TOKEN,
    logger: silentLogger,
    metrics,
    port,
    limits: { ...FAST_RECONNECT, ...limits },
  });
  created.push(transport);
  return transport;
}

async function closeAll(): Promise<void> {
  for (const transport of created.splice(0)) await transport.close();
}

transportCompliance("ws adapter", {
  async create(nodeId, limits) {
    const metrics = new Metrics();
    const transport = build(nodeId, limits, metrics);
    await transport.start();
    return { transport, url: transport.url, metrics };
  },
  async unreachableUrl() {
    const probe = new WsTransport({
      nodeId: "probe",
      clusterToken: TOKEN,
      logger: silentLogger,
      metrics: new Metrics(),
    });
    await probe.start();
    const url = probe.url;
    await probe.close();
    return url;
  },
  build: (nodeId, limits) => build(nodeId, limits),
  cleanup: closeAll,
});

/** A raw ws client that authenticates as `nodeId` and can send anything. */
function rawPeer(url: string, headers: Record<string, string>, path = "/cfn/v1/peer") {
  const socket = new WebSocket(new URL(path, url), { headers });
  const closed = new Promise<{ code: number }>((resolve) =>
    socket.once("close", (code) => resolve({ code })),
  );
  const outcome = new Promise<"open" | number>((resolve) => {
    socket.once("open", () => resolve("open"));
    socket.once("unexpected-response", (_request, response) => {
      resolve(response.statusCode ?? 0);
      socket.terminate();
    });
    socket.once("error", () => resolve(-1));
  });
  return { socket, closed, outcome };
}

const goodHeaders = (nodeId: string, target: string, token = TOKEN) => ({
  "x-cfn-cluster-token": token,
  "x-cfn-node-id": nodeId,
  "x-cfn-target-node-id": target,
});

describe("WsTransport hostile peers", () => {
  afterEach(closeAll);

  async function serverWithGoodPeer(limits: Partial<TransportLimits> = {}) {
    const metrics = new Metrics();
    const server = build("s", limits, metrics);
    const good = build("good", limits);
    await server.start();
    await good.start();
    server.addPeer("good", good.url);
    server.addPeer("evil", "ws://127.0.0.1:9"); // known id, so its handshake passes
    good.addPeer("s", server.url);
    return { server, good, metrics, received: inbox(server) };
  }

  async function goodPeerStillServed(good: WsTransport, received: ReturnType<typeof inbox>, index: number) {
    good.send([message("good", "s", { index })]);
    await waitFor(
      () => received.messages().some((m) => m.index === index),
      `message ${index} from the good peer`,
    );
  }

  it("a client that resets the connection during a refused handshake does not crash the server", async () => {
    const { server, good, metrics, received } = await serverWithGoodPeer();
    const { hostname, port } = new URL(server.url);
    const request =
      "GET /cfn/v1/peer HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
      "x-cfn-cluster-token: wrong\r\nx-cfn-node-id: evil\r\nx-cfn-target-node-id: s\r\n\r\n";
    for (let attempt = 0; attempt < 20; attempt++) {
      await new Promise<void>((resolve) => {
        const socket = connectTcp(Number(port), hostname, () => {
          socket.write(request);
          // Half the time reset at once, half the time once the 401 starts to arrive.
          if (attempt % 2 === 0) socket.resetAndDestroy();
          else socket.once("data", () => socket.resetAndDestroy());
        });
        socket.on("error", () => {});
        socket.on("close", () => resolve());
      });
    }
    await waitFor(
      async () => (await metrics.value("cfn_transport_auth_rejected_total", { reason: "token" })) >= 10,
      "the refused handshakes",
    );
    await goodPeerStillServed(good, received, 1);
  });

  it("garbage bytes close that connection, are counted, and the server keeps serving good peers", async () => {
    const { server, good, metrics, received } = await serverWithGoodPeer();
    await goodPeerStillServed(good, received, 1);
    const evil = rawPeer(server.url, goodHeaders("evil", "s"));
    expect(await evil.outcome).toBe("open");
    evil.socket.send(Buffer.from([0xc1, 0xff, 0x00, 0x13, 0x37]));
    const { code } = await evil.closed;
    expect(code).toBe(1007);
    expect(await metrics.value("cfn_transport_bad_frames_total")).toBe(1);
    await goodPeerStillServed(good, received, 2);
    expect(received.frames.every((frame) => frame.from === "good")).toBe(true);
  });

  it("a well-encoded frame with a malformed Raft message is a bad frame", async () => {
    const { server, metrics, received } = await serverWithGoodPeer();
    const evil = rawPeer(server.url, goodHeaders("evil", "s"));
    expect(await evil.outcome).toBe("open");
    evil.socket.send(encodeFrame("raft", [{ ...message("evil", "s"), term: -1 }]));
    expect((await evil.closed).code).toBe(1007);
    expect(await metrics.value("cfn_transport_bad_frames_total", { reason: "shape" })).toBe(1);
    expect(received.messages()).toEqual([]);
  });

  it("a peer cannot speak for another node: a spoofed `from` is a bad frame", async () => {
    const { server, metrics, received } = await serverWithGoodPeer();
    const evil = rawPeer(server.url, goodHeaders("evil", "s"));
    expect(await evil.outcome).toBe("open");
    evil.socket.send(encodeFrame("raft", [message("good", "s")]));
    expect((await evil.closed).code).toBe(1007);
    expect(await metrics.value("cfn_transport_bad_frames_total", { reason: "sender" })).toBe(1);
    expect(received.messages()).toEqual([]);
  });

  it("a text frame is a bad frame", async () => {
    const { server, metrics } = await serverWithGoodPeer();
    const evil = rawPeer(server.url, goodHeaders("evil", "s"));
    expect(await evil.outcome).toBe("open");
    evil.socket.send("hello");
    expect((await evil.closed).code).toBe(1003);
    expect(await metrics.value("cfn_transport_bad_frames_total", { reason: "text" })).toBe(1);
  });

  it("an oversized frame closes the connection (1009), is counted, and good peers go on", async () => {
    const { server, good, metrics, received } = await serverWithGoodPeer({ frameBytesMax: 4096 });
    const evil = rawPeer(server.url, goodHeaders("evil", "s"));
    expect(await evil.outcome).toBe("open");
    evil.socket.send(new Uint8Array(10_000));
    expect((await evil.closed).code).toBe(1009);
    expect(await metrics.value("cfn_transport_bad_frames_total", { reason: "too_large" })).toBe(1);
    await goodPeerStillServed(good, received, 3);
  });

  it("rejects a wrong token, an unknown node, a wrong target and a wrong path, and counts each", async () => {
    const { server, metrics } = await serverWithGoodPeer();
    const attempts = [
      { headers: goodHeaders("good", "s", "wrong-token-wrong-token"), reason: "token", status: 401 },
      { headers: goodHeaders("stranger", "s"), reason: "unknown_node", status: 401 },
      { headers: goodHeaders("good", "someone-else"), reason: "wrong_target", status: 401 },
      { headers: { "x-cfn-node-id": "good" }, reason: "headers", status: 401 },
    ];
    for (const attempt of attempts) {
      const peer = rawPeer(server.url, attempt.headers);
      expect(await peer.outcome, attempt.reason).toBe(attempt.status);
      expect(await metrics.value("cfn_transport_auth_rejected_total", { reason: attempt.reason })).toBe(1);
    }
    const wrongPath = rawPeer(server.url, goodHeaders("good", "s"), "/elsewhere");
    expect(await wrongPath.outcome).toBe(404);
    expect(await metrics.value("cfn_transport_auth_rejected_total")).toBe(5);
  });

  it("refuses a short cluster token at construction", () => {
    expect(
      () =>
        new WsTransport({ nodeId: "a", clusterToken: "short", logger: silentLogger, metrics: new Metrics() }),
    ).toThrow(/clusterToken/);
  });
});

describe("WsTransport connections", () => {
  afterEach(closeAll);

  /** a sends 1 to b, b's server stops, a queues 2, b starts again on its port (and dials a). */
  async function restartWithQueuedFrame(aLimits: Partial<TransportLimits> = {}) {
    const a = build("a", aLimits);
    let b = build("b");
    await a.start();
    await b.start();
    const port = Number(new URL(b.url).port);
    a.addPeer("b", b.url);
    b.addPeer("a", a.url);
    let atB = inbox(b);
    const unreachable: string[] = [];
    a.onPeerUnreachable((peer) => unreachable.push(peer));
    a.send([message("a", "b", { index: 1 })]);
    await waitFor(() => atB.messages().length === 1, "first delivery");

    await b.close();
    await waitFor(() => unreachable.includes("b"), "b reported unreachable");
    a.send([message("a", "b", { index: 2 })]);

    b = build("b", {}, new Metrics(), port);
    b.addPeer("a", a.url);
    atB = inbox(b);
    await b.start();
    return { a, atB };
  }

  it("reconnects after the peer's server restarts, and delivers what was queued meanwhile", async () => {
    const { a, atB } = await restartWithQueuedFrame();
    await waitFor(() => atB.messages().some((m) => m.index === 2), "delivery after restart");
    a.send([message("a", "b", { index: 3 })]);
    await waitFor(() => atB.messages().some((m) => m.index === 3), "delivery on the new connection");
    expect(atB.messages().map((m) => m.index)).toEqual([2, 3]);
  });

  it("a restarted peer that dials in ends the backoff of the dial to it: what was queued goes at once", async () => {
    // a's dial to b backs off 15 – 30 s once b is gone; b's own dial to a says it is back.
    const { atB } = await restartWithQueuedFrame({
      reconnectDelayMsMin: 30_000,
      reconnectDelayMsMax: 30_000,
    });
    // Well inside the 15 s the backoff alone would wait.
    await waitFor(
      () => atB.messages().some((m) => m.index === 2),
      "delivery after the peer dialled in",
      8_000,
    );
    expect(atB.messages().map((m) => m.index)).toEqual([2]);
  });

  it("bounds the queue of an unreachable peer: the oldest Raft frames are dropped and counted", async () => {
    const metrics = new Metrics();
    const a = build("a", { peerQueueFramesMax: 5 }, metrics);
    await a.start();
    const b = build("b");
    await b.start();
    const bUrl = b.url;
    const port = Number(new URL(bUrl).port);
    await b.close();
    a.addPeer("b", bUrl);
    for (let i = 1; i <= 12; i++) a.send([message("a", "b", { index: i })]);
    expect(a.queuedFrames("b")).toBe(5);
    expect(await metrics.value("cfn_transport_frames_dropped_total", { reason: "queue_full" })).toBe(7);
    // A full queue refuses other channels' frames (backpressure) rather than evicting Raft ones.
    expect(a.sendFrame("b", "bus", { n: 1 })).toBe(false);
    expect(a.queuedFrames("b")).toBe(5);

    const revived = build("b", {}, new Metrics(), port);
    revived.addPeer("a", a.url);
    const atB = inbox(revived);
    await revived.start();
    await waitFor(() => atB.messages().length === 5, "the queue drained");
    expect(atB.messages().map((m) => m.index)).toEqual([8, 9, 10, 11, 12]);
    expect(a.queuedFrames("b")).toBe(0);
  });

  it("drops and re-dials a connection whose peer stops answering pings (half-open)", async () => {
    const silent = new WebSocketServer({ host: "127.0.0.1", port: 0, autoPong: false });
    await new Promise<void>((resolve) => silent.once("listening", () => resolve()));
    let connections = 0;
    silent.on("connection", () => connections++);
    try {
      const metrics = new Metrics();
      const a = build("a", { keepaliveIntervalMs: 20 }, metrics);
      await a.start();
      const unreachable: string[] = [];
      a.onPeerUnreachable((peer) => unreachable.push(peer));
      a.addPeer("mute", `ws://127.0.0.1:${(silent.address() as AddressInfo).port}`);
      await waitFor(
        () => unreachable.length >= 1 && connections >= 2,
        "the mute connection dropped and re-dialled",
      );
      expect(await metrics.value("cfn_transport_dial_failures_total")).toBeGreaterThanOrEqual(1);
    } finally {
      for (const client of silent.clients) client.terminate();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  it("a second connection from the same peer replaces the first", async () => {
    const metrics = new Metrics();
    const s = build("s", {}, metrics);
    await s.start();
    s.addPeer("p", "ws://127.0.0.1:9");
    const received = inbox(s);
    const first = rawPeer(s.url, goodHeaders("p", "s"));
    expect(await first.outcome).toBe("open");
    const second = rawPeer(s.url, goodHeaders("p", "s"));
    expect(await second.outcome).toBe("open");
    expect((await first.closed).code).toBe(1000);
    second.socket.send(encodeFrame("raft", [message("p", "s", { index: 5 })]));
    await waitFor(() => received.messages().length === 1, "a frame on the second connection");
    second.socket.close();
  });
});

describe("WsTransport over TLS", () => {
  const tlsTransports: WsTransport[] = [];
  afterEach(async () => {
    for (const transport of tlsTransports.splice(0)) await transport.close();
  });

  function selfSignedCertificate(): { key: Buffer; cert: Buffer } {
    const dir = mkdtempSync(join(tmpdir(), "cfn-tls-"));
    try {
      execFileSync(
        "openssl",
        [
          "req",
          "-x509",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:prime256v1",
          "-nodes",
          "-keyout",
          join(dir, "key.pem"),
          "-out",
          join(dir, "cert.pem"),
          "-days",
          "1",
          "-subj",
          "/CN=127.0.0.1",
          "-addext",
          "subjectAltName=IP:127.0.0.1",
        ],
        { stdio: "ignore" },
      );
      return { key: readFileSync(join(dir, "key.pem")), cert: readFileSync(join(dir, "cert.pem")) };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it("exchanges messages over wss:// and refuses a server whose certificate it does not trust", async () => {
    const { key, cert } = selfSignedCertificate();
    const make = (nodeId: string, ca?: Buffer) => {
      const transport = new WsTransport({
        nodeId,
        clusterToken: TOKEN,
        logger: silentLogger,
        metrics: new Metrics(),
        limits: FAST_RECONNECT,
        tls: { server: { key, cert }, client: ca ? { ca } : {} },
      });
      tlsTransports.push(transport);
      return transport;
    };
    const a = make("a", cert);
    const b = make("b", cert);
    const stranger = make("c"); // trusts only the system CAs
    await Promise.all([a.start(), b.start(), stranger.start()]);
    expect(a.url.startsWith("wss://127.0.0.1:")).toBe(true);
    a.addPeer("b", b.url);
    b.addPeer("a", a.url);
    b.addPeer("c", stranger.url);
    stranger.addPeer("b", b.url);
    const atB = inbox(b);
    a.send([message("a", "b", { index: 42 })]);
    await waitFor(() => atB.messages().length === 1, "a message over TLS");
    expect(atB.messages()[0].index).toBe(42);

    const unreachable: string[] = [];
    stranger.onPeerUnreachable((peer) => unreachable.push(peer));
    stranger.send([message("c", "b", { index: 7 })]);
    await waitFor(() => unreachable.includes("b"), "the untrusted dial to fail");
    expect(atB.messages().map((m) => m.index)).toEqual([42]);
  });
});
