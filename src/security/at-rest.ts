// What the persistence mirror and the delivery spool do with a stored record that does not open
// (CFN_ERR_DECRYPT: altered on disk, or sealed with a key this node no longer has): it is set
// aside with its reason — never delivered, never a crash — and counted in the log.

import { writeDeadLetter } from "../bus/dead-letter.js";
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
  writeDeadLetter(deadDir, name, stored, { cause: "undecryptable", reason, agent });
  logger.error("mirrored message cannot be decrypted; moved to dead-letter", { agent, name, reason });
}
