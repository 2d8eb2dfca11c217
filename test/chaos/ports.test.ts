// Reserved ports (cluster/ports.ts): below the kernel's ephemeral range, never handed out twice,
// bindable when handed out, and a lock left by a dead process is taken over.

import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { maybeLockPort, RESERVED_PORT_MIN, reservePort } from "../../cluster/ports.js";

const rangePath = "/proc/sys/net/ipv4/ip_local_port_range";

describe("reservePort", () => {
  it("hands out distinct bindable ports below the ephemeral range", async () => {
    const ports = [];
    for (let i = 0; i < 50; i++) ports.push(await reservePort());
    expect(new Set(ports).size).toBe(50);
    if (existsSync(rangePath)) {
      const low = Number(readFileSync(rangePath, "utf8").split(/\s+/)[0]);
      for (const port of ports) {
        expect(port).toBeGreaterThanOrEqual(RESERVED_PORT_MIN);
        expect(port).toBeLessThan(low);
      }
    }
    for (const port of ports.slice(0, 5)) {
      await new Promise<void>((resolve, reject) => {
        const server = createServer();
        server.once("error", reject);
        server.listen(port, "127.0.0.1", () => server.close(() => resolve()));
      });
    }
  });

  it("never hands out a port locked by a live process, and takes over a dead owner's lock", () => {
    const lockDir = join(tmpdir(), "cfn-ports");
    mkdirSync(lockDir, { recursive: true });
    // Ports below RESERVED_PORT_MIN are never chosen by reservePort: safe to play with here.
    const port = RESERVED_PORT_MIN - 1 - (process.pid % 1000);
    const lock = join(lockDir, String(port));
    try {
      writeFileSync(lock, String(process.ppid)); // a live process
      expect(maybeLockPort(port)).toBe(false);
      const dead = spawnSync(process.execPath, ["-e", "0"]).pid; // exited and reaped
      writeFileSync(lock, String(dead));
      expect(maybeLockPort(port)).toBe(true);
      expect(readFileSync(lock, "utf8")).toBe(String(process.pid));
    } finally {
      rmSync(lock, { force: true });
    }
  });
});
