// Interop with examples/bash-agent.sh (bash + coreutils; polling here when inotifywait is absent):
// TypeScript → bash tasks and bash → TypeScript results, single and batch files, bad input,
// backpressure and crashed-claim recovery on the bash side.

import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Delivery } from "../../src/bus/index.js";
import { BASH_AGENT, openTestBus, run, start, tempRoot } from "./helpers.js";

let root: string;
let cleanup: () => void;

beforeEach(() => {
  ({ root, cleanup } = tempRoot());
});

afterEach(() => cleanup());

const busDir = () => join(root, "test");

function bashAgent(args: string[]) {
  return start("bash", [BASH_AGENT, ...args]);
}

describe("bash agent ↔ TypeScript", () => {
  it("bash receives tasks from TypeScript (single and batch) and replies; TypeScript receives the results", async () => {
    const bus = openTestBus(root);
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const tasks = [
      {
        type: "task",
        payload: { n: 0, text: 'quotes " and \\ backslash, "payload": inside' },
        headers: { traceparent },
      },
      { type: "task", payload: [1, 2, 3] },
      { type: "task", payload: "héllo ✓" },
    ];
    for (const task of tasks) bus.sendSync("lead", "bashy", task);
    bus.sendBatchSync(
      "lead",
      "bashy",
      [3, 4, 5].map((n) => ({ type: "task", payload: { n } })),
    );
    bus.sendSync("lead", "bashy", { type: "stop", priority: "low" });
    const agent = await bashAgent([
      "run",
      "--bus",
      busDir(),
      "--agent",
      "bashy",
      "--poll-ms",
      "20",
      "--idle-exit-ms",
      "20000",
    ]);
    expect(agent.code, agent.stderr).toBe(0);
    expect(JSON.parse(agent.stdout.trim())).toEqual({ handled: 7 });

    const mailbox = bus.openMailbox("lead");
    const results: Delivery[] = [];
    while (results.length < 6) {
      const got = await mailbox.receive({ timeoutMs: 2000, max: 10 });
      if (got.length === 0) break;
      results.push(...got);
    }
    mailbox.ack(results);
    mailbox.close();
    expect(results.map((d) => d.message.payload)).toEqual([
      { agent: "bashy", task: tasks[0].payload },
      { agent: "bashy", task: tasks[1].payload },
      { agent: "bashy", task: tasks[2].payload },
      { agent: "bashy", task: { n: 3 } },
      { agent: "bashy", task: { n: 4 } },
      { agent: "bashy", task: { n: 5 } },
    ]);
    expect(results.every((d) => d.message.from === "bashy" && d.message.type === "result")).toBe(true);
    expect(results[0].message.headers).toEqual({ traceparent });
    expect(results.map((d) => d.message.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(bus.agentStatus("bashy")).toMatchObject({ inboxDepth: 0, claimed: 0, deadLetters: 0 });
  });

  it("a waiting TypeScript receiver gets a message sent by the bash script", async () => {
    const bus = openTestBus(root);
    const mailbox = bus.openMailbox("ts-agent");
    const pending = mailbox.receive({ timeoutMs: 20_000 });
    const sent = await run("bash", [
      BASH_AGENT,
      "send",
      "--bus",
      busDir(),
      "--from",
      "bash-sender",
      "--to",
      "ts-agent",
      "--type",
      "note",
      "--priority",
      "high",
      "--payload",
      '{"hello":"world","list":[1,2]}',
      "--headers",
      '{"traceparent":"00-x-y-01"}',
    ]);
    expect(sent.code, sent.stderr).toBe(0);
    const [delivery] = await pending;
    mailbox.ack(delivery);
    mailbox.close();
    expect(delivery.message).toMatchObject({
      from: "bash-sender",
      to: "ts-agent",
      type: "note",
      priority: "high",
      payload: { hello: "world", list: [1, 2] },
      headers: { traceparent: "00-x-y-01" },
    });
  });

  it("bash computes the same shard and bus.conf as TypeScript", async () => {
    const sent = await run("bash", [
      BASH_AGENT,
      "send",
      "--bus",
      busDir(),
      "--from",
      "a",
      "--to",
      "some.agent-42",
    ]);
    expect(sent.code, sent.stderr).toBe(0);
    const bus = openTestBus(root, { shards: 16 });
    expect(readFileSync(join(busDir(), "bus.conf"), "utf8")).toBe("version=1\nshards=16\n");
    expect(bus.agentStatus("some.agent-42")?.inboxDepth).toBe(1);
    const shardDirs = readdirSync(busDir()).filter((name) => /^[0-9]+$/.test(name));
    expect(shardDirs).toEqual([String(bus.layout.agent("some.agent-42").shard)]);
  });

  it("bash send respects inboxDepthMax with exit status 75", async () => {
    const bus = openTestBus(root, { inboxDepthMax: 2 });
    bus.sendSync("a", "w", { type: "t" });
    const ok = await run("bash", [
      BASH_AGENT,
      "send",
      "--bus",
      busDir(),
      "--from",
      "b",
      "--to",
      "w",
      "--depth-max",
      "2",
    ]);
    expect(ok.code).toBe(0);
    const full = await run("bash", [
      BASH_AGENT,
      "send",
      "--bus",
      busDir(),
      "--from",
      "b",
      "--to",
      "w",
      "--depth-max",
      "2",
    ]);
    expect(full.code).toBe(75);
    expect(full.stderr).toContain("CFN_ERR_INBOX_FULL");
    expect(bus.inboxDepth("w")).toBe(2);
  });

  it("bash refuses path traversal in agent ids", async () => {
    const result = await run("bash", [
      BASH_AGENT,
      "send",
      "--bus",
      busDir(),
      "--from",
      "a",
      "--to",
      "../../etc",
    ]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("invalid agent id");
  });

  it("the bash agent dead-letters bad files and keeps serving", async () => {
    const bus = openTestBus(root);
    const inbox = bus.layout.agent("bashy").inbox;
    bus.sendSync("lead", "bashy", { type: "task", payload: 1 });
    // Past its cfn-expires-at: dead-lettered as expired, not handled (PROTOCOL.md section 6).
    bus.sendSync("lead", "bashy", {
      type: "task",
      payload: 2,
      headers: { "cfn-expires-at": String(Date.now() - 1) },
    });
    bus.sendSync("lead", "bashy", {
      type: "task",
      payload: 3,
      headers: { "cfn-expires-at": String(Date.now() + 600_000) },
    });
    writeFileSync(join(inbox, "0_0000000000000001_1_junk-1_0.json"), "garbage\n");
    writeFileSync(join(inbox, ".notes.txt"), "foreign\n"); // sorts before the stop; dot-files count too
    bus.sendSync("lead", "bashy", { type: "stop", priority: "low" });
    const agent = await bashAgent([
      "run",
      "--bus",
      busDir(),
      "--agent",
      "bashy",
      "--poll-ms",
      "20",
      "--idle-exit-ms",
      "20000",
    ]);
    expect(agent.code, agent.stderr).toBe(0);
    expect(JSON.parse(agent.stdout.trim())).toEqual({ handled: 3 });
    const dead = readdirSync(bus.layout.agent("bashy").dead).sort();
    expect(dead).toHaveLength(6);
    expect(dead.filter((name) => name.startsWith(".notes.txt"))).toEqual([".notes.txt", ".notes.txt.reason"]);
    expect(dead.filter((name) => name.startsWith("0_0000000000000001_1_junk-1_1_"))).toHaveLength(2);
    expect(bus.agentStatus("bashy")?.deadLetters).toBe(3);
    const reasons = dead
      .filter((name) => name.endsWith(".reason"))
      .map((name) => JSON.parse(readFileSync(join(bus.layout.agent("bashy").dead, name), "utf8")).cause);
    expect(reasons.sort()).toEqual(["expired", "foreign", "malformed"]);
  });

  it("the bash agent recovers claims of a dead TypeScript consumer", async () => {
    const bus = openTestBus(root);
    bus.sendSync("lead", "bashy", { type: "task", payload: "recovered" });
    const paths = bus.layout.agent("bashy");
    // Simulate a consumer that died holding the claim: a claimed name with a pid that cannot exist.
    const [queued] = readdirSync(paths.inbox);
    const claimedName = queued.replace(/_0\.json$/, `_1_${Date.now() + 600_000}_4194304.json`);
    execFileSync("mv", [join(paths.inbox, queued), join(paths.claimed, claimedName)]);
    bus.sendSync("lead", "bashy", { type: "stop", priority: "low" });
    const agent = await bashAgent([
      "run",
      "--bus",
      busDir(),
      "--agent",
      "bashy",
      "--poll-ms",
      "20",
      "--idle-exit-ms",
      "20000",
    ]);
    expect(agent.code, agent.stderr).toBe(0);
    const mailbox = bus.openMailbox("lead");
    const [result] = await mailbox.receive({ timeoutMs: 2000 });
    mailbox.ack(result);
    mailbox.close();
    expect(result.message.payload).toEqual({ agent: "bashy", task: "recovered" });
  });
});
