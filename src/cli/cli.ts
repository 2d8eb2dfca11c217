// `cfn`'s commands: each command group lives in its own file and registers here; src/cli/main.ts
// (the executable) checks the process's descriptors first, then loads this module.

import { Command, CommanderError } from "commander";
import { registerAgentCommands } from "./agent-commands.js";
import { explainAuthError } from "./api-flags.js";
import { registerBusCommands } from "./bus-commands.js";
import { registerConfigCommands } from "./config-commands.js";
import { registerDemoCommand } from "./demo-command.js";
import { registerNodeCommands } from "./node-commands.js";
import { EXIT, reportError } from "./output.js";
import { registerSecurityCommands } from "./security-commands.js";
import { registerSwarmCommands } from "./swarm-commands.js";

export function buildProgram(argv: string[] = []): Command {
  const program = new Command();
  if (argv.includes("--json")) {
    // A script asked for JSON: a usage error is one JSON line too, without the help text.
    program.configureOutput({
      writeErr: () => {},
      outputError: (text) => {
        const message = text.replace(/^error: /, "").trim();
        process.stderr.write(`${JSON.stringify({ error: { code: "CFN_ERR_USAGE", message } })}\n`);
      },
    });
  }
  program
    .name("cfn")
    .description("Coordinate swarms of CLI agents over a tmpfs message bus, across one host or many")
    .version("0.1.0")
    .option("-c, --config <file>", "configuration file (YAML or JSON); also CFN_CONFIG")
    .option("--profile <name>", "configuration profile: dev, staging, prod")
    .option("--bus <name>", "bus name (bus.name)")
    .option("--bus-root <dir>", "root directory of buses (bus.root)")
    .option("--log-level <level>", "debug, info, warn, error, silent")
    .showHelpAfterError()
    .exitOverride();
  registerConfigCommands(program);
  registerDemoCommand(program);
  registerAgentCommands(program);
  registerSwarmCommands(program);
  registerBusCommands(program);
  registerNodeCommands(program);
  registerSecurityCommands(program);
  return program;
}

/**
 * A reader that goes away (`cfn cluster status | head`) fails the next write with EPIPE, which
 * Node raises as an 'error' event and, unhandled, a crash with a stack trace. The command ends as
 * it would have (the rest of its output has nowhere to go); a daemon keeps running.
 */
function ignoreClosedOutput(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (error: NodeJS.ErrnoException) => {
      if (error.code !== "EPIPE") throw error;
    });
  }
}

export async function main(argv: string[]): Promise<number> {
  ignoreClosedOutput();
  const program = buildProgram(argv);
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === "number" ? process.exitCode : EXIT.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version exit 0; usage errors were already printed by commander.
      return error.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    return reportError(explainAuthError(error, argv), argv.includes("--json"));
  }
}
