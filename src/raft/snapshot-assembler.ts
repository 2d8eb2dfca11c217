// The follower's side of chunked snapshot install: chunks of one snapshot must arrive in order
// from one leader; anything else discards the partial snapshot (the leader retries after the
// transport reports failure via reportSnapshot). A completed snapshot is handed back whole.

import type { Message, NodeId, Snapshot } from "./types.js";

export class SnapshotAssembler {
  private from: NodeId = "";
  private term = 0;
  private index = 0;
  private total = 0;
  private received = 0;
  private parts: Uint8Array[] = [];

  /** Feeds one Snap message; returns the whole snapshot when its last chunk arrives. */
  accept(message: Message): Snapshot | undefined {
    const snapshot = message.snapshot;
    if (!snapshot) return undefined;
    const chunk = message.snapshotChunk;
    if (!chunk) return snapshot; // sent whole
    const { index } = snapshot.metadata;
    if (chunk.offset === 0) {
      this.from = message.from;
      this.term = message.term;
      this.index = index;
      this.total = chunk.total;
      this.received = 0;
      this.parts = [];
    } else if (
      this.from !== message.from ||
      this.term !== message.term ||
      this.index !== index ||
      this.total !== chunk.total ||
      this.received !== chunk.offset
    ) {
      this.reset(); // a gap, a duplicate or a different snapshot: start over
      return undefined;
    }
    this.parts.push(snapshot.data);
    this.received += snapshot.data.byteLength;
    if (!chunk.last) return undefined;
    if (this.received !== this.total) {
      this.reset();
      return undefined;
    }
    const data = new Uint8Array(this.total);
    let offset = 0;
    for (const part of this.parts) {
      data.set(part, offset);
      offset += part.byteLength;
    }
    this.reset();
    return { metadata: snapshot.metadata, data };
  }

  reset(): void {
    this.from = "";
    this.term = 0;
    this.index = 0;
    this.total = 0;
    this.received = 0;
    this.parts = [];
  }

  /** Bytes buffered for a snapshot in progress (for status and tests). */
  bufferedBytes(): number {
    return this.received;
  }
}

/** Splits a snapshot into Snap messages of at most `chunkBytes` bytes of data each. */
export function chunkSnapshot(
  base: Omit<Message, "snapshot" | "snapshotChunk">,
  snapshot: Snapshot,
  chunkBytes: number,
): Message[] {
  const total = snapshot.data.byteLength;
  const messages: Message[] = [];
  let offset = 0;
  do {
    const end = Math.min(total, offset + chunkBytes);
    messages.push({
      ...base,
      snapshot: { metadata: snapshot.metadata, data: snapshot.data.subarray(offset, end) },
      snapshotChunk: { offset, total, last: end === total },
    });
    offset = end;
  } while (offset < total);
  return messages;
}
