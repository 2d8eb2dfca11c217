// ConnectionGuard on a plain TCP server with real sockets: the cap, eviction of the oldest idle
// connection (of the newcomer's own address first), refusal when all are busy, the idle timeout.

import { connect as connectTcp, createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/obs/logger.js";
import { ConnectionGuard, RateLimitedWarning } from "../../src/transport/connection-guard.js";
import { waitFor } from "./compliance.js";

const servers: Server[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  for (const server of servers.splice(0)) await new Promise((resolve) => server.close(resolve));
});

async function guarded(connectionsMax: number, idleTimeoutMs?: number) {
  const counts = { refused: 0, evicted: 0, timeout: 0 };
  const accepted: Socket[] = [];
  const server = createServer((socket) => accepted.push(socket));
  const guard = new ConnectionGuard({
    name: "test",
    connectionsSetting: "testConnectionsMax",
    connectionsMax,
    idleTimeoutMs,
    logger: silentLogger,
    onRefused: () => counts.refused++,
    onReaped: (reason) => counts[reason]++,
  });
  guard.attach(server);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const port = (server.address() as { port: number }).port;
  const open = (localAddress = "127.0.0.1") =>
    new Promise<{ socket: Socket; closed: () => boolean }>((resolve) => {
      let closed = false;
      const socket = connectTcp({ port, host: "127.0.0.1", localAddress }, () =>
        resolve({ socket, closed: () => closed }),
      );
      socket.on("error", () => undefined);
      socket.on("close", () => {
        closed = true;
      });
      sockets.push(socket);
    });
  return { guard, counts, open, accepted };
}

describe("ConnectionGuard", () => {
  it("evicts the oldest idle connection of the flooding address, not another address's", async () => {
    const { guard, counts, open } = await guarded(8);
    const other = await open("127.0.0.2");
    const flood: { socket: Socket; closed: () => boolean }[] = [];
    for (let i = 0; i < 100; i++) flood.push(await open("127.0.0.1"));
    await waitFor(() => flood.filter((c) => c.closed()).length === 93, "93 of the flood evicted", 5_000);
    expect(counts.evicted).toBe(93);
    expect(other.closed()).toBe(false);
    expect(guard.connections).toBe(8);
    // A newcomer from an address with nothing idle evicts the oldest of all (the flood's).
    await open("127.0.0.3");
    await waitFor(() => counts.evicted === 94, "one more eviction", 5_000);
    expect(other.closed()).toBe(false);
  });

  it("refuses a newcomer when every connection is busy, and closes idle ones after the timeout", async () => {
    const { guard, counts, open, accepted } = await guarded(2, 200);
    await open();
    await open();
    await waitFor(() => accepted.length === 2, "two accepted", 5_000);
    for (const socket of accepted) guard.markBusy(socket);
    const third = await open();
    await waitFor(() => third.closed(), "the third refused", 5_000);
    expect(counts.refused).toBe(1);
    guard.markIdle(accepted[0]);
    await waitFor(() => counts.timeout === 1, "the idle one closed by the timeout", 5_000);
    expect(accepted[0].destroyed).toBe(true);
    expect(accepted[1].destroyed).toBe(false); // busy: never timed out by the guard
    expect(guard.connections).toBe(1);
  });

  it("warns once at the first event, then at most once per interval with the counts", async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = {
      ...silentLogger,
      warn: (_m: string, fields?: Record<string, unknown>) => lines.push(fields ?? {}),
    };
    const warning = new RateLimitedWarning(logger, "x", 100);
    for (let i = 0; i < 1000; i++) warning.note("closed_evicted");
    expect(lines).toEqual([{ closed_evicted: 1, warnIntervalMs: 100 }]);
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(lines).toEqual([
      { closed_evicted: 1, warnIntervalMs: 100 },
      { closed_evicted: 999, warnIntervalMs: 100 },
    ]);
  });
});
