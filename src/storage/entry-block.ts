// Binary encoding of a run of log entries stored as ONE LevelDB value (format version 2).
//
// A Ready round's entries are written as one block under the key of their first index, so a
// save is a handful of LevelDB operations whatever the batch size: per-operation cost in
// abstract-level and the native batch (option merging, key encoding, one WriteBatch record each)
// was the largest CPU cost of a follower under load when every entry was its own key.
//
//   byte 0        BLOCK_VERSION (1)
//   bytes 1..8    index of the first entry (float64, a safe integer)
//   bytes 9..12   entry count (uint32)
//   per entry     term (float64) | type (uint8) | data length (uint32) | data
//
// Indexes are implied (first + position): a block always holds contiguous entries.

import { assert } from "../errors.js";
import type { Entry, EntryType } from "../raft/types.js";

const BLOCK_VERSION = 1;
const BLOCK_HEADER_BYTES = 13;
const ENTRY_HEADER_BYTES = 13;

/** Index range of a stored block, kept in memory by the LevelDB adapter. */
export interface BlockBounds {
  first: number;
  last: number;
}

/** Encodes contiguous entries (at least one) into a buffer the caller owns. */
export function encodeEntryBlock(entries: readonly Entry[]): Uint8Array {
  assert(entries.length > 0, "encodeEntryBlock: no entries");
  const first = entries[0].index;
  let bytes = BLOCK_HEADER_BYTES;
  for (let i = 0; i < entries.length; i++) {
    assert(entries[i].index === first + i, "LogStore.save: entries must be contiguous");
    bytes += ENTRY_HEADER_BYTES + entries[i].data.byteLength;
  }
  const out = new Uint8Array(bytes);
  const view = new DataView(out.buffer);
  out[0] = BLOCK_VERSION;
  view.setFloat64(1, first);
  view.setUint32(9, entries.length);
  let at = BLOCK_HEADER_BYTES;
  for (const entry of entries) {
    view.setFloat64(at, entry.term);
    out[at + 8] = entry.type;
    view.setUint32(at + 9, entry.data.byteLength);
    out.set(entry.data, at + ENTRY_HEADER_BYTES);
    at += ENTRY_HEADER_BYTES + entry.data.byteLength;
  }
  return out;
}

/** The index range of a block, from its header only. */
export function entryBlockBounds(bytes: Uint8Array): BlockBounds {
  const view = blockView(bytes);
  const first = view.getFloat64(1);
  return { first, last: first + view.getUint32(9) - 1 };
}

/** Decodes a block; entries' data are views into `bytes` (which the caller must not reuse). */
export function decodeEntryBlock(bytes: Uint8Array): Entry[] {
  const view = blockView(bytes);
  const first = view.getFloat64(1);
  const count = view.getUint32(9);
  const entries: Entry[] = new Array(count);
  let at = BLOCK_HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    assert(at + ENTRY_HEADER_BYTES <= bytes.byteLength, "stored entry block is truncated");
    const length = view.getUint32(at + 9);
    const start = at + ENTRY_HEADER_BYTES;
    assert(start + length <= bytes.byteLength, "stored entry block is truncated");
    entries[i] = {
      term: view.getFloat64(at),
      index: first + i,
      type: bytes[at + 8] as EntryType,
      // A plain Uint8Array view (LevelDB may hand back a Buffer; callers compare plain arrays).
      data: new Uint8Array(bytes.buffer, bytes.byteOffset + start, length),
    };
    at = start + length;
  }
  assert(at === bytes.byteLength, "stored entry block has trailing bytes");
  return entries;
}

function blockView(bytes: Uint8Array): DataView {
  assert(
    bytes.byteLength >= BLOCK_HEADER_BYTES && bytes[0] === BLOCK_VERSION,
    "stored entry block has an unknown version",
  );
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  assert(
    Number.isSafeInteger(view.getFloat64(1)) && view.getFloat64(1) >= 1,
    "stored entry block has a bad index",
  );
  return view;
}
