// `cfn config validate | show | docs`.

import type { Command } from "commander";
import { settingsTable } from "../config/doc.js";
import { describeUnknownVariable, unknownVariables } from "../config/env-check.js";
import { SINGLE_NODE_TOKEN } from "../config/node-schema.js";
import { buildContext } from "./context.js";
import { EXIT, printJson, printLine } from "./output.js";

export function registerConfigCommands(program: Command): void {
  const config = program.command("config").description("check and show the configuration");

  config
    .command("validate")
    .description("validate the configuration (defaults < profile < file < CFN_* < flags) and exit 0 if valid")
    .option("--json", "print the result as JSON")
    .action((options: { json?: boolean }) => {
      const context = buildContext(program, {}, { warnUnknownVariables: false });
      // The settings are valid; a CFN_* variable nothing reads is still a problem to report here.
      const unknown = unknownVariables(process.env);
      if (unknown.length > 0) {
        process.exitCode = EXIT.usage;
        const problems = unknown.map(describeUnknownVariable);
        if (options.json) printJson({ valid: false, profile: context.config.profile, problems });
        else for (const problem of problems) process.stderr.write(`cfn: CFN_ERR_CONFIG_INVALID ${problem}\n`);
        return;
      }
      if (options.json) printJson({ valid: true, profile: context.config.profile });
      else printLine(`configuration valid (profile ${context.config.profile})`);
    });

  config
    .command("show")
    .description("print the resolved configuration as JSON (secrets redacted)")
    .action(() => {
      const { config: resolved } = buildContext(program);
      // As `cfn node start` resolves it: CFN_CLUSTER_TOKEN over node.clusterToken. Never printed.
      const token = process.env.CFN_CLUSTER_TOKEN ?? resolved.node.clusterToken;
      const shown =
        token === SINGLE_NODE_TOKEN ? `${SINGLE_NODE_TOKEN} (the single-node default)` : "(redacted)";
      printJson({ ...resolved, node: { ...resolved.node, clusterToken: shown } });
    });

  config
    .command("docs")
    .description("print the table of every setting (the source of docs/CONFIGURATION.md)")
    .action(() => {
      printLine(settingsTable());
    });
}
