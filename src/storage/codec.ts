// Key layout and value encoding of the LevelDB log store.
//
// Keys are latin1 strings. Entries sort in index order because the index is written as 16
// zero-padded decimal digits (Number.MAX_SAFE_INTEGER has 16 digits):
//   "m/identity"               → { clusterId, nodeId, formatVersion }
//   "m/hardstate"              → HardState
//   "m/snapshot"               → Snapshot
//   "b/0000000000000042"       → entries 42.. as one binary block (format 2, entry-block.ts)
//   "e/0000000000000042"       → Entry 42 (format 1; migrated to blocks at open)
// Other values are msgpack (useRecords:false, so any reader can decode them without shared
// structures).

import { Packr } from "msgpackr";
import { assert } from "../errors.js";
import type { ConfState, Entry, HardState, Snapshot } from "../raft/types.js";
import type { StoreIdentity } from "./log-store.js";

export const IDENTITY_KEY = "m/identity";
export const HARD_STATE_KEY = "m/hardstate";
export const SNAPSHOT_KEY = "m/snapshot";
export const ENTRY_KEY_PREFIX = "e/";
const ENTRY_INDEX_DIGITS = 16;
/** Upper bound for range scans over entries ("e0" sorts after every "e/…"). */
export const ENTRY_KEY_END = "e0";
export const BLOCK_KEY_PREFIX = "b/";
/** Upper bound for range scans over blocks ("b0" sorts after every "b/…"). */
export const BLOCK_KEY_END = "b0";

const packr = new Packr({ useRecords: false });

export function entryKey(index: number): string {
  assert(
    Number.isSafeInteger(index) && index >= 0,
    `entry index ${index} is not a safe non-negative integer`,
  );
  return ENTRY_KEY_PREFIX + String(index).padStart(ENTRY_INDEX_DIGITS, "0");
}

/** Key of the entry block whose first entry is `index` (same digits as entry keys). */
export function blockKey(index: number): string {
  return BLOCK_KEY_PREFIX + entryKey(index).slice(ENTRY_KEY_PREFIX.length);
}

/** Encodes a value into a buffer it owns (pack() returns a view into a pooled buffer). */
export function encodeValue(value: unknown): Uint8Array {
  return Uint8Array.prototype.slice.call(packr.pack(value));
}

function decodeValue(bytes: Uint8Array): unknown {
  return packr.unpack(bytes);
}

/** A plain Uint8Array over a decoded binary (msgpackr gives Buffers in Node). */
function bytesOf(value: unknown, what: string): Uint8Array {
  assert(value instanceof Uint8Array, `stored ${what} is not binary`);
  return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
}

/** Format 1's entry value (kept to read, and in tests to write, format-1 data dirs). */
export function encodeEntry(entry: Entry): Uint8Array {
  return encodeValue({ term: entry.term, index: entry.index, type: entry.type, data: entry.data });
}

export function decodeEntry(bytes: Uint8Array): Entry {
  const raw = decodeValue(bytes) as Entry;
  return { term: raw.term, index: raw.index, type: raw.type, data: bytesOf(raw.data, "entry data") };
}

export function encodeHardState(hardState: HardState): Uint8Array {
  return encodeValue({ term: hardState.term, vote: hardState.vote, commit: hardState.commit });
}

export function decodeHardState(bytes: Uint8Array): HardState {
  const raw = decodeValue(bytes) as HardState;
  return { term: raw.term, vote: raw.vote, commit: raw.commit };
}

export function encodeSnapshot(snapshot: Snapshot): Uint8Array {
  return encodeValue(snapshot);
}

export function decodeSnapshot(bytes: Uint8Array): Snapshot {
  const raw = decodeValue(bytes) as Snapshot;
  const conf = raw.metadata.conf as ConfState;
  return {
    metadata: {
      index: raw.metadata.index,
      term: raw.metadata.term,
      conf: {
        voters: [...conf.voters],
        learners: [...conf.learners],
        votersOutgoing: [...conf.votersOutgoing],
        learnersNext: [...conf.learnersNext],
        autoLeave: conf.autoLeave,
      },
    },
    data: bytesOf(raw.data, "snapshot data"),
  };
}

export interface StoredIdentity extends StoreIdentity {
  formatVersion: number;
}

export function encodeIdentity(identity: StoredIdentity): Uint8Array {
  return encodeValue({
    clusterId: identity.clusterId,
    nodeId: identity.nodeId,
    formatVersion: identity.formatVersion,
  });
}

export function decodeIdentity(bytes: Uint8Array): StoredIdentity {
  return decodeValue(bytes) as StoredIdentity;
}
