// Hosts in Linux network namespaces, for multi-host chaos runs on one machine (root only).
//
//   root ns: cfnv<X>g 10.77.X.254/24 ── veth ── ns cfn-<X>-hub: bridge br0
//                                                  ├── veth ── ns cfn-<X>-h1: eth0 10.77.X.1/24
//                                                  └── veth ── ns cfn-<X>-h2: eth0 10.77.X.2/24 …
//
// Each host has its own network stack (its own loopback, ports and routes); processes run in it
// with `ip netns exec`, which execs the command, so the pid we hold is the node's own. The root
// namespace reaches every host over the bridge (the chaos client runs there); the hosts have no
// default route and the root ns does not forward, so traffic stays between the hosts we made.
// Faults act inside the hosts: partitions are blackhole routes (iproute2 only), link loss and
// delay are tc netem where the kernel has it, else loss by an iptables statistic rule.
//
// Subnets are leased per run (10.77.X.0/24, X in 1..250) by a lock dir under /run, so parallel
// runs do not collide; a lease whose owner died is reclaimed and its leftovers removed. Every
// namespace, link and rule is removed by destroy() and again, synchronously, at process exit.

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { NodePlacement } from "./local.js";
import { processAlive } from "./ports.js";

/** Hosts per run; the /24 leaves room for more, but names and tests assume a handful. */
export const NETNS_HOSTS_MAX = 16;
const SUBNET_FIRST = 1;
const SUBNET_LAST = 250;
const LEASE_DIR = existsSync("/run") ? "/run/cfn-netns" : "/tmp/cfn-netns";

export interface NetnsHost {
  /** Host index from 1. */
  index: number;
  namespace: string;
  address: string;
  /** The host's veth end in the hub namespace (on the bridge). */
  hubLink: string;
}

/** What a degraded link actually got: the kernel may lack netem (then only loss applies). */
export interface LinkDegradation {
  delayMs: number;
  lossPercent: number;
  mechanism: "netem" | "iptables-loss" | "none";
  note?: string;
}

function run(command: string, args: string[]): string {
  return execFileSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

function tryRun(command: string, args: string[]): { ok: boolean; error: string } {
  try {
    run(command, args);
    return { ok: true, error: "" };
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? "";
    return { ok: false, error: (stderr || (error as Error).message).trim() };
  }
}

function commandExists(name: string): boolean {
  return tryRun("sh", ["-c", `command -v ${name}`]).ok;
}

/** Why network namespaces cannot be used here, or undefined when they can. */
export function netnsUnavailableReason(): string | undefined {
  if (process.platform !== "linux") return "network namespaces need Linux";
  if (process.getuid?.() !== 0) return "network namespaces need root";
  if (!commandExists("ip")) return "iproute2 (`ip`) is not installed";
  const probe = `cfn-probe-${process.pid}`;
  const made = tryRun("ip", ["netns", "add", probe]);
  if (!made.ok) return `cannot create a network namespace: ${made.error}`;
  tryRun("ip", ["netns", "del", probe]);
  return undefined;
}

function namesOf(subnet: number, index: number) {
  return { namespace: `cfn-${subnet}-h${index}`, hubLink: `h${index}` };
}

/** Removes whatever a run on `subnet` may have left (namespaces, links, bridge). */
function removeSubnetLeftovers(subnet: number): void {
  const namespaces = tryRun("ip", ["netns", "list"]).ok ? run("ip", ["netns", "list"]) : "";
  for (const line of namespaces.split("\n")) {
    const name = line.split(" ")[0];
    if (name?.startsWith(`cfn-${subnet}-`)) tryRun("ip", ["netns", "del", name]);
  }
  // Deleting the hub namespace deletes the gateway veth's peer, and so the veth; in case not:
  tryRun("ip", ["link", "del", `cfnv${subnet}g`]);
}

/** Leases a free 10.77.X.0/24 (mkdir is atomic); reclaims leases of dead owners. */
function leaseSubnet(): number {
  mkdirSync(LEASE_DIR, { recursive: true });
  const start = SUBNET_FIRST + (process.pid % (SUBNET_LAST - SUBNET_FIRST + 1));
  for (let i = 0; i <= SUBNET_LAST - SUBNET_FIRST; i++) {
    const subnet = SUBNET_FIRST + ((start - SUBNET_FIRST + i) % (SUBNET_LAST - SUBNET_FIRST + 1));
    const dir = join(LEASE_DIR, String(subnet));
    try {
      mkdirSync(dir);
    } catch {
      const owner = Number(existsSync(join(dir, "pid")) ? readFileSync(join(dir, "pid"), "utf8") : "0");
      if (owner === 0 || processAlive(owner)) continue;
      removeSubnetLeftovers(subnet);
      rmSync(dir, { recursive: true, force: true });
      try {
        mkdirSync(dir);
      } catch {
        continue;
      }
    }
    writeFileSync(join(dir, "pid"), String(process.pid));
    return subnet;
  }
  throw new Error(`no free 10.77.X.0/24 subnet (all ${SUBNET_LAST} leased under ${LEASE_DIR})`);
}

const liveSets = new Set<NetnsHosts>();
process.once("exit", () => {
  for (const hosts of liveSets) hosts.destroy();
});

/** N hosts on one bridge; see the file comment. */
export class NetnsHosts {
  readonly subnet: number;
  readonly hosts: NetnsHost[];
  /** The bridge's address: how the root namespace (the chaos client) reaches the hosts. */
  readonly gateway: string;
  private readonly blackholes = new Set<string>();
  private readonly degraded = new Map<string, LinkDegradation>();
  private destroyed = false;

  private constructor(subnet: number, count: number) {
    this.subnet = subnet;
    this.gateway = `10.77.${subnet}.254`;
    this.hosts = Array.from({ length: count }, (_, i) => ({
      index: i + 1,
      address: `10.77.${subnet}.${i + 1}`,
      ...namesOf(subnet, i + 1),
    }));
  }

  /** Creates `count` hosts; throws (after removing what it made) when the kernel refuses. */
  static create(count: number): NetnsHosts {
    if (!Number.isInteger(count) || count < 1 || count > NETNS_HOSTS_MAX)
      throw new Error(`host count ${count} is outside 1..${NETNS_HOSTS_MAX}`);
    const problem = netnsUnavailableReason();
    if (problem) throw new Error(`network namespaces unavailable: ${problem}`);
    const hosts = new NetnsHosts(leaseSubnet(), count);
    liveSets.add(hosts);
    try {
      hosts.build();
    } catch (error) {
      hosts.destroy();
      throw error;
    }
    return hosts;
  }

  host(index: number): NetnsHost {
    const host = this.hosts[index - 1];
    if (!host) throw new Error(`no host ${index}`);
    return host;
  }

  /** The prefix that runs a command on a host: `ip netns exec <ns>` (it execs the command). */
  commandPrefix(index: number): string[] {
    return ["ip", "netns", "exec", this.host(index).namespace];
  }

  /** Cuts every link between the groups (hosts in no group keep all their links). */
  partition(groups: number[][]): void {
    for (const [g, group] of groups.entries())
      for (const [h, other] of groups.entries())
        if (g !== h) for (const a of group) for (const b of other) this.blackhole(a, b);
  }

  /** Cuts the links between `index` and every other host. */
  isolate(index: number): void {
    this.partition([[index], this.hosts.map((host) => host.index).filter((i) => i !== index)]);
  }

  /** Restores every link cut by partition()/isolate() and every degraded link. */
  heal(): void {
    for (const key of this.blackholes) {
      const [from, to] = key.split(">").map(Number);
      tryRun("ip", [
        "-n",
        this.host(from).namespace,
        "route",
        "del",
        "blackhole",
        `${this.host(to).address}/32`,
      ]);
    }
    this.blackholes.clear();
    for (const key of this.degraded.keys()) {
      const [a, b] = key.split("-").map(Number);
      this.restoreLink(a, b);
    }
  }

  /** Delay and loss on the link a↔b, both directions. Returns what the kernel allowed. */
  degradeLink(a: number, b: number, wanted: { delayMs: number; lossPercent: number }): LinkDegradation {
    this.restoreLink(a, b);
    let applied: LinkDegradation = { ...wanted, mechanism: "netem" };
    for (const [from, to] of [
      [a, b],
      [b, a],
    ]) {
      const netem = this.addNetem(from, to, wanted);
      if (netem.ok) continue;
      const loss = this.addIptablesLoss(from, to, wanted.lossPercent);
      applied = {
        delayMs: 0,
        lossPercent: loss.ok ? wanted.lossPercent : 0,
        mechanism: loss.ok ? "iptables-loss" : "none",
        note: `tc netem unavailable (${netem.error})${loss.ok ? "; loss only, by iptables" : `; iptables: ${loss.error}`}`,
      };
    }
    this.degraded.set(`${Math.min(a, b)}-${Math.max(a, b)}`, applied);
    return applied;
  }

  /** Removes every namespace, link and rule; safe to call twice. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    liveSets.delete(this);
    removeSubnetLeftovers(this.subnet);
    rmSync(join(LEASE_DIR, String(this.subnet)), { recursive: true, force: true });
  }

  private build(): void {
    // The bridge lives in a hub namespace, not the root one: there, Docker's FORWARD DROP policy
    // (applied to bridged frames by br_netfilter) would drop the hosts' traffic to each other.
    const hub = `cfn-${this.subnet}-hub`;
    run("ip", ["netns", "add", hub]);
    run("ip", ["-n", hub, "link", "add", "br0", "type", "bridge"]);
    run("ip", ["-n", hub, "link", "set", "br0", "up"]);
    const gatewayLink = `cfnv${this.subnet}g`;
    run("ip", ["link", "add", gatewayLink, "type", "veth", "peer", "name", "gw", "netns", hub]);
    run("ip", ["addr", "add", `${this.gateway}/24`, "dev", gatewayLink]);
    run("ip", ["link", "set", gatewayLink, "up"]);
    run("ip", ["-n", hub, "link", "set", "gw", "master", "br0", "up"]);
    for (const host of this.hosts) {
      run("ip", ["netns", "add", host.namespace]);
      run("ip", [
        "-n",
        hub,
        "link",
        "add",
        host.hubLink,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        host.namespace,
      ]);
      run("ip", ["-n", hub, "link", "set", host.hubLink, "master", "br0", "up"]);
      run("ip", ["-n", host.namespace, "addr", "add", `${host.address}/24`, "dev", "eth0"]);
      run("ip", ["-n", host.namespace, "link", "set", "eth0", "up"]);
      run("ip", ["-n", host.namespace, "link", "set", "lo", "up"]);
    }
  }

  private blackhole(from: number, to: number): void {
    const key = `${from}>${to}`;
    if (this.blackholes.has(key)) return;
    run("ip", ["-n", this.host(from).namespace, "route", "add", "blackhole", `${this.host(to).address}/32`]);
    this.blackholes.add(key);
  }

  /** htb root with a netem class that only traffic to `to` is classified into. */
  private addNetem(from: number, to: number, wanted: { delayMs: number; lossPercent: number }) {
    const exec = [...this.commandPrefix(from), "tc"];
    const steps = [
      ["qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "1"],
      ["class", "add", "dev", "eth0", "parent", "1:", "classid", "1:1", "htb", "rate", "10gbit"],
      ["class", "add", "dev", "eth0", "parent", "1:", "classid", "1:2", "htb", "rate", "10gbit"],
      ["qdisc", "add", "dev", "eth0", "parent", "1:2", "handle", "20:", "netem"].concat([
        "delay",
        `${wanted.delayMs}ms`,
        "loss",
        `${wanted.lossPercent}%`,
      ]),
      ["filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "prio", "1", "u32"].concat([
        "match",
        "ip",
        "dst",
        `${this.host(to).address}/32`,
        "flowid",
        "1:2",
      ]),
    ];
    for (const step of steps) {
      const result = tryRun(exec[0], [...exec.slice(1), ...step]);
      if (!result.ok) {
        tryRun(exec[0], [...exec.slice(1), "qdisc", "del", "dev", "eth0", "root"]);
        return result;
      }
    }
    return { ok: true, error: "" };
  }

  private iptablesLossRule(from: number, to: number, lossPercent: number): string[] {
    return [
      ...this.commandPrefix(from).slice(1),
      ...["iptables", "OUTPUT", "-d", this.host(to).address, "-m", "statistic", "--mode", "random"],
      ...["--probability", String(lossPercent / 100), "-j", "DROP"],
    ];
  }

  private addIptablesLoss(from: number, to: number, lossPercent: number) {
    if (!commandExists("iptables")) return { ok: false, error: "iptables is not installed" };
    const rule = this.iptablesLossRule(from, to, lossPercent);
    return tryRun("ip", [...rule.slice(0, 4), "-A", ...rule.slice(4)]);
  }

  private restoreLink(a: number, b: number): void {
    const key = `${Math.min(a, b)}-${Math.max(a, b)}`;
    const applied = this.degraded.get(key);
    if (!applied) return;
    this.degraded.delete(key);
    for (const [from, to] of [
      [a, b],
      [b, a],
    ]) {
      const prefix = this.commandPrefix(from);
      if (applied.mechanism === "netem")
        tryRun(prefix[0], [...prefix.slice(1), "tc", "qdisc", "del", "dev", "eth0", "root"]);
      if (applied.mechanism === "iptables-loss") {
        const rule = this.iptablesLossRule(from, to, applied.lossPercent);
        tryRun("ip", [...rule.slice(0, 4), "-D", ...rule.slice(4)]);
      }
    }
  }
}

/** Places node nK on host K of `hosts`: its own address, the same ports on every host (each
 *  host has its own port space, so nothing can race for them). */
export function netnsPlacement(
  hosts: NetnsHosts,
  ports = { peerPort: 7001, clientPort: 7002 },
): NodePlacement {
  const indexOf = (id: string) => Number(id.replace(/^n/, ""));
  return {
    address: (id) => hosts.host(indexOf(id)).address,
    ports: async () => ports,
    commandPrefix: (id) => hosts.commandPrefix(indexOf(id)),
  };
}
