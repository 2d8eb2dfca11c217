// `cfn send`, `cfn recv`, `cfn status`: the local bus from a shell.

import { existsSync, readdirSync, readFileSync } from "node:fs";
import type { Command } from "commander";
import { Bus, type Envelope, type OutgoingMessage, type Priority, validateAgentId } from "../bus/index.js";
import { busDirectory } from "../config/load.js";
import type { Config } from "../config/schema.js";
import { CfnError } from "../errors.js";
import { buildContext, demotedLogger, readOnlyLogger } from "./context.js";
import { printJson, printLine, table } from "./output.js";

/** A payload argument is JSON when it parses as JSON, else the plain string. */
export function parsePayload(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function parseHeaders(pairs: string[]): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const pair of pairs) {
    const at = pair.indexOf("=");
    if (at <= 0)
      throw new CfnError("CFN_ERR_INVALID_MESSAGE", `--header takes name=value, got ${JSON.stringify(pair)}`);
    const name = pair.slice(0, at);
    // Set as a property, "__proto__" would vanish (it sets the prototype); the bus refuses it.
    if (name === "__proto__")
      throw new CfnError("CFN_ERR_INVALID_MESSAGE", 'header name "__proto__" is reserved');
    if (Object.hasOwn(headers, name))
      throw new CfnError("CFN_ERR_INVALID_MESSAGE", `--header ${name} given twice`);
    headers[name] = pair.slice(at + 1);
  }
  return headers;
}

function parseNonNegativeInt(flag: string, text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0) {
    throw new CfnError(
      "CFN_ERR_CONFIG_INVALID",
      `${flag}: expected a whole number ≥ 0, got ${JSON.stringify(text)}`,
      {
        field: flag,
      },
    );
  }
  return value;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** "3.2 s ago", "4 min ago", "never". */
export function formatAge(lastSeenMs: number | null, nowMs = Date.now()): string {
  if (lastSeenMs === null) return "never";
  const seconds = Math.max(0, (nowMs - lastSeenMs) / 1000);
  if (seconds < 60) return `${seconds.toFixed(1)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  return `${Math.floor(seconds / 3600)} h ago`;
}

function describeEnvelope(message: Envelope): string {
  const payload = typeof message.payload === "string" ? message.payload : JSON.stringify(message.payload);
  return `${message.from} → ${message.to} [${message.type}, ${message.priority}, seq ${message.seq}] ${payload}`;
}

interface SendFlags {
  from: string;
  type: string;
  priority: string;
  header: string[];
  id?: string;
  waitMs: string;
  json?: boolean;
}

interface RecvFlags {
  wait?: string | boolean;
  max: string;
  json?: boolean;
}

export function registerBusCommands(program: Command): void {
  program
    .command("send")
    .description("send one message to an agent's inbox (payload: JSON or text; '-' reads stdin)")
    .argument("<to>", "receiving agent id")
    .argument("[payload]", "message payload", "null")
    .option("--from <id>", "sending agent id", "cli")
    .option("--type <type>", "message type", "message")
    .option("--priority <level>", "high, normal or low", "normal")
    .option("--header <name=value>", "a header (repeatable), e.g. traceparent=00-…", collect, [])
    .option(
      "--id <id>",
      "message id, so a receiver can drop a retried copy (the bus delivers every send: dedup is downstream)",
    )
    .option(
      "--wait-ms <ms>",
      "wait up to this long for room in a full inbox (0: fail at once; at most bus.sendWaitMsMax)",
      "0",
    )
    .option("--json", "print the result as JSON")
    .action(async (to: string, payloadText: string, flags: SendFlags) => {
      const { config, logger, metrics } = buildContext(program);
      if (!["high", "normal", "low"].includes(flags.priority)) {
        throw new CfnError(
          "CFN_ERR_INVALID_MESSAGE",
          `--priority must be high, normal or low, got ${flags.priority}`,
        );
      }
      const text = payloadText === "-" ? readFileSync(0, "utf8") : payloadText;
      const message: OutgoingMessage = {
        type: flags.type,
        payload: parsePayload(text),
        priority: flags.priority as Priority,
        headers: parseHeaders(flags.header),
        ...(flags.id ? { id: flags.id } : {}),
      };
      const waitMs = parseNonNegativeInt("--wait-ms", flags.waitMs);
      if (waitMs > config.bus.sendWaitMsMax) {
        throw new CfnError(
          "CFN_ERR_CONFIG_INVALID",
          `--wait-ms: at most bus.sendWaitMsMax (${config.bus.sendWaitMsMax} ms; CFN_BUS_SEND_WAIT_MS_MAX raises it), got ${waitMs}`,
          { field: "--wait-ms" },
        );
      }
      // A refused send is this command's error line (CFN_ERR_INBOX_FULL): the bus's own warning
      // about it would say the same twice.
      const busLogger = demotedLogger(logger, (text) => text === "inbox full, send refused");
      const bus = new Bus({ config: config.bus, logger: busLogger, metrics });
      try {
        const result = await bus.send(flags.from, to, message, { waitMs });
        if (flags.json) printJson({ sent: true, to, ids: result.ids, file: result.file });
        else printLine(`sent ${result.ids[0]} to ${to}`);
      } finally {
        bus.close();
      }
    });

  program
    .command("recv")
    .description("receive messages from an agent's inbox and acknowledge them")
    .argument("<agent>", "agent id whose inbox to read")
    .option("--wait [ms]", "block up to this long for a first message (bare --wait: 30000)")
    .option("--max <n>", "most messages to take (≥ 1)", "1")
    .option("--json", "print one JSON envelope per line")
    .action(async (agent: string, flags: RecvFlags) => {
      const { config, logger, metrics } = buildContext(program);
      const timeoutMs =
        typeof flags.wait === "string" ? parseNonNegativeInt("--wait", flags.wait) : flags.wait ? 30_000 : 0;
      const max = parseNonNegativeInt("--max", flags.max);
      if (max === 0)
        throw new CfnError("CFN_ERR_CONFIG_INVALID", "--max: expected a whole number ≥ 1, got 0", {
          field: "--max",
        });
      validateAgentId(agent); // CFN_ERR_INVALID_AGENT_ID, exit 2
      // Without --wait nothing can arrive: a bus or an agent that does not exist is not created
      // (a typo would leave a mailbox behind that status then lists).
      if (timeoutMs === 0) refuseMissingBus(config);
      const bus = new Bus({ config: config.bus, logger, metrics });
      const existed = bus.agentStatus(agent) !== undefined;
      if (!existed && timeoutMs === 0) {
        bus.close();
        throw new CfnError(
          "CFN_ERR_TIMEOUT",
          `no message for ${agent} (no mailbox yet: nothing was sent to it)`,
          {
            agent,
            waitMs: 0,
          },
        );
      }
      // --wait on a new agent makes its mailbox to watch it, and removes it again if nothing came.
      const mailbox = bus.openMailbox(agent, { heartbeat: false, heartbeatOnOpen: false });
      let received = 0;
      try {
        const deliveries = await mailbox.receive({ timeoutMs, max });
        received = deliveries.length;
        for (const delivery of deliveries) {
          if (flags.json) printJson(delivery.message);
          else printLine(describeEnvelope(delivery.message));
        }
        // Printed first, acknowledged after: a crash in between redelivers rather than loses.
        mailbox.ack(deliveries);
        // Nothing came: an error like any other (`cfn: CFN_ERR_TIMEOUT …`, JSON with --json), exit 3.
        if (deliveries.length === 0)
          throw new CfnError(
            "CFN_ERR_TIMEOUT",
            timeoutMs > 0 ? `no message for ${agent} within ${timeoutMs} ms` : `no message for ${agent}`,
            { agent, waitMs: timeoutMs },
          );
      } finally {
        try {
          mailbox.close({ removeDirs: !existed && received === 0 });
        } finally {
          bus.close();
        }
      }
    });

  program
    .command("status")
    .description("inbox depth, claimed, dead letters and last-seen per agent")
    .option("--agent <id>", "only this agent")
    .option("--json", "print as JSON")
    .action((flags: { agent?: string; json?: boolean }) => {
      const { config, logger, metrics } = buildContext(program);
      if (flags.agent !== undefined) validateAgentId(flags.agent); // CFN_ERR_INVALID_AGENT_ID, exit 2
      refuseMissingBus(config);
      const bus = new Bus({ config: config.bus, logger: readOnlyLogger(logger), metrics });
      try {
        const status = bus.status();
        const agents = flags.agent
          ? status.agents.filter((agent) => agent.agentId === flags.agent)
          : status.agents;
        if (flags.agent && agents.length === 0) {
          throw new CfnError(
            "CFN_ERR_UNKNOWN_AGENT",
            `no mailbox for agent ${flags.agent} on bus ${status.dir}`,
            {
              agentId: flags.agent,
            },
          );
        }
        if (flags.json) {
          printJson({ ...status, agents });
          return;
        }
        const totals = agents.reduce(
          (sum, agent) => ({
            inbox: sum.inbox + agent.inboxDepth,
            claimed: sum.claimed + agent.claimed,
            dead: sum.dead + agent.deadLetters,
          }),
          { inbox: 0, claimed: 0, dead: 0 },
        );
        printLine(`bus ${status.dir} (${status.shards} shards): ${agents.length} agents`);
        printLine(`queued ${totals.inbox}, claimed ${totals.claimed}, dead letters ${totals.dead}`);
        if (agents.length > 0) {
          printLine();
          const now = Date.now();
          printLine(
            table([
              ["AGENT", "INBOX", "CLAIMED", "DEAD", "LAST SEEN"],
              ...agents.map((agent) => [
                agent.agentId,
                String(agent.inboxDepth),
                String(agent.claimed),
                String(agent.deadLetters),
                formatAge(agent.lastSeenMs, now),
              ]),
            ]),
          );
        }
      } finally {
        bus.close();
      }
    });
}

/**
 * A read-only command on a bus that does not exist says so, rather than creating it (opening a
 * Bus makes its directory) and reporting it empty: `--bus typo` is a mistake to point out.
 */
export function refuseMissingBus(config: Config): void {
  const dir = busDirectory(config);
  if (existsSync(dir)) return;
  let buses: string[] = [];
  try {
    buses = readdirSync(config.bus.root).filter((name) => existsSync(`${config.bus.root}/${name}/bus.conf`));
  } catch {
    // no root either: no buses to list
  }
  const known = buses.length > 0 ? `buses there: ${buses.sort().join(", ")}` : "no bus there yet";
  throw new CfnError(
    "CFN_ERR_CONFIG_INVALID",
    `no bus ${config.bus.name} under ${config.bus.root} (bus.name, --bus; ${known})`,
    { field: "bus.name" },
  );
}
