// What every command needs, built once from the global options: the validated configuration, a
// logger and a metrics registry. Flags are the highest configuration layer.

import type { Command } from "commander";
import { loadConfig } from "../config/load.js";
import type { Config, DeepPartial } from "../config/schema.js";
import { createLogger, type Logger } from "../obs/logger.js";
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

export function buildContext(program: Command, overrides: DeepPartial<Config> = {}): CommandContext {
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
  // A JSONL write that fails later is reported through this logger, at the configured level.
  const metrics = new Metrics({
    jsonlPath: config.metrics.jsonlPath || undefined,
    logger: logger.child("metrics"),
  });
  return { config, logger, metrics };
}
