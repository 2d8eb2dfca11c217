// The wire frame shared by the transport adapters: msgpack (useRecords:false, so no structure
// definitions are shared between processes) of the array [version, channel, payload]. A Raft
// frame's payload is Message[]; decoded Raft messages are shape-checked before anyone sees them,
// because they come from the network.

import { Packr, Unpackr } from "msgpackr";
import { CfnError } from "../errors.js";
import {
  type Entry,
  EntryType,
  type Message,
  MessageType,
  type NodeId,
  type Snapshot,
} from "../raft/types.js";
import { RAFT_CHANNEL } from "./transport.js";

export const FRAME_VERSION = 1;

const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

export interface DecodedFrame {
  channel: string;
  payload: unknown;
}

/** Encodes a frame into a buffer it owns (pack() returns a view into a pooled buffer). */
export function encodeFrame(channel: string, payload: unknown): Uint8Array {
  return Uint8Array.prototype.slice.call(packr.pack([FRAME_VERSION, channel, payload]));
}

/**
 * Decodes the envelope; any failure is a CFN_ERR_BAD_FRAME with a `reason` detail. The decoded
 * short strings are slices of one string per frame (msgpackr's native extraction) and binary
 * values are views into `bytes`: whoever keeps a decoded value for long keeps those alive too, and
 * should copy it (the receiver's dedup window does: RecentIds.key).
 */
export function decodeFrame(bytes: Uint8Array): DecodedFrame {
  let decoded: unknown;
  try {
    decoded = unpackr.unpack(bytes);
  } catch (error) {
    throw badFrame("decode", `frame does not decode as msgpack: ${(error as Error).message}`);
  }
  if (!Array.isArray(decoded) || decoded.length !== 3)
    throw badFrame("envelope", "frame is not [version, channel, payload]");
  const [version, channel] = decoded;
  if (version !== FRAME_VERSION)
    throw badFrame("version", `frame version ${String(version)} is not ${FRAME_VERSION}`);
  if (typeof channel !== "string" || channel.length === 0 || channel.length > 64) {
    throw badFrame("envelope", "frame channel is not a short string");
  }
  return { channel, payload: decoded[2] };
}

export function badFrame(reason: string, message: string): CfnError {
  return new CfnError("CFN_ERR_BAD_FRAME", message, { reason });
}

const MESSAGE_TYPES = new Set<string>(Object.values(MessageType));
const ENTRY_TYPES = new Set<number>(Object.values(EntryType));

/**
 * Checks a Raft frame's payload: an array of well-formed Messages sent by `from` to `to`.
 * Returns the messages with binary fields as plain Uint8Arrays; throws CFN_ERR_BAD_FRAME.
 */
export function parseRaftPayload(payload: unknown, from: NodeId, to: NodeId): Message[] {
  if (!Array.isArray(payload) || payload.length === 0)
    throw badFrame("shape", "raft frame payload is not a non-empty array");
  return payload.map((raw, i) => parseMessage(raw, from, to, i));
}

// Copies the known fields of Message one by one (an unknown field from the network is not passed
// up). When a field is added to Message in src/raft/types.ts, add it here and to the message
// arbitrary of the round-trip property test in test/transport/frame.test.ts.
function parseMessage(raw: unknown, from: NodeId, to: NodeId, position: number): Message {
  const fail = (what: string) => badFrame("shape", `raft message ${position}: ${what}`);
  if (!isPlainObject(raw)) throw fail("not an object");
  if (typeof raw.type !== "string" || !MESSAGE_TYPES.has(raw.type)) throw fail("unknown type");
  if (raw.from !== from)
    throw badFrame(
      "sender",
      `raft message ${position}: from ${String(raw.from)} is not the connected peer ${from}`,
    );
  if (raw.to !== to) throw fail(`addressed to ${String(raw.to)}, not ${to}`);
  for (const key of ["term", "index", "logTerm", "commit", "rejectHint"] as const) {
    if (!isIndex(raw[key])) throw fail(`${key} is not a non-negative integer`);
  }
  if (typeof raw.reject !== "boolean") throw fail("reject is not a boolean");
  if (!Array.isArray(raw.entries)) throw fail("entries is not an array");
  const message: Message = {
    type: raw.type as MessageType,
    from,
    to,
    term: raw.term as number,
    index: raw.index as number,
    logTerm: raw.logTerm as number,
    entries: raw.entries.map((entry: unknown) => parseEntry(entry, fail)),
    commit: raw.commit as number,
    reject: raw.reject,
    rejectHint: raw.rejectHint as number,
  };
  if (raw.snapshot !== undefined && raw.snapshot !== null)
    message.snapshot = parseSnapshot(raw.snapshot, fail);
  if (raw.snapshotChunk !== undefined && raw.snapshotChunk !== null) {
    const chunk = raw.snapshotChunk;
    if (
      !isPlainObject(chunk) ||
      !isIndex(chunk.offset) ||
      !isIndex(chunk.total) ||
      typeof chunk.last !== "boolean"
    ) {
      throw fail("snapshotChunk is malformed");
    }
    message.snapshotChunk = {
      offset: chunk.offset as number,
      total: chunk.total as number,
      last: chunk.last,
    };
  }
  if (raw.context !== undefined && raw.context !== null)
    message.context = bytes(raw.context, fail, "context");
  if (raw.leaderTransfer !== undefined && raw.leaderTransfer !== null) {
    if (typeof raw.leaderTransfer !== "boolean") throw fail("leaderTransfer is not a boolean");
    if (raw.leaderTransfer) message.leaderTransfer = true;
  }
  return message;
}

function parseEntry(raw: unknown, fail: (what: string) => CfnError): Entry {
  if (!isPlainObject(raw) || !isIndex(raw.term) || !isIndex(raw.index)) throw fail("an entry is malformed");
  if (typeof raw.type !== "number" || !ENTRY_TYPES.has(raw.type)) throw fail("an entry has an unknown type");
  return {
    term: raw.term as number,
    index: raw.index as number,
    type: raw.type as EntryType,
    data: bytes(raw.data, fail, "entry data"),
  };
}

function parseSnapshot(raw: unknown, fail: (what: string) => CfnError): Snapshot {
  if (!isPlainObject(raw) || !isPlainObject(raw.metadata)) throw fail("snapshot is malformed");
  const { metadata } = raw;
  if (!isIndex(metadata.index) || !isIndex(metadata.term) || !isPlainObject(metadata.conf)) {
    throw fail("snapshot metadata is malformed");
  }
  const conf = metadata.conf;
  const ids = (value: unknown, name: string): NodeId[] => {
    if (!Array.isArray(value) || !value.every((id) => typeof id === "string"))
      throw fail(`snapshot conf.${name} is malformed`);
    return value as NodeId[];
  };
  if (typeof conf.autoLeave !== "boolean") throw fail("snapshot conf.autoLeave is not a boolean");
  return {
    metadata: {
      index: metadata.index as number,
      term: metadata.term as number,
      conf: {
        voters: ids(conf.voters, "voters"),
        learners: ids(conf.learners, "learners"),
        votersOutgoing: ids(conf.votersOutgoing, "votersOutgoing"),
        learnersNext: ids(conf.learnersNext, "learnersNext"),
        autoLeave: conf.autoLeave,
      },
    },
    data: bytes(raw.data, fail, "snapshot data"),
  };
}

function bytes(value: unknown, fail: (what: string) => CfnError, name: string): Uint8Array {
  if (!(value instanceof Uint8Array)) throw fail(`${name} is not binary`);
  return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
}

function isIndex(value: unknown): boolean {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return (
    typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array)
  );
}

/** Raft frames for one peer: one frame per call, split in halves while a frame passes the limit. */
export function encodeRaftFrames(
  messages: Message[],
  frameBytesMax: number,
): { frames: { bytes: Uint8Array; messages: Message[] }[]; tooLarge: Message[] } {
  const frames: { bytes: Uint8Array; messages: Message[] }[] = [];
  const tooLarge: Message[] = [];
  const encodeGroup = (group: Message[]) => {
    const bytes = encodeFrame(RAFT_CHANNEL, group);
    if (bytes.byteLength <= frameBytesMax) frames.push({ bytes, messages: group });
    else if (group.length === 1) tooLarge.push(group[0]);
    else {
      const half = Math.ceil(group.length / 2);
      encodeGroup(group.slice(0, half));
      encodeGroup(group.slice(half));
    }
  };
  if (messages.length > 0) encodeGroup(messages);
  return { frames, tooLarge };
}

/**
 * The snapshot a Snap message carries and whether it is the last chunk: a failure of any chunk
 * is reported, a success only for the last one.
 */
export function snapshotOf(message: Message): { index: number; last: boolean } | undefined {
  if (message.type !== MessageType.Snap || !message.snapshot) return undefined;
  return { index: message.snapshot.metadata.index, last: message.snapshotChunk?.last ?? true };
}

/** Groups messages by destination, keeping each destination's order. */
export function groupByDestination(messages: Message[]): Map<NodeId, Message[]> {
  const groups = new Map<NodeId, Message[]>();
  for (const message of messages) {
    let group = groups.get(message.to);
    if (!group) {
      group = [];
      groups.set(message.to, group);
    }
    group.push(message);
  }
  return groups;
}
