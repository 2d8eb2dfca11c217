// The peer listener under a flood of unauthenticated connections (docs/TRANSPORT.md "Listener
// limits"): real sockets against a real WsTransport. Silent or half-sent handshakes are bounded
// by pendingConnectionsMax (a new one closes the oldest) and closed after handshakeTimeoutMs;
// a real peer still gets through and delivers; every close is counted.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { connect as connectTcp, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { isCfnError } from "../../src/errors.js";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import {
  resolveListenerLimits,
  WsTransport,
  type WsTransportOptions,
} from "../../src/transport/ws-transport.js";
import { inbox, message, waitFor } from "./compliance.js";

const TOKEN = "test-cluster-token-0123456789";
const created: WsTransport[] = [];
const floods: Socket[] = [];

afterEach(async () => {
  for (const socket of floods.splice(0)) socket.destroy();
  for (const transport of created.splice(0)) await transport.close();
});

function build(nodeId: string, metrics: Metrics, listener?: WsTransportOptions["listener"]): WsTransport {
  const transport = new WsTransport({
    nodeId,
    clusterToken: TOKEN,
    logger: silentLogger,
    metrics,
    listener,
    limits: { reconnectDelayMsMin: 10, reconnectDelayMsMax: 100 },
  });
  created.push(transport);
  return transport;
}

/** `count` TCP connections that send part of a peer upgrade request, then nothing. */
async function flood(url: string, count: number): Promise<{ closed: () => number }> {
  const { hostname, port } = new URL(url);
  let closed = 0;
  await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<void>((resolve) => {
          // From 127.0.0.2: the peer dials from 127.0.0.1 (another address, as on a network).
          const socket = connectTcp({ port: Number(port), host: hostname, localAddress: "127.0.0.2" }, () => {
            socket.write(
              "GET /cfn/v1/peer HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
            );
            resolve();
          });
          socket.on("error", () => resolve());
          socket.on("close", () => {
            closed++;
            resolve();
          });
          floods.push(socket);
        }),
    ),
  );
  return { closed: () => closed };
}

describe("peer listener limits", () => {
  it("bounds a flood of half-open handshakes, closes them on time, and still lets a peer in", async () => {
    const metricsA = new Metrics();
    const a = build("a", metricsA, { pendingConnectionsMax: 16, handshakeTimeoutMs: 600 });
    const b = build("b", new Metrics());
    await a.start();
    await b.start();
    const atA = inbox(a);

    const silent = await flood(a.url, 300);
    // All but the newest pendingConnectionsMax are closed at once to make room for the next one.
    await waitFor(() => silent.closed() >= 300 - 16, "the flood's oldest connections evicted", 10_000);
    expect(
      await metricsA.value("cfn_transport_listener_reaped_total", { reason: "evicted" }),
    ).toBeGreaterThanOrEqual(284);
    expect(a.pendingConnections).toBeLessThanOrEqual(16);

    // A peer dialling into the full pending pool evicts a silent connection and authenticates.
    a.addPeer("b", b.url);
    b.addPeer("a", a.url);
    b.send([message("b", "a", { index: 7 })]);
    await waitFor(() => atA.messages().length === 1, "b's message through the flood", 10_000);
    expect(atA.messages()[0].index).toBe(7);

    // The rest of the flood is closed by the handshake deadline; the authenticated peer stays.
    // Failed 2 of 6 full-suite CI runs (2026-12-08) at 10 s, never alone (11 of 11, also under
    // CPU load): a longer wait, and what each side saw if it still fails, to find out why.
    try {
      await waitFor(() => silent.closed() === 300, "the rest closed by handshakeTimeoutMs", 30_000);
    } catch (error) {
      const reaped = await metricsA
        .value("cfn_transport_listener_reaped_total", { reason: "timeout" })
        .catch(() => "?");
      const refused = await metricsA.value("cfn_transport_listener_refused_total").catch(() => "?");
      throw new Error(
        `${(error as Error).message}: client sockets closed ${silent.closed()} of 300, ` +
          `server pending ${a.pendingConnections}, reaped by timeout ${reaped}, ` +
          `refused ${refused}`,
      );
    }
    expect(
      await metricsA.value("cfn_transport_listener_reaped_total", { reason: "timeout" }),
    ).toBeGreaterThan(0);
    await waitFor(() => a.pendingConnections === 0, "no pending connection left", 3_000);
    expect(await metricsA.value("cfn_transport_listener_pending_connections")).toBe(0);
    b.send([message("b", "a", { index: 8 })]);
    await waitFor(() => atA.messages().length === 2, "b's connection kept after the deadline", 5_000);
  });

  it("closes a rejected handshake whose client never closes, by the deadline", async () => {
    const metrics = new Metrics();
    const a = build("a", metrics, { handshakeTimeoutMs: 300 });
    await a.start();
    const { hostname, port } = new URL(a.url);
    let answer = "";
    const socket = connectTcp({ port: Number(port), host: hostname, allowHalfOpen: true }, () =>
      socket.write(
        "GET /cfn/v1/peer HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nx-cfn-cluster-token: wrong-token-wrong-token\r\nx-cfn-node-id: z\r\nx-cfn-target-node-id: a\r\n\r\n",
      ),
    );
    // allowHalfOpen: it reads the 401 and never ends its side (the server's end() alone left
    // such a socket open for good).
    floods.push(socket);
    socket.on("data", (chunk) => {
      answer += String(chunk);
    });
    socket.on("error", () => undefined);
    await waitFor(() => answer.includes("401"), "the 401", 3_000);
    expect(await metrics.value("cfn_transport_auth_rejected_total", { reason: "token" })).toBe(1);
    expect(a.pendingConnections).toBe(1);
    await waitFor(
      async () => (await metrics.value("cfn_transport_listener_reaped_total", { reason: "timeout" })) === 1,
      "the rejected socket closed by the deadline",
      3_000,
    );
    expect(a.pendingConnections).toBe(0);
  });

  it("over TLS, an authenticated peer connection outlives the handshake deadline", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cfn-tls-"));
    let key: Buffer;
    let cert: Buffer;
    try {
      execFileSync(
        "openssl",
        [
          ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
          ...["-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"), "-days", "1"],
          ...["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        ],
        { stdio: "ignore" },
      );
      key = readFileSync(join(dir, "key.pem"));
      cert = readFileSync(join(dir, "cert.pem"));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const make = (nodeId: string, metrics: Metrics) => {
      const transport = new WsTransport({
        nodeId,
        clusterToken: TOKEN,
        logger: silentLogger,
        metrics,
        listener: { handshakeTimeoutMs: 200 },
        tls: { server: { key, cert }, client: { ca: cert } },
      });
      created.push(transport);
      return transport;
    };
    const metricsB = new Metrics();
    const a = make("a", new Metrics());
    const b = make("b", metricsB);
    await Promise.all([a.start(), b.start()]);
    a.addPeer("b", b.url);
    b.addPeer("a", a.url);
    const atB = inbox(b);
    a.send([message("a", "b", { index: 1 })]);
    await waitFor(() => atB.messages().length === 1, "a message over TLS", 5_000);
    expect(b.pendingConnections).toBe(0); // released on upgrade: the TLS socket's TCP socket
    await new Promise((resolve) => setTimeout(resolve, 600));
    a.send([message("a", "b", { index: 2 })]);
    await waitFor(() => atB.messages().length === 2, "the same connection after the deadline", 5_000);
    expect(await metricsB.value("cfn_transport_listener_reaped_total", { reason: "timeout" })).toBe(0);
    expect(await metricsB.value("cfn_transport_connections_opened_total", { direction: "inbound" })).toBe(1);
  });

  it("validates its limits with a typed error naming the limit", () => {
    expect(resolveListenerLimits()).toEqual({ pendingConnectionsMax: 64, handshakeTimeoutMs: 5000 });
    for (const bad of [
      { pendingConnectionsMax: 0 },
      { handshakeTimeoutMs: 50 },
      { pendingConnectionsMax: 1.5 },
    ]) {
      let error: unknown;
      try {
        resolveListenerLimits(bad);
      } catch (caught) {
        error = caught;
      }
      expect(isCfnError(error, "CFN_ERR_CONFIG_INVALID")).toBe(true);
      expect(String((error as Error).message)).toContain(Object.keys(bad)[0]);
    }
  });
});
