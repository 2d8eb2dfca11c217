// commandExecutor runs each task's command in a process group of its own and kills the whole
// group on a timeout, on output overflow, on killAll (agent shutdown) and when the command exits:
// nothing a task started outlives it, holds its stdout pipe open, or keeps burning CPU.

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { commandExecutor, type TaskContext } from "../../src/coordination/agent-runner.js";
import { isProcessAlive as alive } from "../../src/coordination/liveness.js";
import { removeRoot, tempRoot, waitFor } from "./helpers.js";

const roots: string[] = [];
const leftovers: number[] = [];
afterEach(() => {
  for (const pid of leftovers.splice(0))
    try {
      process.kill(pid, "SIGKILL");
    } catch {}
  for (const root of roots.splice(0)) removeRoot(root);
});

function setup() {
  const root = tempRoot();
  roots.push(root);
  return { root, pidFile: join(root, "pid") };
}

const context: TaskContext = {
  type: "task",
  messageId: "r1.t1.a1",
  from: "tester",
  agent: "a1",
  team: "blue",
  priority: "normal",
  taskId: "t1",
  roundId: "r1",
  attempt: 1,
  input: null,
};

async function pidIn(file: string): Promise<number> {
  await waitFor(() => existsSync(file) && readFileSync(file, "utf8").endsWith("\n"), 10_000, file);
  const pid = Number(readFileSync(file, "utf8").trim());
  leftovers.push(pid);
  return pid;
}

describe("commandExecutor process groups", () => {
  it("kills the command's children on a task timeout", async () => {
    const { root, pidFile } = setup();
    const execute = commandExecutor(["sh", "-c", `sleep 1000 & echo $! > ${pidFile}; wait`], {
      busDir: root,
      taskTimeoutMs: 300,
    });
    const result = await execute(context);
    expect(result.ok).toBe(false);
    expect(result.error).toMatch(/longer than 300 ms/);
    const sleeper = await pidIn(pidFile);
    await waitFor(() => !alive(sleeper), 5000, "the orphaned sleep to die");
    await waitFor(() => execute.runningGroups === 0, 5000, "the group to be released");
  });

  it("kills a command whose stdout overflows, and fails the task at once", async () => {
    const { root, pidFile } = setup();
    const execute = commandExecutor(["sh", "-c", `echo $$ > ${pidFile}; exec yes`], { busDir: root });
    const result = await execute(context);
    expect(result.ok).toBe(false);
    expect(result.error).toMatch(/stdout exceeded/);
    const yes = await pidIn(pidFile);
    await waitFor(() => !alive(yes), 5000, "yes to die");
  });

  it("finishes a task when the command exits even if it left a child holding stdout", async () => {
    const { root, pidFile } = setup();
    const execute = commandExecutor(["sh", "-c", `sleep 1000 & echo $! > ${pidFile}; echo done`], {
      busDir: root,
    });
    const result = await execute(context);
    expect(result).toMatchObject({ ok: true, output: "done", exitCode: 0 });
    const sleeper = await pidIn(pidFile);
    await waitFor(() => !alive(sleeper), 5000, "the leftover sleep to die");
  });

  it("killAll (agent shutdown) kills every running command's group and fails its task", async () => {
    const { root, pidFile } = setup();
    const execute = commandExecutor(["sh", "-c", `sleep 1000 & echo $! > ${pidFile}; wait`], {
      busDir: root,
    });
    const running = execute(context);
    const sleeper = await pidIn(pidFile);
    expect(execute.runningGroups).toBe(1);
    expect(execute.killAll()).toBe(1);
    const result = await running;
    expect(result.ok).toBe(false);
    expect(result.error).toMatch(/shutting down/);
    await waitFor(() => !alive(sleeper), 5000, "the sleep to die");
  });
});
