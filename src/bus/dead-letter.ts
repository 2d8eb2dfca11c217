// Moving a file to dead-letter: the file is renamed into dead/ untouched and its reason lands next
// to it as <file>.reason (JSON), so a person can see what arrived and why it was refused.

import { existsSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../obs/logger.js";
import type { Metrics } from "../obs/metrics.js";
import type { BusMetrics } from "./bus-metrics.js";
import { type AgentPaths, FILE_MODE } from "./layout.js";

/** Short, bounded-cardinality category of a dead-letter reason (metric label). */
export type DeadLetterCause =
  | "foreign"
  | "malformed"
  | "oversized"
  | "misaddressed"
  | "deliveries_exhausted"
  | "expired";

export interface DeadLetterContext {
  paths: AgentPaths;
  logger: Logger;
  metrics: Metrics;
  busMetrics: BusMetrics;
}

/**
 * Moves `sourcePath` to dead/<fileName> with a reason file. Returns false when the source vanished
 * (another consumer moved it first), in which case nothing is left behind. A reason that cannot be
 * written (a full bus) is logged instead and the file moved without one. The reason is written
 * into tmp/ first and renamed in after the file, so a vanished source never clobbers the reason of
 * an earlier dead letter; a name already present in dead/ (a foreign file seen twice) gets a
 * unique suffix instead of replacing it.
 */
export function moveToDeadLetter(
  context: DeadLetterContext,
  sourcePath: string,
  fileName: string,
  cause: DeadLetterCause,
  reason: string,
  deliveries: number,
  unique: string,
): boolean {
  const { paths } = context;
  const record = {
    cause,
    reason,
    deliveries,
    agent: paths.agentId,
    at: new Date().toISOString(),
    pid: process.pid,
  };
  const reasonTmpPath = join(paths.tmp, `.reason.${unique}`);
  let reasonWritten = false;
  try {
    writeFileSync(reasonTmpPath, `${JSON.stringify(record)}\n`, { mode: FILE_MODE });
    reasonWritten = true;
  } catch (error) {
    // No tmp/: the agent's directories were removed (by another consumer's shutdown). So was the
    // source then; a name fs.watch reported for the removal itself is one ("inbox").
    if ((error as NodeJS.ErrnoException).code === "ENOENT" && !existsSync(sourcePath)) return false;
    // A full bus (ENOSPC, no inodes left) or another write failure: the file is dead-lettered all
    // the same, without a reason file (PROTOCOL.md section 8); the reason is in the log. Moving it
    // out of the way is what lets the receiver reach the good files behind it.
    unlinkQuietly(reasonTmpPath);
    context.logger.warn("cannot write a dead letter's reason file; the file goes to dead/ without one", {
      agent: paths.agentId,
      file: fileName,
      error,
    });
  }
  let deadName = fileName;
  if (existsSync(join(paths.dead, deadName))) deadName = `${fileName}.${unique}`;
  try {
    renameSync(sourcePath, join(paths.dead, deadName));
  } catch (error) {
    if (reasonWritten) unlinkQuietly(reasonTmpPath);
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw error;
  }
  if (reasonWritten) {
    try {
      renameSync(reasonTmpPath, join(paths.dead, `${deadName}.reason`));
    } catch (error) {
      unlinkQuietly(reasonTmpPath);
      context.logger.warn("cannot move a dead letter's reason file into dead/", {
        agent: paths.agentId,
        file: deadName,
        error,
      });
    }
  }
  context.busMetrics.deadLetters.inc({ reason: cause });
  context.metrics.emit("cfn_bus_dead_letters_total", 1, { agent: paths.agentId, reason: cause });
  context.logger.warn("message moved to dead-letter", {
    agent: paths.agentId,
    file: deadName,
    cause,
    reason,
  });
  return true;
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {}
}

/**
 * Writes a message that never was a file of this inbox (one a node could not send or decrypt)
 * into `deadDir` as <name>, with its reason as <name>.reason, as the bus's own dead letters.
 */
export function writeDeadLetter(
  deadDir: string,
  name: string,
  text: string,
  record: { cause: string; reason: string; agent: string } & Record<string, unknown>,
): void {
  writeFileSync(join(deadDir, name), text, { mode: FILE_MODE });
  const full = { deliveries: 0, ...record, at: new Date().toISOString(), pid: process.pid };
  writeFileSync(join(deadDir, `${name}.reason`), `${JSON.stringify(full)}\n`, { mode: FILE_MODE });
}

/**
 * Dead-letters a file already written into dead/ (the nacked or expired part of a batch): reason
 * file only.
 */
export function moveToDeadLetterAfterWrite(
  context: DeadLetterContext,
  fileName: string,
  cause: "deliveries_exhausted" | "expired",
  reason: string,
  deliveries: number,
): void {
  const reasonPath = join(context.paths.dead, `${fileName}.reason`);
  const record = {
    cause,
    reason,
    deliveries,
    agent: context.paths.agentId,
    at: new Date().toISOString(),
    pid: process.pid,
  };
  try {
    writeFileSync(reasonPath, `${JSON.stringify(record)}\n`, { mode: FILE_MODE });
  } catch (error) {
    unlinkQuietly(reasonPath);
    context.logger.warn("cannot write a dead letter's reason file; the file is in dead/ without one", {
      agent: context.paths.agentId,
      file: fileName,
      error,
    });
  }
  context.busMetrics.deadLetters.inc({ reason: cause });
  context.logger.warn("message moved to dead-letter", {
    agent: context.paths.agentId,
    file: fileName,
    cause,
    reason,
  });
}
