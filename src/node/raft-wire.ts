// Two work-arounds at the boundary between the Raft core and the Transport port.
//
// 1. Relayed messages. The core forwards a proposal or ReadIndex request it cannot serve to the
//    leader it knows, keeping the original `from` (as etcd does). When that request was itself
//    forwarded to this node by a peer that took it for the leader, the relayed copy carries the
//    peer's id — but Transport.send requires `from === nodeId` (an assert: the host would crash)
//    and receivers check `from` against the connected peer. Such messages are dropped here; the
//    original requester times out and retries, as with any lost message. See
//    test/cluster/raft-relay.test.ts. A follower's TransferLeader to another node is relayed the
//    same way (`from` is the transferee) and never arrives: the node layer sends a transfer asked
//    of a follower to the leader's API instead (ClusterNode.transferLeadership).
//
// 2. Work-around for a transport bug (see test/cluster/transport-leader-transfer.test.ts): the
// frame parser of src/transport drops Message.leaderTransfer, so a transferee's Vote arrives as
// a plain vote, voters inside the leader's lease ignore it and leadership transfer fails. Until
// the parser keeps the field, the host carries the flag in `context`, which survives the wire
// and which Vote/PreVote messages do not otherwise use. Harmless once the transport is fixed.

import { type Message, MessageType } from "../raft/index.js";

const TRANSFER_MARKER = new TextEncoder().encode("cfn:leader-transfer");

function isVote(message: Message): boolean {
  return message.type === MessageType.Vote || message.type === MessageType.PreVote;
}

function isMarker(context: Uint8Array | undefined): boolean {
  if (!context || context.byteLength !== TRANSFER_MARKER.byteLength) return false;
  for (let i = 0; i < context.byteLength; i++) if (context[i] !== TRANSFER_MARKER[i]) return false;
  return true;
}

/** Before Transport.send: drops relayed messages (1) and copies the leaderTransfer flag of
 *  votes into their context (2). Returns the input array when nothing changes. */
export function encodeForWire(messages: Message[], selfId: string): Message[] {
  const needsWork = messages.some(
    (m) => m.from !== selfId || (isVote(m) && m.leaderTransfer === true && !m.context),
  );
  if (!needsWork) return messages;
  const out: Message[] = [];
  for (const message of messages) {
    if (message.from !== selfId) continue;
    if (isVote(message) && message.leaderTransfer === true && !message.context)
      out.push({ ...message, context: TRANSFER_MARKER });
    else out.push(message);
  }
  return out;
}

/** After Transport.onMessages: restores the flag and removes the marker. */
export function decodeFromWire(message: Message): Message {
  if (!isVote(message) || !isMarker(message.context)) return message;
  const { context: _marker, ...rest } = message;
  return { ...rest, leaderTransfer: true };
}
