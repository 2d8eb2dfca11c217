// Dead letters of cross-node delivery: a forwarded message that no retry can land — too large
// for any frame on the sending node, refused by the owner's bus — is written, as the wire carried
// it (JSON), into the dead-letter dir of its agent on this node's bus, with its reason beside it
// (src/bus/dead-letter.ts), so that nothing is dropped without a trace (docs/NODE.md).

import { writeDeadLetter } from "../../bus/dead-letter.js";
import type { Bus } from "../../bus/index.js";
import type { CfnError } from "../../errors.js";
import type { Logger } from "../../obs/logger.js";
import type { NodeMetrics } from "../node-metrics.js";
import type { WireMessage } from "./wire.js";

/**
 * Writes `message` as `<kind>_<ms>_<where>.json` into its agent's dead/ with the reason record.
 * Throws what the file system throws (the caller logs it: the message is then only counted).
 */
export function deadLetterWireMessage(
  bus: Bus,
  message: WireMessage,
  kind: "unsendable" | "refused",
  where: string,
  record: { reason: string } & Record<string, unknown>,
): string {
  const paths = bus.layout.agent(message.to);
  bus.layout.ensureAgent(paths, true);
  const name = `${kind}_${Date.now()}_${where}.json`;
  writeDeadLetter(paths.dead, name, JSON.stringify(message), { cause: kind, agent: message.to, ...record });
  return name;
}

/**
 * A forwarded or re-routed message this node's bus refused (`error`: invalid for its limits):
 * counted in cfn_delivery_rejected_messages_total, dead-lettered as `refused_<ms>_<where>.json`
 * and logged. A failing dead-letter write is logged; the message is then only counted.
 */
export function deadLetterRefused(
  context: { bus: Bus; metrics: NodeMetrics; logger: Logger },
  message: WireMessage,
  where: string,
  error: CfnError,
  record: Record<string, unknown> = {},
): void {
  context.metrics.rejected.inc({ reason: error.code });
  let file: string | undefined;
  try {
    file = deadLetterWireMessage(context.bus, message, "refused", where, {
      reason: error.message,
      code: error.code,
      ...record,
    });
  } catch (writeError) {
    context.logger.error("could not dead-letter a refused message", { id: message.id, error: writeError });
  }
  context.logger.warn("message refused by the local bus; dead-lettered", {
    to: message.to,
    file,
    error,
    ...record,
  });
}
