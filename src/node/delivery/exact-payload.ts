// Payloads travel between nodes exactly as their JSON says. msgpackr (the frames' and the spool's
// encoding) changes two things JSON keeps: a key "__proto__" comes back as "__proto_" (msgpackr
// guards its decoder against prototype pollution), and a string holding a lone surrogate (valid in
// JSON as "\ud800") is encoded to UTF-8 as U+FFFD. A payload holding either travels as its JSON
// text instead, in a msgpackr extension (ExactJson): it is decoded as an ExactJson again — never
// turned into an object where a "__proto__" key would be dropped — and written into the owner's
// inbox file by JSON.stringify through toJSON(), so the file says what the sender's said. Every
// other payload (nearly all) goes as before, checked by one walk that stops at the first finding.

import { addExtension } from "msgpackr";

/** A payload carried as its JSON text between nodes (see above). */
export class ExactJson {
  constructor(readonly text: string) {}

  /** The value (own "__proto__" keys kept: JSON.parse defines them as data properties). */
  toJSON(): unknown {
    return JSON.parse(this.text);
  }
}

/** The msgpackr extension type of ExactJson (1–100 are the application's). */
export const EXACT_JSON_EXTENSION_TYPE = 42;

addExtension({
  Class: ExactJson,
  type: EXACT_JSON_EXTENSION_TYPE,
  write: (value: ExactJson) => value.text,
  read: (text: unknown) => {
    // From a peer: anything but JSON text fails the frame's decoding (counted, dropped) here.
    if (typeof text !== "string") throw new Error("ExactJson extension without text");
    JSON.parse(text);
    return new ExactJson(text);
  },
});

/** Nesting deeper than this is carried as JSON text without looking further. */
const WALK_DEPTH_MAX = 64;

/** `payload` as it can travel through msgpackr unchanged: itself, or its JSON text. */
export function exactPayload(payload: unknown): unknown {
  if (payload instanceof ExactJson || !changedByMsgpack(payload, 0)) return payload;
  return new ExactJson(JSON.stringify(payload));
}

function changedByMsgpack(value: unknown, depth: number): boolean {
  if (typeof value === "string") return !(value as string & { isWellFormed(): boolean }).isWellFormed();
  if (typeof value !== "object" || value === null) return false;
  if (depth >= WALK_DEPTH_MAX) return true;
  if (Array.isArray(value)) {
    for (const item of value) if (changedByMsgpack(item, depth + 1)) return true;
    return false;
  }
  for (const key in value) {
    if (key === "__proto__" || !(key as string & { isWellFormed(): boolean }).isWellFormed()) return true;
    if (changedByMsgpack((value as Record<string, unknown>)[key], depth + 1)) return true;
  }
  // JSON.parse makes "__proto__" an own data property, which for…in does list; a key set
  // otherwise is not enumerable this way, and JSON.stringify would not write it either.
  return false;
}
