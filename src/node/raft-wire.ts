// Work-around for a transport bug (see test/cluster/transport-leader-transfer.test.ts): the
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

/** Before Transport.send: copies the leaderTransfer flag of votes into their context. */
export function encodeForWire(messages: Message[]): Message[] {
  let changed: Message[] | undefined;
  for (let i = 0; i < messages.length; i++) {
    const message = messages[i];
    if (!isVote(message) || !message.leaderTransfer || message.context) continue;
    changed ??= messages.slice();
    changed[i] = { ...message, context: TRANSFER_MARKER };
  }
  return changed ?? messages;
}

/** After Transport.onMessages: restores the flag and removes the marker. */
export function decodeFromWire(message: Message): Message {
  if (!isVote(message) || !isMarker(message.context)) return message;
  const { context: _marker, ...rest } = message;
  return { ...rest, leaderTransfer: true };
}
