// What every command needs, built once from the global options: the validated configuration, a
// logger and a metrics registry. Flags are the highest configuration layer.

import type { Command } from "commander";
import { describeUnknownVariable, unknownVariables } from "../config/env-check.js";
import { loadConfig } from "../config/load.js";
import type { Config, DeepPartial } from "../config/schema.js";
import { createLogger, type Logger, type LogLevel } from "../obs/logger.js";
import { Metrics } from "../obs/metrics.js";

export interface GlobalOptions {
  config?: string;
  logLevel?: string;
  bus?: string;
  busRoot?: string;
  profile?: string;
}

export interface CommandContext {
  config: Config;
  logger: Logger;
  metrics: Metrics;
}

export interface ContextOptions {
  /**
   * Warn on stderr about CFN_* variables nothing reads (default true); `cfn config validate`
   * reports them as problems of its own instead.
   */
  warnUnknownVariables?: boolean;
}

export function buildContext(
  program: Command,
  overrides: DeepPartial<Config> = {},
  contextOptions: ContextOptions = {},
): CommandContext {
  const options = program.opts<GlobalOptions>();
  const flagLayer: Record<string, unknown> = { ...overrides };
  const bus: Record<string, unknown> = { ...(overrides.bus ?? {}) };
  if (options.bus !== undefined) bus.name = options.bus;
  if (options.busRoot !== undefined) bus.root = options.busRoot;
  if (Object.keys(bus).length > 0) flagLayer.bus = bus;
  if (options.logLevel !== undefined) flagLayer.log = { level: options.logLevel };
  if (options.profile !== undefined) flagLayer.profile = options.profile;
  const config = loadConfig({ file: options.config, overrides: flagLayer as DeepPartial<Config> });
  const logger = createLogger("cfn", { level: config.log.level });
  // A misspelt CFN_* variable would do nothing, silently; refusing it would break scripts.
  if (contextOptions.warnUnknownVariables !== false && config.log.level !== "silent") {
    for (const variable of unknownVariables(process.env))
      process.stderr.write(`cfn: warning: ${describeUnknownVariable(variable)}\n`);
  }
  // A JSONL write that fails later is reported through this logger, at the configured level.
  const metrics = new Metrics({
    jsonlPath: config.metrics.jsonlPath || undefined,
    logger: logger.child("metrics"),
  });
  return { config, logger, metrics };
}

/**
 * `logger`, with the lines whose message `demote` accepts logged at debug instead: a read-only
 * command's housekeeping (spare files swept) is no news, and a refusal the command reports as its
 * own error line needs no second, JSON line.
 */
export function demotedLogger(logger: Logger, demote: (message: string, level: LogLevel) => boolean): Logger {
  const at = (level: Exclude<LogLevel, "silent">) => (message: string, fields?: Record<string, unknown>) =>
    (demote(message, level) ? logger.debug : logger[level])(message, fields);
  return {
    debug: logger.debug,
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    child: (namespace) => demotedLogger(logger.child(namespace), demote),
  };
}

/** For read-only commands: every info line is housekeeping, logged at debug. */
export function readOnlyLogger(logger: Logger): Logger {
  return demotedLogger(logger, (_message, level) => level === "info");
}
