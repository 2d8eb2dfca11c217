// The message envelope and its on-disk JSON text (docs/PROTOCOL.md, "File contents"). A file is
// valid JSON laid out on fixed lines so that a shell script can read it with `sed -n Np`:
//
//   {"v":1,"id":…,"from":…,"to":…,"type":…,"priority":…,"seq":…,"ts":…,     line 1
//   "headers":{…},                                                           line 2
//   "payload":…}                                                             line 3
//
// A batch file wraps several such 3-line envelopes in {"v":1,"batch":[ … ]}. Pure functions only.

import { CfnError } from "../errors.js";
import { isValidAgentId } from "./agent-id.js";
import type { Priority } from "./names.js";

/** Protocol version written in every file. */
export const PROTOCOL_VERSION = 1;

/** A message as it travels on the bus. */
export interface Envelope {
  v: typeof PROTOCOL_VERSION;
  /** Unique message id (caller-chosen for idempotent retries, else a random UUID). */
  id: string;
  from: string;
  to: string;
  /** Application message type, e.g. "task", "result" ([A-Za-z0-9._:/-], 1 to 128 characters). */
  type: string;
  priority: Priority;
  /** Per-sender sequence number (per sending process and sender id), from 1. */
  seq: number;
  /** Send time in microseconds since the Unix epoch. */
  ts: number;
  /** String headers, e.g. W3C `traceparent` / `tracestate`. */
  headers: Record<string, string>;
  payload: unknown;
}

const TYPE_PATTERN = /^[A-Za-z0-9._:/-]{1,128}$/;
const MESSAGE_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;
const HEADER_NAME_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
export const HEADERS_COUNT_MAX = 64;
export const HEADER_VALUE_LENGTH_MAX = 4096;
/**
 * Optional header: milliseconds since the epoch (decimal) after which the message is of no use to
 * anyone (a task past its round's deadline). A receiver that claims a single-message file past it
 * moves it to dead-letter with cause "expired" instead of delivering it (docs/PROTOCOL.md).
 */
export const EXPIRES_AT_HEADER = "cfn-expires-at";
const PRIORITIES = new Set<string>(["high", "normal", "low"]);

function invalid(message: string, details: Record<string, unknown> = {}): CfnError {
  return new CfnError("CFN_ERR_INVALID_MESSAGE", message, details);
}

export function isValidMessageType(type: unknown): type is string {
  return typeof type === "string" && TYPE_PATTERN.test(type);
}

export function isValidMessageId(id: unknown): id is string {
  return typeof id === "string" && MESSAGE_ID_PATTERN.test(id);
}

/** Checks headers from a caller or from disk; returns a reason or undefined when valid. */
export function headersProblem(headers: unknown): string | undefined {
  if (typeof headers !== "object" || headers === null || Array.isArray(headers))
    return "headers must be an object";
  const entries = Object.entries(headers);
  if (entries.length > HEADERS_COUNT_MAX) return `more than ${HEADERS_COUNT_MAX} headers`;
  for (const [name, value] of entries) {
    if (!HEADER_NAME_PATTERN.test(name))
      return `header name ${JSON.stringify(name)} outside [A-Za-z0-9._-]{1,64}`;
    // Would not survive being an object key everywhere (a JavaScript object's prototype slot).
    if (name === "__proto__") return 'header name "__proto__" is reserved';
    if (typeof value !== "string" || value.length > HEADER_VALUE_LENGTH_MAX)
      return `header ${name} must be a string of at most ${HEADER_VALUE_LENGTH_MAX} characters`;
    // A lone surrogate is valid in JSON text but not in UTF-8: headers are text that crosses
    // nodes, trace exporters and bash agents alike.
    if (!(value as string & { isWellFormed(): boolean }).isWellFormed())
      return `header ${name} holds a lone surrogate (not well-formed Unicode)`;
  }
  return undefined;
}

/** The three lines of one envelope (without the trailing newline). */
export function encodeEnvelope(envelope: Envelope): string {
  let payloadText: string | undefined;
  try {
    payloadText = JSON.stringify(envelope.payload);
  } catch (error) {
    throw invalid(`payload is not JSON-serialisable: ${(error as Error).message}`);
  }
  if (payloadText === undefined) payloadText = "null";
  // id, from, to, type and priority are validated to need no escaping.
  return (
    `{"v":${PROTOCOL_VERSION},"id":"${envelope.id}","from":"${envelope.from}","to":"${envelope.to}",` +
    `"type":"${envelope.type}","priority":"${envelope.priority}","seq":${envelope.seq},"ts":${envelope.ts},\n` +
    `"headers":${JSON.stringify(envelope.headers)},\n"payload":${payloadText}}`
  );
}

/** File text of a single message. */
export function encodeMessageFile(envelope: Envelope): string {
  return `${encodeEnvelope(envelope)}\n`;
}

/** File text of a batch: one JSON object holding the envelopes in order. */
export function encodeBatchFile(envelopes: Envelope[]): string {
  return joinBatchFile(envelopes.map(encodeEnvelope));
}

/** File text of a batch from already encoded envelopes (encodeEnvelope). */
export function joinBatchFile(parts: string[]): string {
  return `{"v":${PROTOCOL_VERSION},"batch":[\n${parts.join("\n,")}\n]}\n`;
}

/** Returns a reason when `value` is not a valid envelope, else undefined. */
export function envelopeProblem(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return "not a JSON object";
  const e = value as Record<string, unknown>;
  if (e.v !== PROTOCOL_VERSION) return `unsupported protocol version ${JSON.stringify(e.v)}`;
  if (!isValidMessageId(e.id)) return "missing or invalid id";
  if (!isValidAgentId(e.from)) return "missing or invalid from";
  if (!isValidAgentId(e.to)) return "missing or invalid to";
  if (!isValidMessageType(e.type)) return "missing or invalid type";
  if (typeof e.priority !== "string" || !PRIORITIES.has(e.priority)) return "missing or invalid priority";
  if (!Number.isSafeInteger(e.seq) || (e.seq as number) < 0) return "missing or invalid seq";
  if (!Number.isSafeInteger(e.ts) || (e.ts as number) < 0) return "missing or invalid ts";
  const headers = headersProblem(e.headers);
  if (headers) return headers;
  if (!("payload" in e)) return "missing payload";
  return undefined;
}

export type DecodedFile = { ok: true; envelopes: Envelope[] } | { ok: false; reason: string };

/**
 * Deepest nesting of arrays and objects a message file may have. JSON.parse takes any depth, but
 * what re-encodes a message (JSON.stringify for `cfn recv --json`, msgpack for a forwarded frame)
 * recurses: a payload nested 200,000 deep overflowed the stack there, after the file was claimed,
 * and came back forever. Only a file of more than 2 × this many characters can be that deep, so
 * ordinary messages are not scanned.
 */
export const JSON_DEPTH_MAX = 1000;

/** True when `text` (JSON) nests arrays and objects deeper than `max` (strings skipped). */
function nestsDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92)
        i++; // backslash: skip the escaped character
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 91 || c === 123) {
      if (++depth > max) return true;
    } else if (c === 93 || c === 125) depth--;
  }
  return false;
}

/** Decodes the text of a message or batch file; never throws. `count` is N from the file name. */
export function decodeFile(text: string, count: number): DecodedFile {
  if (text.length > 2 * JSON_DEPTH_MAX && nestsDeeperThan(text, JSON_DEPTH_MAX))
    return { ok: false, reason: `JSON nested deeper than ${JSON_DEPTH_MAX} levels` };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, reason: "malformed JSON (truncated or not a bus message)" };
  }
  const object = value as Record<string, unknown> | null;
  if (object !== null && typeof object === "object" && Array.isArray(object.batch)) {
    if (object.v !== PROTOCOL_VERSION)
      return { ok: false, reason: `unsupported protocol version ${JSON.stringify(object.v)}` };
    const batch = object.batch as unknown[];
    if (batch.length !== count)
      return { ok: false, reason: `batch holds ${batch.length} messages, its name says ${count}` };
    for (let index = 0; index < batch.length; index++) {
      const problem = envelopeProblem(batch[index]);
      if (problem) return { ok: false, reason: `batch message ${index}: ${problem}` };
    }
    return { ok: true, envelopes: batch as Envelope[] };
  }
  const problem = envelopeProblem(value);
  if (problem) return { ok: false, reason: problem };
  if (count !== 1) return { ok: false, reason: `single message but the name says ${count}` };
  return { ok: true, envelopes: [value as Envelope] };
}
