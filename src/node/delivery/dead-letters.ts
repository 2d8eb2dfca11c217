// Dead letters of cross-node delivery: a forwarded message that no retry can land — too large
// for any frame on the sending node, refused by the owner's bus — is written, as the wire carried
// it (JSON), into the dead-letter dir of its agent on this node's bus, with its reason beside it
// (src/bus/dead-letter.ts), so that nothing is dropped without a trace (docs/NODE.md).

import { writeDeadLetter } from "../../bus/dead-letter.js";
import type { Bus } from "../../bus/index.js";
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
