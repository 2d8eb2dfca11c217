// `cfn swarm round` on a cluster swarm interrupted with SIGINT / SIGTERM: the reply agent is
// deregistered and its mailbox removed (exit 130 / 143); `cfn swarm stop` then removes what the
// late results and the cluster left on the node's bus — reply mailboxes, the swarm's master,
// rounds and team lead mailboxes — and reply agents still registered. One real node process.

import { type ChildProcess, execFile, spawn } from "node:child_process";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { api, CLI, type NodeProcess, TestCluster, TOKEN, waitFor } from "../node/harness.js";

const run = promisify(execFile);

let cluster: TestCluster | undefined;
const rounds: ChildProcess[] = [];

afterEach(async () => {
  for (const round of rounds.splice(0)) if (round.exitCode === null) round.kill("SIGKILL");
  await cluster?.stop();
  cluster = undefined;
});

function swarmArgs(node: NodeProcess, args: string[]): string[] {
  return [CLI, "--bus-root", node.spec.busRoot, "--log-level", "warn", "swarm", ...args];
}

const env = { ...process.env, CFN_API_TOKEN: TOKEN };

function cli(node: NodeProcess, args: string[]) {
  return run(process.execPath, swarmArgs(node, args), { env, timeout: 60_000 });
}

async function registered(node: NodeProcess, prefix: string): Promise<string[]> {
  const routing = (await api(node.api, "GET", "/v1/routing")).json as { agents: Array<{ id: string }> };
  return routing.agents.map((agent) => agent.id).filter((id) => id.startsWith(prefix));
}

function mailboxes(node: NodeProcess, prefix: string): string[] {
  const bus = node.bus();
  try {
    return bus.listAgents().filter((id) => id.startsWith(prefix));
  } finally {
    bus.close();
  }
}

/** Starts a round, waits until its reply agent is registered, sends `signal`; resolves its exit. */
async function interruptedRound(node: NodeProcess, signal: NodeJS.Signals) {
  const round = spawn(process.execPath, swarmArgs(node, ["round", "--name", "cw"]), {
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  rounds.push(round);
  let stderr = "";
  round.stderr?.on("data", (chunk) => {
    stderr += String(chunk);
  });
  const exit = new Promise<number | null>((resolve) => round.once("exit", (code) => resolve(code)));
  await waitFor("the round sent", () => stderr.includes("sent to the cluster's master"));
  const [replyAgent] = await waitFor("its reply agent registered", async () => {
    const ids = await registered(node, "cw.client-");
    return ids.length > 0 ? ids : undefined;
  });
  round.kill(signal);
  const code = await exit;
  return { code, stderr, replyAgent };
}

describe("a cluster round interrupted, then swarm stop", () => {
  it("withdraws the reply agent and mailbox at once; stop leaves nothing of the swarm on the bus", async () => {
    cluster = await TestCluster.create(1, "cfn-swarm-int-");
    await cluster.startAll();
    const [n1] = cluster.nodes;
    const slow = join(cluster.root, "slow.sh");
    writeFileSync(slow, '#!/bin/sh\nread l\nsleep 2\necho "{}"\n');
    chmodSync(slow, 0o755);
    await cli(n1, [
      "spawn",
      "--name",
      "cw",
      "--count",
      "2",
      "--teams",
      "1",
      "--cluster",
      "--api",
      n1.api,
      "--runtime",
      "command",
      "--json",
      "--",
      slow,
    ]);
    await waitFor("the team placed", async () => (await registered(n1, "cw.main.lead")).length === 1);

    for (const [signal, status] of [
      ["SIGINT", 130],
      ["SIGTERM", 143],
    ] as const) {
      const { code, stderr, replyAgent } = await interruptedRound(n1, signal);
      expect(code, stderr).toBe(status);
      expect(stderr).toContain(`swarm round interrupted (${signal})`);
      expect(await registered(n1, replyAgent)).toEqual([]);
      expect(mailboxes(n1, replyAgent)).toEqual([]);
    }

    // The master finishes both rounds anyway: their results land in reply mailboxes nobody reads.
    await waitFor(
      "both late results",
      () => {
        const bus = n1.bus();
        try {
          const late = mailboxes(n1, "cw.client-").filter((id) => (bus.agentStatus(id)?.inboxDepth ?? 0) > 0);
          return late.length === 2;
        } finally {
          bus.close();
        }
      },
      30_000,
    );
    const stopped = JSON.parse((await cli(n1, ["stop", "--name", "cw", "--json"])).stdout);
    expect(stopped.stopped[0]).toMatchObject({ swarm: "cw", clusterLeft: true, mailboxesKept: 0 });
    expect(await registered(n1, "cw.")).toEqual([]);
    expect(mailboxes(n1, "cw.")).toEqual([]);
  }, 120_000);
});
