// `cfn config validate | show | docs`.

import type { Command } from "commander";
import { settingsTable } from "../config/doc.js";
import { buildContext } from "./context.js";
import { printJson, printLine } from "./output.js";

export function registerConfigCommands(program: Command): void {
  const config = program.command("config").description("check and show the configuration");

  config
    .command("validate")
    .description("validate the configuration (defaults < profile < file < CFN_* < flags) and exit 0 if valid")
    .option("--json", "print the result as JSON")
    .action((options: { json?: boolean }) => {
      const context = buildContext(program);
      if (options.json) printJson({ valid: true, profile: context.config.profile });
      else printLine(`configuration valid (profile ${context.config.profile})`);
    });

  config
    .command("show")
    .description("print the resolved configuration as JSON")
    .action(() => {
      printJson(buildContext(program).config);
    });

  config
    .command("docs")
    .description("print the table of every setting (the source of docs/CONFIGURATION.md)")
    .action(() => {
      printLine(settingsTable());
    });
}
