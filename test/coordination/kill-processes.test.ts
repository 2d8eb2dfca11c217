// killProcesses (src/coordination/spawner.ts), the end of `cfn swarm stop` and of a demo: an agent
// that does not stop on SIGTERM in time is SIGKILLed, and the command it runs — in a process group
// of its own, so the agent can end its whole tree — goes with it instead of running on, reparented.

import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { childGroupsOf, killProcesses } from "../../src/coordination/spawner.js";
import { waitFor } from "./helpers.js";

/** Gone: no such process, or a zombie nobody has reaped yet. */
function gone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return true;
  }
}

/** An "agent" deaf to SIGTERM running a "command" in a group of its own, as agents do. */
function agentWithCommand(): Promise<{ agent: number; command: number }> {
  const script = `
    process.on("SIGTERM", () => {});
    const child = require("node:child_process").spawn("sh", ["-c", "sleep 60; sleep 60"], { detached: true, stdio: "ignore" });
    console.log(child.pid);
    setInterval(() => {}, 1000);
  `;
  const agent = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    agent.stdout.once("data", (chunk) =>
      resolve({ agent: agent.pid as number, command: Number(String(chunk).trim()) }),
    );
    agent.once("error", reject);
  });
}

describe("killProcesses", () => {
  it("SIGKILLs an agent that ignores SIGTERM together with the process group of the command it runs", async () => {
    const { agent, command } = await agentWithCommand();
    expect(childGroupsOf([agent])).toEqual(new Map([[agent, [command]]]));
    const result = await killProcesses([{ pid: agent }], 300);
    expect(result).toEqual({ stopped: 0, killed: 1 });
    await waitFor(() => gone(agent) && gone(command), 5_000, "agent and command gone");
  });
});
