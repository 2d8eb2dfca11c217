// The network-namespace hosts: hosts reach each other and the root namespace over the hub
// bridge; a partition really stops TCP between two hosts (and not to the others); heal restores
// it; a degraded link drops packets; destroy() leaves no namespace or link behind. Root only:
// elsewhere creating hosts must refuse with the reason.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { afterEach, describe, expect, it } from "vitest";
import { NetnsHosts, netnsUnavailableReason } from "../../cluster/netns.js";

const problem = netnsUnavailableReason();
let hosts: NetnsHosts | undefined;
const servers: ChildProcess[] = [];

afterEach(() => {
  for (const server of servers.splice(0)) server.kill("SIGKILL");
  hosts?.destroy();
  hosts = undefined;
});

/** An echo-free TCP server on host `index` port 9000 (a node one-liner in that namespace). */
async function listenOn(set: NetnsHosts, index: number): Promise<void> {
  const script = `require("node:net").createServer((s)=>s.end("hi")).listen(9000,"${set.host(index).address}",()=>console.log("up"))`;
  const child = spawn(set.commandPrefix(index)[0], [
    ...set.commandPrefix(index).slice(1),
    process.execPath,
    "-e",
    script,
  ]);
  servers.push(child);
  await new Promise<void>((resolve, reject) => {
    child.stdout?.once("data", () => resolve());
    child.once("exit", (code) => reject(new Error(`server exited ${code}`)));
  });
}

/** Whether host `from` can open a TCP connection to `to`:9000 within 500 ms. */
function canConnect(set: NetnsHosts, from: number, to: number): boolean {
  const script = `const s=require("node:net").connect(9000,"${set.host(to).address}");s.on("data",()=>process.exit(0));s.on("error",()=>process.exit(1));setTimeout(()=>process.exit(2),500)`;
  try {
    execFileSync(set.commandPrefix(from)[0], [
      ...set.commandPrefix(from).slice(1),
      process.execPath,
      "-e",
      script,
    ]);
    return true;
  } catch {
    return false;
  }
}

describe("network-namespace hosts", () => {
  it("partition cuts exactly the links between the groups; heal restores them; destroy cleans up", async () => {
    if (problem) {
      // Not root (or no iproute2): creating hosts must refuse with the reason, leaving nothing.
      console.warn(`netns: unavailable: ${problem}`);
      expect(() => NetnsHosts.create(3)).toThrow(`network namespaces unavailable: ${problem}`);
      return;
    }
    hosts = NetnsHosts.create(3);
    const namespaces = hosts.hosts.map((host) => host.namespace);
    await listenOn(hosts, 2);
    await listenOn(hosts, 3);
    expect(canConnect(hosts, 1, 2)).toBe(true);
    hosts.isolate(2);
    expect(canConnect(hosts, 1, 2)).toBe(false);
    expect(canConnect(hosts, 1, 3)).toBe(true);
    hosts.heal();
    expect(canConnect(hosts, 1, 2)).toBe(true);
    // Total loss on a degraded link behaves as a cut, by whichever mechanism the kernel offers.
    const applied = hosts.degradeLink(1, 3, { delayMs: 10, lossPercent: 100 });
    if (applied.mechanism === "none") {
      // Neither tc netem nor iptables here (.ci/run installs iptables): say so, check the rest.
      console.warn(`netns: link degradation unavailable: ${applied.note}`);
    } else {
      expect(canConnect(hosts, 1, 3)).toBe(false);
      expect(canConnect(hosts, 1, 2)).toBe(true);
      hosts.heal();
      expect(canConnect(hosts, 1, 3)).toBe(true);
    }
    hosts.destroy();
    const left = execFileSync("ip", ["netns", "list"], { encoding: "utf8" });
    for (const namespace of namespaces) expect(left).not.toContain(namespace);
  });
});
