// Byte accounting for entries. Limits count payload bytes plus a fixed per-entry overhead so
// that many empty entries still add up.

import type { Entry } from "./types.js";

/** Approximate encoded overhead of one entry's header (term, index, type). */
export const ENTRY_OVERHEAD_BYTES = 16;

export function entryBytes(entry: Entry): number {
  return entry.data.byteLength + ENTRY_OVERHEAD_BYTES;
}

export function entriesBytes(entries: readonly Entry[]): number {
  let total = 0;
  for (const entry of entries) total += entryBytes(entry);
  return total;
}

/** Payload bytes only; what uncommittedEntriesBytesMax limits (the leader's no-op counts 0). */
export function payloadBytes(entries: readonly Entry[]): number {
  let total = 0;
  for (const entry of entries) total += entry.data.byteLength;
  return total;
}

/** The longest prefix of `entries` within `bytesMax`, but always at least one entry. */
export function limitSize(entries: Entry[], bytesMax: number): Entry[] {
  if (entries.length === 0) return entries;
  let size = entryBytes(entries[0]);
  let count = 1;
  while (count < entries.length) {
    size += entryBytes(entries[count]);
    if (size > bytesMax) break;
    count++;
  }
  return count === entries.length ? entries : entries.slice(0, count);
}
