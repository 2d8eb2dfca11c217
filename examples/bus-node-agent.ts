// A small Node agent on the cfn bus, the TypeScript counterpart of bash-agent.sh. The bus tests
// run it (compiled, from dist/examples/) as real child processes; it is also a readable example.
//
//   node dist/examples/bus-node-agent.js send --root R --name N --from F --to T --count C
//        [--batch K] [--priority high|normal|low] [--payload-bytes B] [--depth-max D] [--wait-ms W]
//        → prints {"sent":…,"refused":…,"ids":[…]}
//   node dist/examples/bus-node-agent.js recv --root R --name N --agent A --expect C [--timeout-ms T]
//        [--max M] [--idle-ms I] → prints one JSON line per message {id,from,seq,type,priority,payload}, then
//        {"done":n}; a "stop" message ends it
//   node dist/examples/bus-node-agent.js claim-and-crash --root R --name N --agent A --count C
//        → claims C messages, prints {"claimed":C}, then dies by SIGKILL without acking
//   node dist/examples/bus-node-agent.js echo --root R --name N --agent A [--idle-ms I]
//        → replies to every "task" with a "result" carrying the task payload; stops on "stop"

import { Bus } from "../src/bus/index.js";
import { isCfnError } from "../src/errors.js";

function parseArgs(argv: string[]): { command: string; options: Map<string, string> } {
  const [command = "", ...rest] = argv;
  const options = new Map<string, string>();
  for (let index = 0; index < rest.length; index += 2)
    options.set(rest[index].replace(/^--/, ""), rest[index + 1] ?? "");
  return { command, options };
}

function numberOption(options: Map<string, string>, name: string, fallback: number): number {
  const value = options.get(name);
  return value === undefined ? fallback : Number(value);
}

function required(options: Map<string, string>, name: string): string {
  const value = options.get(name);
  if (!value) throw new Error(`--${name} is required`);
  return value;
}

function write(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

async function main(): Promise<void> {
  const { command, options } = parseArgs(process.argv.slice(2));
  const bus = new Bus({
    config: {
      root: required(options, "root"),
      name: options.get("name") ?? "default",
      inboxDepthMax: numberOption(options, "depth-max", 1000),
      visibilityTimeoutMs: numberOption(options, "visibility-ms", 30_000),
      deliveriesMax: numberOption(options, "deliveries-max", 5),
      rescanIntervalMs: numberOption(options, "rescan-ms", 250),
    },
  });
  switch (command) {
    case "send": {
      const from = required(options, "from");
      const to = required(options, "to");
      const count = numberOption(options, "count", 1);
      const batch = numberOption(options, "batch", 1);
      const waitMs = numberOption(options, "wait-ms", 0);
      const priority = (options.get("priority") ?? "normal") as "high" | "normal" | "low";
      const filler = "x".repeat(numberOption(options, "payload-bytes", 0));
      const ids: string[] = [];
      let refused = 0;
      for (let index = 0; index < count; ) {
        const size = Math.min(batch, count - index);
        const messages = Array.from({ length: size }, (_, k) => ({
          type: "task",
          priority,
          payload: { n: index + k, filler },
        }));
        try {
          const result =
            size === 1
              ? await bus.send(from, to, messages[0], { waitMs })
              : await bus.sendBatch(from, to, messages, { waitMs });
          ids.push(...result.ids);
        } catch (error) {
          if (!isCfnError(error, "CFN_ERR_INBOX_FULL")) throw error;
          refused += size;
        }
        index += size;
      }
      write({ sent: ids.length, refused, ids });
      return;
    }
    case "recv": {
      // Ends after --expect messages, after --idle-ms without any, or on a "stop" message (the
      // rest of its batch is handed back for other consumers).
      const mailbox = bus.openMailbox(required(options, "agent"));
      const expect = numberOption(options, "expect", Number.POSITIVE_INFINITY);
      const idleMs = numberOption(options, "idle-ms", 10_000);
      const max = numberOption(options, "max", 16);
      let received = 0;
      let stop = false;
      while (received < expect && !stop) {
        const deliveries = await mailbox.receive({ timeoutMs: idleMs, max });
        if (deliveries.length === 0) break;
        for (const delivery of deliveries) {
          const { message } = delivery;
          mailbox.ack(delivery);
          if (message.type === "stop") {
            stop = true;
            break;
          }
          write({
            id: message.id,
            from: message.from,
            seq: message.seq,
            type: message.type,
            priority: message.priority,
            headers: message.headers,
            payload: message.payload,
          });
          received += 1;
        }
      }
      mailbox.close();
      write({ done: received });
      return;
    }
    case "claim-and-crash": {
      const mailbox = bus.openMailbox(required(options, "agent"));
      const deliveries = await mailbox.receive({ timeoutMs: 10_000, max: numberOption(options, "count", 1) });
      write({ claimed: deliveries.length, ids: deliveries.map((d) => d.message.id) });
      process.stdout.write("", () => process.kill(process.pid, "SIGKILL"));
      await new Promise(() => {});
      return;
    }
    case "echo": {
      const agent = required(options, "agent");
      const mailbox = bus.openMailbox(agent);
      const idleMs = numberOption(options, "idle-ms", 10_000);
      for (;;) {
        const deliveries = await mailbox.receive({ timeoutMs: idleMs, max: 16 });
        if (deliveries.length === 0) break;
        let stop = false;
        for (const delivery of deliveries) {
          const { message } = delivery;
          if (message.type === "stop") stop = true;
          else if (message.type === "task") {
            await bus.send(
              agent,
              message.from,
              { type: "result", headers: message.headers, payload: { agent, task: message.payload } },
              { waitMs: 5000 },
            );
          }
          mailbox.ack(delivery);
        }
        if (stop) break;
      }
      mailbox.close();
      return;
    }
    default:
      throw new Error(`unknown command ${JSON.stringify(command)}: send, recv, claim-and-crash or echo`);
  }
}

main().then(
  // Exit only once stdout is flushed: a pipe write that would block is queued, and process.exit
  // would drop it (the parent then reads a truncated list).
  () => process.stdout.write("", () => process.exit(0)),
  (error: Error) => {
    process.stderr.write(`${error.stack ?? error}\n`);
    process.exit(1);
  },
);
