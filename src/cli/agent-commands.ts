// `cfn agent run|host|direct`: one agent wrapping a command, many pooled agents in one process, and
// a direct agent-to-agent message (docs/COORDINATION.md, "Agent contract").

import { createInterface } from "node:readline";
import type { Command } from "commander";
import { Bus } from "../bus/index.js";
import {
  AgentRunner,
  type CommandExecutor,
  commandExecutor,
  echoExecutor,
  type TaskExecutor,
} from "../coordination/agent-runner.js";
import { sendDirectMessage } from "../coordination/direct.js";
import { PooledHost } from "../coordination/pooled-host.js";
import type { ResultPayload } from "../coordination/protocol.js";
import { CfnError } from "../errors.js";
import { startTracing } from "../obs/tracing.js";
import { buildContext } from "./context.js";
import { EXIT, printJson, printLine } from "./output.js";
import { EXIT_ON_SIGNAL, interruptOnSignals } from "./signals.js";

interface RunOptions {
  id: string;
  team: string;
  readyTo?: string;
  concurrency: string;
  taskTimeoutMs?: string;
  drainTimeoutMs: string;
  echo?: boolean;
}

function positiveInt(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const number = Number(value);
  if (!Number.isInteger(number) || number < 0)
    throw new CfnError("CFN_ERR_CONFIG_INVALID", `${flag} must be a non-negative integer (got ${value})`);
  return number;
}

function executorOf(
  command: string[],
  echo: boolean | undefined,
  busDir: string,
  taskTimeoutMs: number,
): TaskExecutor | CommandExecutor {
  if (echo) return echoExecutor;
  if (command.length === 0)
    throw new CfnError(
      "CFN_ERR_CONFIG_INVALID",
      "give the command after -- (e.g. cfn agent run --id a1 -- ./my-agent.sh), or --echo",
    );
  return commandExecutor(command, { busDir, taskTimeoutMs });
}

/** Kills what is left of the commands' process groups (a no-op for the echo executor). */
function killCommands(executor: TaskExecutor | CommandExecutor): void {
  if ("killAll" in executor) executor.killAll();
}

/**
 * The first SIGTERM/SIGINT asks for a graceful stop (running tasks finish, the queue drains); a
 * second one also kills the commands still running (their tasks fail and are answered).
 */
function stopOnSignals(requestStop: () => void, executor: TaskExecutor | CommandExecutor): { off(): void } {
  let signals = 0;
  const onSignal = () => {
    signals++;
    if (signals === 1) requestStop();
    else killCommands(executor);
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  return {
    off() {
      process.off("SIGTERM", onSignal);
      process.off("SIGINT", onSignal);
    },
  };
}

export function registerAgentCommands(program: Command): void {
  const agent = program
    .command("agent")
    .description("run agents on the bus: wrap a CLI, host pooled agents, send direct messages");

  agent
    .command("run")
    .description(
      "wrap a command as an agent: each task reaches it as JSON on stdin (and CFN_TASK_ID, CFN_ROUND_ID, … in its environment), its stdout is the result, exit 0 is success",
    )
    .requiredOption("--id <agent>", "agent id ([A-Za-z0-9._-], the mailbox name)")
    .option("--team <name>", "team name, passed to the command as CFN_TEAM", "")
    .option("--ready-to <agent>", "send cfn.agent.ready to this mailbox once listening")
    .option("--concurrency <n>", "tasks run at once", "1")
    .option("--task-timeout-ms <ms>", "kill the command after this long (0: no limit)", "0")
    .option("--drain-timeout-ms <ms>", "on SIGTERM, longest time spent on queued tasks", "10000")
    .option("--echo", "no command: answer each task with its input")
    .argument("[command...]", "the command and its arguments, after --")
    .action(async (command: string[], options: RunOptions) => {
      const { config, logger, metrics } = buildContext(program);
      const tracing = await startTracing({
        config: config.tracing,
        defaultServiceName: "cfn-agent",
        instanceId: options.id,
        logger,
        metrics,
      });
      const bus = new Bus({ config: config.bus, logger, metrics });
      const executor = executorOf(
        command,
        options.echo,
        bus.dir,
        positiveInt(options.taskTimeoutMs, "--task-timeout-ms", 0),
      );
      const runner = new AgentRunner({
        bus,
        id: options.id,
        team: options.team,
        executor,
        readyTo: options.readyTo,
        concurrency: Math.max(1, positiveInt(options.concurrency, "--concurrency", 1)),
        drainTimeoutMs: positiveInt(options.drainTimeoutMs, "--drain-timeout-ms", 10_000),
        runtimeName: options.echo ? "node" : "command",
        logger,
        metrics,
      });
      const stop = stopOnSignals(() => runner.requestStop(), executor);
      process.on("SIGUSR2", () => {}); // doorbell of lean agents: harmless here (fs.watch wakes us)
      try {
        await runner.run();
      } finally {
        killCommands(executor); // nothing of a task outlives the agent
        await tracing.shutdown(); // the last tasks' spans leave before the process does
      }
      stop.off();
      process.exitCode = EXIT.ok;
    });

  agent
    .command("host")
    .description("run many logical agents in this process, each with its own mailbox (pooled agents)")
    .option("--ids <list>", "comma-separated agent ids (team: id@team)")
    .option("--ids-stdin", 'read "<id> <team>" lines from stdin')
    .option("--ready-to <agent>", "send cfn.agent.ready per agent to this mailbox")
    .option("--task-timeout-ms <ms>", "kill the command after this long (0: no limit)", "0")
    .option("--echo", "no command: answer each task with its input")
    .argument("[command...]", "the command each agent runs per task, after --")
    .action(
      async (
        command: string[],
        options: {
          ids?: string;
          idsStdin?: boolean;
          readyTo?: string;
          taskTimeoutMs: string;
          echo?: boolean;
        },
      ) => {
        const { config, logger, metrics } = buildContext(program);
        const agents: Array<{ id: string; team: string }> = [];
        for (const entry of (options.ids ?? "").split(",").filter(Boolean)) {
          const [id, team] = entry.split("@");
          agents.push({ id, team: team ?? "" });
        }
        if (options.idsStdin) {
          for await (const line of createInterface({ input: process.stdin })) {
            const [id, team] = line.trim().split(/\s+/);
            if (id) agents.push({ id, team: team ?? "" });
          }
        }
        if (agents.length === 0)
          throw new CfnError("CFN_ERR_CONFIG_INVALID", "no agents: give --ids or --ids-stdin");
        const bus = new Bus({
          config: { ...config.bus, rescanIntervalMs: Math.max(config.bus.rescanIntervalMs, 1000) },
          logger,
          metrics,
        });
        const executor = executorOf(
          command,
          options.echo,
          bus.dir,
          positiveInt(options.taskTimeoutMs, "--task-timeout-ms", 0),
        );
        const host = new PooledHost({
          bus,
          agents,
          executor,
          readyTo: options.readyTo,
          logger,
          metrics,
        });
        process.on("SIGUSR2", () => {}); // a doorbell meant for lean agents must not kill the host
        let stop: { off(): void } | undefined;
        await new Promise<void>((resolve) => {
          stop = stopOnSignals(resolve, executor);
        });
        try {
          await host.stop();
        } finally {
          killCommands(executor);
          stop?.off();
        }
        process.exitCode = EXIT.ok;
      },
    );

  agent
    .command("direct")
    .description("send a direct message to an agent (bypassing coordinators) and print its reply")
    .requiredOption("--to <agent>", "receiving agent")
    .option("--from <agent>", "sending agent id (default cli-<pid>; must be a mailbox nobody else reads)")
    .option("--wait-ms <ms>", "how long to wait for the reply (0: do not wait)", "5000")
    .option("--priority <p>", "high, normal or low", "normal")
    .option("--json", "print the reply as JSON")
    .argument("[payload]", "JSON payload (else a string)", "null")
    .action(
      async (
        payloadText: string,
        options: { to: string; from?: string; waitMs: string; priority: string; json?: boolean },
      ) => {
        const { config, logger, metrics } = buildContext(program);
        const bus = new Bus({ config: config.bus, logger, metrics });
        let payload: unknown;
        try {
          payload = JSON.parse(payloadText);
        } catch {
          payload = payloadText;
        }
        if (!["high", "normal", "low"].includes(options.priority))
          throw new CfnError(
            "CFN_ERR_CONFIG_INVALID",
            `--priority must be high, normal or low (got ${options.priority})`,
          );
        const priority = options.priority as "high" | "normal" | "low";
        const waitMs = positiveInt(options.waitMs, "--wait-ms", 5000);
        // Ctrl-C or SIGTERM while waiting: withdraw the message if nobody took it and remove the
        // reply mailbox, as a timeout does, then exit 130 / 143.
        const interrupt = interruptOnSignals();
        let outcome: Awaited<ReturnType<typeof sendDirectMessage>>;
        try {
          outcome = await sendDirectMessage(bus, options.from ?? `cli-${process.pid}`, options.to, payload, {
            waitMs,
            priority,
            signal: interrupt.signal,
          });
        } finally {
          interrupt.off();
        }
        const signal = interrupt.received;
        if (signal !== undefined && outcome.reply === undefined) {
          const fate = outcome.withdrawn ? "the message was withdrawn" : "the agent took the message";
          process.stderr.write(`cfn: direct message interrupted (${signal}): ${fate}\n`);
          process.exitCode = EXIT_ON_SIGNAL[signal];
          return;
        }
        const reply = outcome.reply;
        if (reply === undefined && waitMs > 0) {
          const fate = outcome.withdrawn
            ? outcome.peerKnown
              ? "nobody claimed it, so it was withdrawn (is the agent running?)"
              : `there is no mailbox ${options.to} on bus ${bus.dir}, so it was withdrawn`
            : "the agent took it but has not answered";
          throw new CfnError("CFN_ERR_TIMEOUT", `no reply from ${options.to} within ${waitMs} ms: ${fate}`, {
            to: options.to,
            withdrawn: outcome.withdrawn,
          });
        }
        if (options.json) printJson(reply ?? { sent: true });
        else if (
          reply &&
          (reply.ok || (reply.output !== undefined && reply.output !== null && reply.output !== ""))
        )
          printLine(typeof reply.output === "string" ? reply.output : JSON.stringify(reply.output));
        if (reply && !reply.ok) {
          // A failed command is a failed command: say so on stderr and exit non-zero (3 when the
          // agent killed it for running past its task timeout), not an empty line and status 0.
          if (!options.json) process.stderr.write(`cfn: ${describeDirectFailure(options.to, reply)}\n`);
          process.exitCode = reply.timedOut ? EXIT.timeout : EXIT.failure;
        }
      },
    );
}

/** One line on why an agent's answer to a direct message is ok:false. */
export function describeDirectFailure(agent: string, reply: ResultPayload): string {
  const how =
    reply.exitCode !== undefined && reply.exitCode !== null
      ? ` (exit code ${reply.exitCode})`
      : reply.signal
        ? ` (${reply.signal})`
        : "";
  return `the command of ${agent} failed${how}: ${reply.error ?? "no error text"}`;
}
