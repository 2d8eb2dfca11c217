// TCP ports for node processes launched on this machine, handed out so that a node can bind the
// port it is given. The old way — ask the OS for a free port, release it, start the node on it —
// races: between the release and the child's bind, any process may get the same port from the OS
// (every outgoing connection takes an ephemeral port), and the node dies with EADDRINUSE.
//
// Here ports come from below the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range),
// which the OS never hands to listen(0) or connect(), so no unrelated process is given one. Among
// cfn launchers (vitest workers, benches, chaos runs in parallel) a port is reserved by a lock file
// created with O_EXCL under the OS temp dir, holding the owner's pid; a lock whose owner is dead is
// taken over. A reserved port is also probed free before it is handed out (a fixed-port program
// may sit on it). Reservations last for the life of the process.

import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Lowest port handed out; below it sit the well-known fixed ports of cluster/*.yaml (7xxx). */
export const RESERVED_PORT_MIN = 20_000;
/** Tries before giving up on finding a reservable free port. */
const RESERVE_ATTEMPTS_MAX = 200;

const lockDir = join(tmpdir(), "cfn-ports");
const held = new Set<number>();
process.once("exit", () => {
  for (const port of held) rmSync(join(lockDir, String(port)), { force: true });
});

/** One past the highest port that is not ephemeral, or undefined when the range leaves no room. */
function reservedPortEnd(): number | undefined {
  try {
    const low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > RESERVED_PORT_MIN + 1_000 ? low : undefined;
  } catch {
    return undefined; // not Linux: fall back to the OS's choice
  }
}

/** Whether a process with this pid exists (EPERM: it does, owned by someone else). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Takes the lock file of `port` (also from a dead owner); true when this process now holds it. */
export function maybeLockPort(port: number): boolean {
  mkdirSync(lockDir, { recursive: true });
  const path = join(lockDir, String(port));
  for (let round = 0; round < 2; round++) {
    try {
      const fd = openSync(path, "wx");
      writeSync(fd, String(process.pid));
      closeSync(fd);
      held.add(port);
      return true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const owner = Number(readFileSync(path, "utf8") || "0");
      // An empty file is a lock being written right now: leave it to its owner.
      if (owner === 0 || processAlive(owner)) return false;
      rmSync(path, { force: true });
    }
  }
  return false;
}

function probeFree(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

function osFreePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, host, () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

/**
 * A port on `host` (default 127.0.0.1) that stays this process's to give to a child: outside the
 * ephemeral range, locked against other cfn launchers, and free when probed. Falls back to an
 * OS-chosen port where the ephemeral range leaves no room below it.
 */
export async function reservePort(host = "127.0.0.1"): Promise<number> {
  const end = reservedPortEnd();
  if (end === undefined) return osFreePort(host);
  mkdirSync(lockDir, { recursive: true });
  for (let attempt = 0; attempt < RESERVE_ATTEMPTS_MAX; attempt++) {
    const port = RESERVED_PORT_MIN + Math.floor(Math.random() * (end - RESERVED_PORT_MIN));
    if (held.has(port) || !maybeLockPort(port)) continue;
    if (await probeFree(port, host)) return port;
    // Someone outside cfn listens there: keep the lock (so nobody retries it) and move on.
  }
  throw new Error(`no free port in ${RESERVED_PORT_MIN}..${end - 1} after ${RESERVE_ATTEMPTS_MAX} tries`);
}
