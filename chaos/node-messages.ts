// The cfn node daemon under chaos: 3 `cfn node start` processes on separate hosts (netns, or
// loopback processes without root), an agent registered on each, agents on every host sending to
// the agents of the other hosts through their local bus (cross-node delivery), while the Raft
// leader — the master coordinator — is killed with SIGKILL and restarted on its data dir, round
// after round. The agents consume as messages arrive, also while their node is down (their bus is
// the host's tmpfs, not the node). Afterwards every message whose send returned (it is on the
// sending host's bus) must have reached its receiver exactly once, in per-sender order: 0 lost,
// 0 duplicated. With `persistence` the nodes mirror their inboxes to disk (docs/NODE.md,
// "Persistence"), so a restart also runs the mirror's restore and the recovery's durability round.
// With fault "partition" (network namespaces only: node-partition-leader) the leader's host is cut
// off from the others instead, held, and healed: its agents' messages wait in the senders'
// spools, its own senders' wait in its spool, and both go out once the links are back.
// With fault "remove" (node-remove-rejoin) a node — the leader in odd rounds, a follower in even
// ones — is removed from the cluster under traffic (`DELETE /v1/members/<id>` through another
// member): it applies its removal, hands its spool to a member and exits by itself; it is then
// started again on a fresh data dir with `--join` and its agent registered again. Meanwhile the
// other nodes hold its agent's messages in their spools, and its host's sender writes into its
// bus, drained by the re-joined node.

import { rmSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { NetnsHosts, netnsPlacement } from "../cluster/netns.js";
import { type LaunchedNode, LocalNodeCluster, waitUntil } from "../cluster/node-launcher.js";
import { Bus } from "../src/bus/index.js";
import type { ChaosCheck, ChaosElection } from "./report.js";
import type { ScenarioTiming } from "./scenarios.js";

/** How each round hits the leader's host (or, for "remove", a node's membership). */
export type NodeFault = "kill" | "partition" | "remove";

export const NODE_SCENARIOS: Record<NodeFault, string> = {
  kill: "node-kill-leader",
  partition: "node-partition-leader",
  remove: "node-remove-rejoin",
};

/** Requests to remove a node, when the answer is lost or late (5xx, timeout). */
const REMOVE_ATTEMPTS_MAX = 3;
/** A removed node applies its removal, hands off its spool and exits within this. */
const REMOVED_EXIT_WITHIN_MS = 20_000;

export interface NodeMessagesReport {
  scenario: string;
  backend: "netns" | "processes";
  persistence: boolean;
  rounds: number;
  startedAt: string;
  durationMs: number;
  timing: ScenarioTiming;
  elections: ChaosElection[];
  messages: {
    sent: number;
    delivered: number;
    lost: number;
    duplicated: number;
    outOfOrder: number;
    examples: string[];
  };
  checks: ChaosCheck[];
  ok: boolean;
}

/** Messages each sender sends to each other host's agent per burst (6 sender→receiver pairs):
 *  about 240 messages/s in all, steady traffic that a loaded 2-core machine keeps up with. */
const BURST_MESSAGES = 2;
const BURST_INTERVAL_MS = 50;
/** How long delivery of everything accepted may take once the cluster is whole again. */
const DELIVER_WITHIN_MS = 40_000;
/** The agents consume what arrived every this many ms while the traffic runs. */
const CONSUME_INTERVAL_MS = 100;

const sleep = (ms: number) => new Promise<void>((done) => setTimeout(done, ms));

function busOf(node: LaunchedNode): Bus {
  return new Bus({ config: { root: node.spec.busRoot, name: "default", inboxDepthMax: 1_000_000 } });
}

/** Reads and acknowledges what `agent`'s inbox on `node`'s host holds now. */
function drain(bus: Bus, agent: string): { id: string; from: string; i: number }[] {
  const mailbox = bus.openMailbox(agent, { heartbeat: false, watch: false });
  const out: { id: string; from: string; i: number }[] = [];
  try {
    for (;;) {
      const deliveries = mailbox.receiveNow(1000);
      if (deliveries.length === 0) return out;
      for (const { message } of deliveries)
        out.push({ id: message.id, from: message.from, i: (message.payload as { i: number }).i });
      mailbox.ack(deliveries);
    }
  } finally {
    mailbox.close();
  }
}

export async function runNodeMessagesChaos(options: {
  backend: "netns" | "processes";
  rounds: number;
  timing: ScenarioTiming;
  /** Start the nodes with --persistence (inboxes mirrored to disk). */
  persistence?: boolean;
  /** SIGKILL and restart the leader (default), or cut its host off and heal (netns only). */
  fault?: NodeFault;
}): Promise<NodeMessagesReport> {
  const { backend, rounds, timing, persistence = false, fault = "kill" } = options;
  if (fault === "partition" && backend !== "netns")
    throw new Error(`the ${backend} backend cannot inject partition faults`);
  const nodeFlags = persistence ? ["--persistence"] : [];
  const startedAt = new Date().toISOString();
  const t0 = performance.now();
  const hosts = backend === "netns" ? NetnsHosts.create(3) : undefined;
  let cluster: LocalNodeCluster | undefined;
  const buses = new Map<string, Bus>();
  try {
    cluster = await LocalNodeCluster.create(3, {
      prefix: "cfn-chaos-node-",
      placement: hosts ? netnsPlacement(hosts, { peerPort: 7101, clientPort: 7201 }) : undefined,
    });
    const nodes = cluster.nodes;
    await cluster.startAll(nodeFlags, { CFN_BUS_INBOX_DEPTH_MAX: "1000000" });
    const agentOf = new Map(nodes.map((node) => [node.id, `a-${node.id}`]));
    for (const node of nodes) {
      const { status } = await node.request("POST", "/v1/agents", {
        agent: agentOf.get(node.id),
        team: null,
      });
      if (status !== 200)
        throw new Error(`registering ${agentOf.get(node.id)} on ${node.id}: HTTP ${status}`);
    }
    await waitUntil("agents routed on every node", async () => {
      for (const node of nodes) {
        const known = new Set(((await node.status())?.agents ?? []).map((agent: { id: string }) => agent.id));
        if (![...agentOf.values()].every((agent) => known.has(agent))) return false;
      }
      return true;
    });
    for (const node of nodes) buses.set(node.id, busOf(node));
    const received = new Map<string, { id: string; from: string; i: number }[]>();
    const collect = () => {
      for (const node of nodes) {
        const agent = agentOf.get(node.id)!;
        received.set(agent, [...(received.get(agent) ?? []), ...drain(buses.get(node.id)!, agent)]);
      }
      return [...received.values()].reduce((sum, list) => sum + list.length, 0);
    };

    // Traffic: on every host, sender s-<node> sends to the agent of every other host.
    const sent: { id: string; to: string; from: string }[] = [];
    let counter = 0;
    let sending = true;
    const consuming = (async () => {
      while (sending) {
        collect();
        await sleep(CONSUME_INTERVAL_MS);
      }
    })();
    const traffic = (async () => {
      while (sending) {
        for (let k = 0; k < BURST_MESSAGES; k++) {
          const i = counter++;
          for (const node of nodes) {
            const from = `s-${node.id}`;
            for (const target of nodes) {
              if (target === node) continue;
              const to = agentOf.get(target.id)!;
              const id = `${from}-${to}-${i}`;
              buses.get(node.id)!.sendSync(from, to, { id, type: "chaos", payload: { i } });
              sent.push({ id, to, from });
            }
          }
        }
        await sleep(BURST_INTERVAL_MS);
      }
    })();

    const elections: ChaosElection[] = [];
    const checks: ChaosCheck[] = [];
    let leaderProblem = "";
    await sleep(timing.settleMs);
    for (let round = 1; round <= rounds; round++) {
      const leader = await cluster.leader();
      if (fault === "remove") {
        const removedAt = performance.now();
        const problem = await removeAndRejoin(
          cluster,
          round % 2 === 1 ? leader : nodes.find((node) => node !== leader)!,
          agentOf,
          nodeFlags,
        );
        if (problem) leaderProblem += `round ${round}: ${problem}; `;
        else
          elections.push({
            round,
            cause: "node removed and joined again",
            replaced: true,
            ms: Math.round(performance.now() - removedAt),
            leader: (await cluster.leader()).id,
          });
        await sleep(timing.settleMs);
        continue;
      }
      if (fault === "partition") hosts!.isolate(Number(leader.id.replace(/^n/, "")));
      else {
        leader.signal("SIGKILL");
        await leader.waitExit();
      }
      const killedAt = performance.now();
      try {
        const next = await waitUntil(
          "a new leader",
          () => cluster!.leader(nodes.filter((node) => node !== leader)),
          timing.leaderWithinMs,
        );
        const ms = Math.round(performance.now() - killedAt);
        const cause = fault === "partition" ? "leader's host cut off" : "kill -9 leader";
        elections.push({ round, cause, replaced: true, ms, leader: next.id });
        if (ms > timing.leaderWithinMs) leaderProblem += `round ${round}: new leader after ${ms} ms; `;
      } catch {
        leaderProblem += `round ${round}: no new leader within ${timing.leaderWithinMs} ms; `;
      }
      if (fault === "partition") {
        await sleep(timing.faultHoldMs);
        hosts!.heal();
      } else {
        await sleep(timing.settleMs);
        await leader.start([...cluster.peerFlags(leader), ...nodeFlags], {
          CFN_BUS_INBOX_DEPTH_MAX: "1000000",
        });
      }
      await sleep(timing.settleMs);
    }
    sending = false;
    await Promise.all([traffic, consuming]);
    checks.push(
      fault === "remove"
        ? {
            name: "every removed node exited by itself and joined again",
            ok: leaderProblem === "",
            detail: leaderProblem || `${elections.length} of ${rounds} rounds`,
          }
        : {
            name: `new leader within bound after every ${fault === "partition" ? "partition" : "kill"}`,
            ok: leaderProblem === "",
            detail: leaderProblem || `${elections.length} elections, all ≤ ${timing.leaderWithinMs} ms`,
          },
    );

    // Collect until everything accepted arrived (or the bound passed), then once more for stragglers.
    const deadline = performance.now() + DELIVER_WITHIN_MS;
    while (collect() < sent.length && performance.now() < deadline) await sleep(100);
    await sleep(1_000);
    collect();

    const seen = new Map<string, number>();
    const examples: string[] = [];
    let outOfOrder = 0;
    for (const [agent, list] of received) {
      const lastOf = new Map<string, number>();
      for (const message of list) {
        seen.set(message.id, (seen.get(message.id) ?? 0) + 1);
        if ((lastOf.get(message.from) ?? -1) >= message.i) {
          outOfOrder++;
          if (examples.length < 20) examples.push(`out of order at ${agent}: ${message.id}`);
        }
        lastOf.set(message.from, message.i);
      }
    }
    const lostIds = sent.filter((message) => !seen.has(message.id)).map((message) => message.id);
    const duplicated = [...seen.values()].filter((count) => count > 1).length;
    examples.push(...lostIds.slice(0, 20).map((id) => `lost: ${id}`));
    checks.push({
      name: "no accepted message lost",
      ok: lostIds.length === 0 && sent.length > 0,
      detail: `${lostIds.length} of ${sent.length} missing`,
    });
    checks.push({
      name: "no message duplicated",
      ok: duplicated === 0,
      detail: `${duplicated} delivered more than once`,
    });
    checks.push({
      name: "per-sender order kept",
      ok: outOfOrder === 0,
      detail: `${outOfOrder} out of order`,
    });
    return {
      scenario: NODE_SCENARIOS[fault],
      backend,
      persistence,
      rounds,
      startedAt,
      durationMs: Math.round(performance.now() - t0),
      timing,
      elections,
      messages: {
        sent: sent.length,
        delivered: [...received.values()].reduce((sum, list) => sum + list.length, 0),
        lost: lostIds.length,
        duplicated,
        outOfOrder,
        examples,
      },
      checks,
      ok: checks.every((check) => check.ok),
    };
  } finally {
    for (const bus of buses.values()) bus.close();
    await cluster?.stop();
    hosts?.destroy();
  }
}

/**
 * One round of "remove": `victim` is removed through another member, exits by itself (status 0),
 * and is started again on a fresh data dir with --join, its agent registered again. Returns what
 * went wrong, or "" when it all did.
 */
async function removeAndRejoin(
  cluster: LocalNodeCluster,
  victim: LaunchedNode,
  agentOf: Map<string, string>,
  nodeFlags: string[],
): Promise<string> {
  const via = cluster.nodes.find((node) => node !== victim)!;
  // On a loaded machine the answer may come late (removing the leader transfers leadership
  // first): asked again, "unknown_member" means the first request did it.
  let answer = "";
  for (let attempt = 0; attempt < REMOVE_ATTEMPTS_MAX; attempt++) {
    const removed = await via.request("DELETE", `/v1/members/${victim.id}`).catch((error: Error) => ({
      status: 0,
      json: { error: error.message },
    }));
    answer = `HTTP ${removed.status} ${JSON.stringify(removed.json)}`;
    if (removed.status === 200 || (attempt > 0 && answer.includes("unknown_member"))) {
      answer = "";
      break;
    }
    if (removed.status > 0 && removed.status < 500) break;
  }
  if (answer) return `removing ${victim.id}: ${answer}`;
  let code: number | null;
  try {
    code = await victim.waitExit(REMOVED_EXIT_WITHIN_MS);
  } catch {
    victim.signal("SIGKILL");
    await victim.waitExit();
    return `${victim.id} did not stop by itself within ${REMOVED_EXIT_WITHIN_MS} ms`;
  }
  if (code !== 0) return `${victim.id} exited with ${code}: ${victim.stderr.slice(-500)}`;
  rmSync(victim.spec.dataDir, { recursive: true, force: true });
  const member = cluster.nodes.find((node) => node !== victim && node.running)!;
  await victim.start(["--join", member.api, ...nodeFlags], { CFN_BUS_INBOX_DEPTH_MAX: "1000000" });
  await waitUntil(`${victim.id} a member again everywhere`, async () => {
    for (const node of cluster.nodes) {
      const members = ((await node.status())?.members ?? []) as { id: string; state: string }[];
      if (!members.some((entry) => entry.id === victim.id && entry.state === "active")) return false;
    }
    return true;
  });
  const agent = agentOf.get(victim.id)!;
  const { status } = await victim.request("POST", "/v1/agents", { agent, team: null });
  if (status !== 200) return `registering ${agent} again on ${victim.id}: HTTP ${status}`;
  await waitUntil(`${agent} up on every node`, async () => {
    for (const node of cluster.nodes) {
      const agents = ((await node.status())?.agents ?? []) as { id: string; node: string; up: boolean }[];
      if (!agents.some((entry) => entry.id === agent && entry.node === victim.id && entry.up)) return false;
    }
    return true;
  });
  return "";
}

export function formatNodeMessagesSummary(report: NodeMessagesReport): string {
  const times = report.elections.map((e) => e.ms).sort((a, b) => a - b);
  const median = times.length ? times[Math.floor((times.length - 1) / 2)] : 0;
  const what =
    report.scenario === NODE_SCENARIOS.remove
      ? `  node removed and joined again ${times.length} times, median ${median} ms, max ${times.at(-1) ?? 0} ms`
      : `  leader replaced ${times.length} times, median ${median} ms, max ${times.at(-1) ?? 0} ms (bound ${report.timing.leaderWithinMs} ms)`;
  return [
    `chaos ${report.scenario} on ${report.backend}${report.persistence ? " with persistence" : ""}: ${report.ok ? "PASS" : "FAIL"} (${report.rounds} rounds, ${(report.durationMs / 1000).toFixed(1)} s)`,
    what,
    `  messages: ${report.messages.sent} sent, ${report.messages.delivered} delivered, ${report.messages.lost} lost, ${report.messages.duplicated} duplicated, ${report.messages.outOfOrder} out of order`,
    ...report.checks.map((check) => `  [${check.ok ? "ok" : "FAILED"}] ${check.name}: ${check.detail}`),
  ].join("\n");
}
