// What a RaftHost puts in a Raft snapshot's data: the transport addresses of the members, then
// the state machine's own snapshot. A node that joins or falls behind learns the log through a
// snapshot, and the conf-change entries that carried later members' addresses (their context)
// may be compacted away; without the addresses in the snapshot it could not reach those members.
//
//   bytes 0..3    SNAPSHOT_MAGIC "cfnS"
//   byte 4        SNAPSHOT_DATA_VERSION (1)
//   bytes 5..8    length of the addresses (uint32, big-endian)
//   then          the addresses: UTF-8 JSON object { nodeId: address }
//   then          the state machine's snapshot bytes
//
// Data without the magic (written before this envelope existed) is all state machine.

import type { NodeId } from "../raft/index.js";

const SNAPSHOT_MAGIC = [0x63, 0x66, 0x6e, 0x53]; // "cfnS"
const SNAPSHOT_DATA_VERSION = 1;
const HEADER_BYTES = 9;

export interface HostSnapshotData {
  addresses: Record<NodeId, string>;
  stateMachine: Uint8Array;
}

export function encodeHostSnapshot(data: HostSnapshotData): Uint8Array {
  const addresses = new TextEncoder().encode(JSON.stringify(sortedRecord(data.addresses)));
  const out = new Uint8Array(HEADER_BYTES + addresses.byteLength + data.stateMachine.byteLength);
  out.set(SNAPSHOT_MAGIC, 0);
  out[4] = SNAPSHOT_DATA_VERSION;
  new DataView(out.buffer).setUint32(5, addresses.byteLength);
  out.set(addresses, HEADER_BYTES);
  out.set(data.stateMachine, HEADER_BYTES + addresses.byteLength);
  return out;
}

/** Splits snapshot data; data of the older form (no magic) has no addresses. */
export function decodeHostSnapshot(bytes: Uint8Array): HostSnapshotData {
  const tagged =
    bytes.byteLength >= HEADER_BYTES &&
    SNAPSHOT_MAGIC.every((byte, i) => bytes[i] === byte) &&
    bytes[4] === SNAPSHOT_DATA_VERSION;
  if (!tagged) return { addresses: {}, stateMachine: bytes };
  const length = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(5);
  const end = HEADER_BYTES + length;
  const parsed = JSON.parse(new TextDecoder().decode(bytes.subarray(HEADER_BYTES, end))) as unknown;
  const addresses: Record<NodeId, string> = {};
  if (typeof parsed === "object" && parsed !== null) {
    for (const [id, address] of Object.entries(parsed))
      if (typeof address === "string") addresses[id] = address;
  }
  return { addresses, stateMachine: bytes.subarray(end) };
}

/** Sorted keys, so equal address books encode to equal bytes. */
function sortedRecord(record: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(record).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
