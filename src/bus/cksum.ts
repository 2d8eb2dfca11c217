// POSIX `cksum` (CRC-32, polynomial 0x04C11DB7, MSB first, length appended, complemented), so that
// the shard of an agent can be computed in bash with coreutils: `printf '%s' "$id" | cksum`.

const TABLE = buildTable();

function buildTable(): Uint32Array {
  const table = new Uint32Array(256);
  for (let index = 0; index < 256; index++) {
    let crc = index << 24;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x80000000 ? (crc << 1) ^ 0x04c11db7 : crc << 1;
    table[index] = crc >>> 0;
  }
  return table;
}

/** The first number `cksum` prints for these bytes (an unsigned 32-bit integer). */
export function posixCksum(bytes: Uint8Array): number {
  let crc = 0;
  const step = (byte: number) => {
    crc = ((crc << 8) ^ TABLE[((crc >>> 24) ^ byte) & 0xff]) >>> 0;
  };
  for (const byte of bytes) step(byte);
  // The length follows, least significant byte first, as few bytes as it needs.
  for (let length = bytes.length; length > 0; length = Math.floor(length / 256)) step(length & 0xff);
  return ~crc >>> 0;
}
