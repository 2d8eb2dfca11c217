// Pending ReadIndex requests on the leader (the "safe" mode): each request remembers the commit
// index when it arrived and collects heartbeat acknowledgements; once a quorum acknowledged a
// request, it and every request queued before it are ready.

import type { Message, NodeId } from "./types.js";

export interface ReadIndexStatus {
  /** The original request (from a follower or local). */
  request: Message;
  /** The leader's commit index when the request arrived. */
  index: number;
  acks: Set<NodeId>;
}

/** Request contexts are compared as bytes; keyed by their hex form. */
export function contextKey(context: Uint8Array): string {
  let key = "";
  for (const byte of context) key += byte.toString(16).padStart(2, "0");
  return key;
}

export class ReadOnly {
  private readonly pending = new Map<string, ReadIndexStatus>();
  private readonly queue: string[] = [];

  /** Queues a read request at commit index `index`. A duplicate context is ignored. */
  addRequest(index: number, request: Message): void {
    const key = contextKey(request.context ?? new Uint8Array(0));
    if (this.pending.has(key)) return;
    this.pending.set(key, { request, index, acks: new Set() });
    this.queue.push(key);
  }

  /** Records `from`'s acknowledgement of the heartbeat carrying `context`; returns the acks so
   *  far, or undefined for an unknown context. */
  recvAck(from: NodeId, context: Uint8Array): Set<NodeId> | undefined {
    const status = this.pending.get(contextKey(context));
    if (!status) return undefined;
    status.acks.add(from);
    return status.acks;
  }

  /** Removes and returns every request up to and including the one with `context`. */
  advance(context: Uint8Array): ReadIndexStatus[] {
    const key = contextKey(context);
    const position = this.queue.indexOf(key);
    if (position < 0) return [];
    const keys = this.queue.splice(0, position + 1);
    const done: ReadIndexStatus[] = [];
    for (const k of keys) {
      const status = this.pending.get(k);
      if (status) done.push(status);
      this.pending.delete(k);
    }
    return done;
  }

  /** Context of the newest pending request, sent with heartbeats. */
  lastPendingRequestContext(): Uint8Array | undefined {
    if (this.queue.length === 0) return undefined;
    return this.pending.get(this.queue[this.queue.length - 1])?.request.context;
  }

  pendingCount(): number {
    return this.queue.length;
  }
}
