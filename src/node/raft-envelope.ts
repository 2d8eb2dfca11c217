// The bytes a RaftHost puts in a normal log entry: a 17-byte header naming the proposal, then
// the application's command. The header lets the proposing node match the applied entry to the
// caller waiting on it (the core does not tell the shell which index a proposal got, and a
// proposal may be re-ordered or lost across leader changes).
//
//   byte 0       ENVELOPE_VERSION (1)
//   bytes 1..8   the proposer's incarnation: random per RaftHost start, so a restarted node never
//                mistakes a replayed entry of its previous life for a new proposal
//   bytes 9..16  the proposal's sequence number in that incarnation (float64, a safe integer)
//   bytes 17..   the command, handed to the state machine as the entry's data
//
// Entries with other shapes (the empty no-op of a new leader, conf changes) are passed through.

export const ENVELOPE_VERSION = 1;
export const ENVELOPE_HEADER_BYTES = 17;
export const INCARNATION_BYTES = 8;

export interface Envelope {
  incarnation: Uint8Array;
  sequence: number;
  command: Uint8Array;
}

export function encodeEnvelope(incarnation: Uint8Array, sequence: number, command: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(ENVELOPE_HEADER_BYTES + command.byteLength);
  bytes[0] = ENVELOPE_VERSION;
  bytes.set(incarnation.subarray(0, INCARNATION_BYTES), 1);
  new DataView(bytes.buffer).setFloat64(9, sequence);
  bytes.set(command, ENVELOPE_HEADER_BYTES);
  return bytes;
}

/** Decodes an entry's data; undefined when it is not an envelope (no-op, foreign bytes). */
export function decodeEnvelope(data: Uint8Array): Envelope | undefined {
  if (data.byteLength < ENVELOPE_HEADER_BYTES || data[0] !== ENVELOPE_VERSION) return undefined;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const sequence = view.getFloat64(9);
  if (!Number.isSafeInteger(sequence)) return undefined;
  return {
    incarnation: data.subarray(1, 1 + INCARNATION_BYTES),
    sequence,
    command: data.subarray(ENVELOPE_HEADER_BYTES),
  };
}

export function sameIncarnation(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}
