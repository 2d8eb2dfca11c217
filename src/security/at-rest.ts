// What the persistence mirror and the delivery spool do with a stored record that does not open
// (CFN_ERR_DECRYPT: altered on disk, or sealed with a key this node no longer has): it is set
// aside with its reason — never delivered, never a crash — and counted in the log.

import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { isCfnError } from "../errors.js";
import type { Logger } from "../obs/logger.js";

/** The reason of an unopenable record (the CfnError's message), or rethrows anything else. */
export function unreadableReason(error: unknown): string {
  if (isCfnError(error, "CFN_ERR_DECRYPT")) return error.message;
  throw error;
}

/**
 * Writes a mirrored message that cannot be decrypted into the agent's dead-letter dir, as the
 * bus does: the stored (sealed) text as <name>, its reason as <name>.reason.
 */
export function deadLetterUnreadable(
  deadDir: string,
  agent: string,
  name: string,
  stored: string,
  error: unknown,
  logger: Logger,
): void {
  const reason = unreadableReason(error);
  writeFileSync(join(deadDir, name), stored, { mode: 0o600 });
  const record = {
    cause: "undecryptable",
    reason,
    deliveries: 0,
    agent,
    at: new Date().toISOString(),
    pid: process.pid,
  };
  writeFileSync(join(deadDir, `${name}.reason`), `${JSON.stringify(record)}\n`, { mode: 0o600 });
  logger.error("mirrored message cannot be decrypted; moved to dead-letter", { agent, name, reason });
}
