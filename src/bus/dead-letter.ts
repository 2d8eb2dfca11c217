// Moving a file to dead-letter: the reason goes into <file>.reason (JSON) first, then the file is
// renamed into dead/ untouched, so a person can see what arrived and why it was refused.

import { renameSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../obs/logger.js";
import type { Metrics } from "../obs/metrics.js";
import type { BusMetrics } from "./bus-metrics.js";
import { FILE_MODE, type AgentPaths } from "./layout.js";

/** Short, bounded-cardinality category of a dead-letter reason (metric label). */
export type DeadLetterCause = "foreign" | "malformed" | "oversized" | "misaddressed" | "deliveries_exhausted";

export interface DeadLetterContext {
  paths: AgentPaths;
  logger: Logger;
  metrics: Metrics;
  busMetrics: BusMetrics;
}

/**
 * Moves `sourcePath` to dead/<fileName> with a reason file. Returns false when the source vanished
 * (another consumer moved it first), in which case nothing is left behind.
 */
export function moveToDeadLetter(
  context: DeadLetterContext,
  sourcePath: string,
  fileName: string,
  cause: DeadLetterCause,
  reason: string,
  deliveries: number,
): boolean {
  const { paths } = context;
  const reasonPath = join(paths.dead, `${fileName}.reason`);
  const record = { cause, reason, deliveries, agent: paths.agentId, at: new Date().toISOString(), pid: process.pid };
  writeFileSync(reasonPath, `${JSON.stringify(record)}\n`, { mode: FILE_MODE });
  try {
    renameSync(sourcePath, join(paths.dead, fileName));
  } catch (error) {
    unlinkSync(reasonPath);
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw error;
  }
  context.busMetrics.deadLetters.inc({ reason: cause });
  context.metrics.emit("cfn_bus_dead_letters_total", 1, { agent: paths.agentId, reason: cause });
  context.logger.warn("message moved to dead-letter", { agent: paths.agentId, file: fileName, cause, reason });
  return true;
}
