// The `cfn agent run -- <cmd>` contract (stdin JSON, CFN_* env, stdout = result, exit code =
// success), graceful SIGTERM drain, priorities, and direct messages through the CLI.

import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { Bus, Delivery } from "../../src/bus/index.js";
import { ensureLeanAgent } from "../../src/coordination/lean-agent-binary.js";
import { MESSAGE, type ResultPayload } from "../../src/coordination/protocol.js";
import { collect, exited, runCli, startCli, startCliUntilCleanup, testBus, waitFor } from "./helpers.js";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function setup() {
  return testBus(cleanups);
}

async function receiveAll(bus: Bus, agent: string, count: number, timeoutMs = 20_000): Promise<Delivery[]> {
  const mailbox = bus.openMailbox(agent);
  const out: Delivery[] = [];
  const deadline = Date.now() + timeoutMs;
  while (out.length < count && Date.now() < deadline) {
    const deliveries = await mailbox.receive({ timeoutMs: 200, max: 100 });
    mailbox.ack(deliveries);
    out.push(...deliveries);
  }
  mailbox.close();
  return out;
}

function task(
  bus: Bus,
  to: string,
  taskId: string,
  input: unknown,
  priority: "high" | "normal" | "low" = "normal",
) {
  return bus.sendSync("tester", to, {
    type: MESSAGE.task,
    id: `r1.${taskId}.a1`,
    priority,
    payload: { roundId: "r1", taskId, attempt: 1, team: "blue", input },
  });
}

describe("cfn agent run -- <command>", () => {
  it("hands each task to the command on stdin with CFN_* env; stdout is the result, exit code the success", async () => {
    const { bus, global } = setup();
    const script =
      'read -r line; if [ "$CFN_TASK_ID" = "bad" ]; then echo "no good" >&2; exit 7; fi; ' +
      'printf \'{"task":"%s","round":"%s","attempt":"%s","team":"%s","agent":"%s","type":"%s","stdin":%s}\' "$CFN_TASK_ID" "$CFN_ROUND_ID" "$CFN_ATTEMPT" "$CFN_TEAM" "$CFN_AGENT_ID" "$CFN_MESSAGE_TYPE" "$line"';
    const child = startCli([
      ...global,
      "agent",
      "run",
      "--id",
      "a1",
      "--team",
      "blue",
      "--",
      "sh",
      "-c",
      script,
    ]);
    cleanups.push(async () => {
      child.kill("SIGKILL");
      await exited(child);
    });
    task(bus, "a1", "good", { n: 1 });
    task(bus, "a1", "bad", { n: 2 });
    const replies = await receiveAll(bus, "tester", 2);
    const byTask = new Map(
      replies.map((d) => [(d.message.payload as ResultPayload).re, d.message.payload as ResultPayload]),
    );
    const good = byTask.get("r1.good.a1");
    expect(good?.ok).toBe(true);
    expect(good?.exitCode).toBe(0);
    expect(good?.output).toEqual({
      task: "good",
      round: "r1",
      attempt: "1",
      team: "blue",
      agent: "a1",
      type: "task",
      stdin: {
        type: "task",
        messageId: "r1.good.a1",
        from: "tester",
        agent: "a1",
        team: "blue",
        taskId: "good",
        roundId: "r1",
        attempt: 1,
        input: { n: 1 },
      },
    });
    const bad = byTask.get("r1.bad.a1");
    expect(bad?.ok).toBe(false);
    expect(bad?.exitCode).toBe(7);
    expect(bad?.error).toBe("no good");
    expect(replies.every((d) => d.message.type === MESSAGE.result && d.message.from === "a1")).toBe(true);
  });

  it("drains queued tasks on SIGTERM, answers them all, and exits 0", async () => {
    const { bus, global } = setup();
    const child = startCli([...global, "agent", "run", "--id", "a2", "--", "sh", "-c", "sleep 0.2; cat"]);
    const output = collect(child);
    for (let i = 0; i < 3; i++) task(bus, "a2", `t${i}`, i);
    // Wait for the first task to start, then ask the agent to stop.
    const mailboxDir = bus.layout.agent("a2");
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline && bus.agentStatus("a2")?.claimed === 0)
      await new Promise((r) => setTimeout(r, 20));
    child.kill("SIGTERM");
    const { code } = await exited(child);
    expect(output.stderr()).not.toMatch(/unexpected error/);
    expect(code).toBe(0);
    const replies = await receiveAll(bus, "tester", 3);
    expect(replies.map((d) => (d.message.payload as ResultPayload).re).sort()).toEqual([
      "r1.t0.a1",
      "r1.t1.a1",
      "r1.t2.a1",
    ]);
    expect(replies.every((d) => (d.message.payload as ResultPayload).ok)).toBe(true);
    expect(mailboxDir.agentId).toBe("a2");
    expect(bus.agentStatus("a2")).toBeUndefined(); // its empty mailbox was removed on the way out
  });

  it("runs high before normal before low (command agent)", async () => {
    const { root, bus, global } = setup();
    const log = join(root, "order.log");
    task(bus, "a3", "low", "low", "low");
    task(bus, "a3", "normal", "normal", "normal");
    task(bus, "a3", "high", "high", "high");
    task(bus, "a3", "low2", "low2", "low");
    task(bus, "a3", "high2", "high2", "high");
    const child = startCli([
      ...global,
      "agent",
      "run",
      "--id",
      "a3",
      "--",
      "sh",
      "-c",
      `echo "$CFN_TASK_ID" >> ${log}`,
    ]);
    cleanups.push(async () => {
      child.kill("SIGKILL");
      await exited(child);
    });
    await receiveAll(bus, "tester", 5);
    expect(readFileSync(log, "utf8").trim().split("\n")).toEqual(["high", "high2", "normal", "low", "low2"]);
  });

  it("runs high before normal before low (lean C agent)", async () => {
    const { bus } = setup();
    const binary = ensureLeanAgent();
    expect(binary).toBeDefined();
    for (const [id, priority] of [
      ["l1", "low"],
      ["n1", "normal"],
      ["h1", "high"],
      ["l2", "low"],
      ["n2", "normal"],
      ["h2", "high"],
    ] as const)
      task(bus, "lean1", id, id, priority);
    const child = spawn(binary as string, ["run", "--bus-dir", bus.dir, "--id", "lean1"], {
      stdio: "ignore",
    });
    cleanups.push(async () => {
      child.kill("SIGKILL");
      await exited(child);
    });
    const replies = await receiveAll(bus, "tester", 6);
    // seq numbers the lean agent's sends: the order it worked in.
    const order = replies
      .sort((a, b) => a.message.seq - b.message.seq)
      .map((d) => (d.message.payload as ResultPayload).output);
    expect(order).toEqual(["h1", "h2", "n1", "n2", "l1", "l2"]);
  });

  it("cfn agent direct: a message straight to an agent, its command's stdout comes back", async () => {
    const { global } = setup();
    const child = startCli([
      ...global,
      "agent",
      "run",
      "--id",
      "peer",
      "--",
      "sh",
      "-c",
      'read -r line; echo "peer got $CFN_MESSAGE_TYPE from $CFN_FROM"',
    ]);
    cleanups.push(async () => {
      child.kill("SIGKILL");
      await exited(child);
    });
    const result = await runCli(
      [...global, "agent", "direct", "--from", "me", "--to", "peer", "--json", '{"hi":1}'],
      { timeoutMs: 30_000 },
    );
    expect(result.code).toBe(0);
    const reply = JSON.parse(result.stdout) as ResultPayload;
    expect(reply.ok).toBe(true);
    expect(reply.output).toBe("peer got direct from me");
  });

  it("cfn agent direct to an agent whose command fails: the error and exit code on stderr, exit 1; a killed command exits 3", async () => {
    const { global } = setup();
    startCliUntilCleanup(cleanups, [
      ...global,
      "agent",
      "run",
      "--id",
      "ar2",
      "--",
      "sh",
      "-c",
      "echo oops >&2; exit 7",
    ]);
    const failed = await runCli([...global, "agent", "direct", "--to", "ar2", "--wait-ms", "20000", "1"], {
      timeoutMs: 30_000,
    });
    expect(failed.code).toBe(1);
    expect(failed.stdout).toBe("");
    expect(failed.stderr).toBe("cfn: the command of ar2 failed (exit code 7): oops\n");
    const json = await runCli(
      [...global, "agent", "direct", "--to", "ar2", "--wait-ms", "20000", "--json", "1"],
      {
        timeoutMs: 30_000,
      },
    );
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, exitCode: 7, error: "oops" });
    const runArgs = ["agent", "run", "--id", "slow", "--task-timeout-ms", "200", "--", "sh", "-c", "sleep 5"];
    startCliUntilCleanup(cleanups, [...global, ...runArgs]);
    const killed = await runCli([...global, "agent", "direct", "--to", "slow", "--wait-ms", "20000", "1"], {
      timeoutMs: 30_000,
    });
    expect(killed.code).toBe(3);
    expect(killed.stderr).toMatch(
      /^cfn: the command of slow failed \(SIGKILL\): command ran longer than 200 ms/,
    );
  });

  it("--drain-timeout-ms: after SIGTERM the running task finishes, the drain stops at its deadline, the rest is handed back", async () => {
    const { bus, global } = setup();
    const agentArgs = ["agent", "run", "--id", "dr3", "--drain-timeout-ms", "300", "--", "sh", "-c"];
    const child = startCliUntilCleanup(cleanups, [...global, ...agentArgs, "sleep 1; cat"]);
    for (let i = 0; i < 6; i++) task(bus, "dr3", `t${i}`, i);
    await waitFor(() => (bus.agentStatus("dr3")?.inboxDepth ?? 6) < 6, 15_000, "the first task to start");
    child.kill("SIGTERM");
    const startedAt = Date.now();
    const { code } = await exited(child);
    expect(code).toBe(0);
    // The running task (≤ 1 s) and one queued task started before the deadline (1 s): not all 5.
    expect(Date.now() - startedAt).toBeLessThan(4000);
    const replies = await receiveAll(bus, "tester", 2, 2000);
    expect(replies).toHaveLength(2);
    // The other four are back in the inbox, not lost and not counted as deliveries.
    expect(bus.agentStatus("dr3")).toMatchObject({ inboxDepth: 4, claimed: 0 });
  });

  it("cfn agent direct to nobody: CFN_ERR_TIMEOUT on stderr, and no mailbox left behind", async () => {
    const { bus, global } = setup();
    const direct = [...global, "agent", "direct", "--to", "nobody", "--wait-ms", "500"];
    const text = await runCli([...direct, "1"]);
    expect(text.code).toBe(3);
    expect(text.stdout).toBe("");
    expect(text.stderr).toMatch(
      /^cfn: CFN_ERR_TIMEOUT no reply from nobody within 500 ms: there is no mailbox nobody/,
    );
    const json = await runCli([...direct, "--json", "1"]);
    expect(json.code).toBe(3);
    expect(json.stdout).toBe("");
    expect(JSON.parse(json.stderr).error).toMatchObject({
      code: "CFN_ERR_TIMEOUT",
      to: "nobody",
      withdrawn: true,
    });
    expect(bus.listAgents()).toEqual([]); // neither nobody's mailbox nor a cli-<pid> reply mailbox
  });

  it("cfn agent direct interrupted by SIGINT withdraws its message and leaves no reply mailbox", async () => {
    const { bus, global } = setup();
    bus.openMailbox("idle", { watch: false }).close(); // a known peer that never answers
    const child = startCli([...global, "agent", "direct", "--to", "idle", "--wait-ms", "60000", "1"]);
    const output = collect(child);
    const replyMailbox = `cli-${child.pid}`;
    await waitFor(
      () => bus.listAgents().includes(replyMailbox) && (bus.agentStatus("idle")?.inboxDepth ?? 0) === 1,
      20_000,
      "the direct message and its reply mailbox",
    );
    child.kill("SIGINT");
    expect(await exited(child)).toEqual({ code: 130, signal: null });
    expect(output.stderr()).toBe("cfn: direct message interrupted (SIGINT): the message was withdrawn\n");
    expect(bus.listAgents()).toEqual(["idle"]);
    expect(bus.agentStatus("idle")?.inboxDepth).toBe(0);
  });

  it("refuses to run without a command", async () => {
    const { global } = setup();
    const result = await runCli([...global, "agent", "run", "--id", "x"]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/give the command after --/);
  });
});
