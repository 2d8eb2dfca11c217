// Encryption at rest for the delivery spool: before the spool opens (node start), every sealed
// outbound record (a run of consecutive messages) is opened once. One that fails authentication
// (CFN_ERR_DECRYPT) is moved to the spool's dead-letter key space `x!<dest>!<first seq>` with its
// reason — its messages are never sent.
//
// The forwarder sends consecutive sequences per destination, so a record taken out of the middle
// would shift every later one. The records after it are renumbered (and re-sealed: the storage
// key is their additional data), and the spool's stream id is replaced, so the receiver treats
// them as a new stream instead of skipping sequences it already saw; its (agent, id) window drops
// any it wrote before. A record sealed with a key this node lacks is a configuration error
// (CFN_ERR_KEY_FILE): the start is refused and nothing is discarded.
//
// Key layout (src/node/delivery/spool.ts): o!<dest>!<first seq:16> → JSON run of messages (one
// message in older data dirs), r!<dest> (sequences reserved), n!<dest> (older versions), meta!stream.

import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import type { Logger } from "../obs/logger.js";
import { closeLevel, openLevel } from "../storage/level-open.js";
import { unreadableReason } from "./at-rest.js";
import type { SealedRecordCodec } from "./record-cipher.js";

const SEQ_DIGITS = 16;

type Op = { type: "put"; key: string; value: string } | { type: "del"; key: string };

/** One stored record: a run of consecutive sequences starting at `first`. */
interface SpoolRecord {
  first: number;
  key: string;
  stored: string;
  text?: string;
  /** Messages in the run (known once opened). */
  messages?: number;
  reason?: string;
}

function outboundKey(dest: string, seq: number): string {
  return `o!${dest}!${String(seq).padStart(SEQ_DIGITS, "0")}`;
}

/** Scrubs the spool at `path` (absent: nothing to do); returns the records dead-lettered. */
export async function scrubSpool(path: string, codec: SealedRecordCodec, logger: Logger): Promise<number> {
  if (!existsSync(path)) return 0;
  // Through the process's one registry of open LevelDB paths (a second handle on a path would
  // lose its lock): its errors also say plainly when another process holds the spool.
  const { db, path: resolved } = await openLevel(path, "spool", "utf8");
  try {
    const perDest = new Map<string, SpoolRecord[]>();
    for await (const [key, stored] of db.iterator({ gte: "o!", lt: "o!\xff" })) {
      const at = key.lastIndexOf("!");
      const dest = key.slice(2, at);
      const record: SpoolRecord = { first: Number(key.slice(at + 1)), key, stored };
      try {
        record.text = codec.open(stored, key);
        const parsed = JSON.parse(record.text) as unknown;
        // A record is a run of consecutive sequences (one message in data dirs of older versions).
        record.messages = Array.isArray(parsed) ? parsed.length : 1;
      } catch (error) {
        record.reason = unreadableReason(error); // CFN_ERR_KEY_FILE propagates: refuse the start
      }
      const list = perDest.get(dest) ?? [];
      list.push(record);
      perDest.set(dest, list);
    }
    const ops: Op[] = [];
    let deadLettered = 0;
    for (const [dest, records] of perDest) {
      if (!records.some((record) => record.reason !== undefined)) continue;
      let next = records[0].first;
      for (const record of records) {
        ops.push({ type: "del", key: record.key });
        if (record.reason !== undefined) {
          deadLettered++;
          const dead = { reason: record.reason, stored: record.stored, at: new Date().toISOString() };
          ops.push({
            type: "put",
            key: `x!${dest}!${String(record.first).padStart(SEQ_DIGITS, "0")}`,
            value: JSON.stringify(dead),
          });
          logger.error("spooled messages cannot be decrypted; moved to the spool's dead letters", {
            dest,
            first: record.first,
            reason: record.reason,
          });
          continue;
        }
        const key = outboundKey(dest, next);
        ops.push({ type: "put", key, value: codec.seal(record.text as string, key) });
        next += record.messages as number;
      }
      // A new stream (below): numbering starts over, so the reservation ends where the runs do.
      ops.push({ type: "put", key: `n!${dest}`, value: String(next) });
      ops.push({ type: "put", key: `r!${dest}`, value: String(next - 1) });
    }
    if (deadLettered > 0) {
      ops.push({ type: "put", key: "meta!stream", value: randomUUID() });
      // In one batch the last operation on a key wins: a renumbered record's put always comes
      // after the delete of the record that held that sequence before (new seq ≤ old seq).
      await db.batch(ops, { sync: true });
    }
    return deadLettered;
  } finally {
    await closeLevel(db, resolved);
  }
}
