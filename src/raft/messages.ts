// Message construction and classification helpers.

import { type Message, MessageType, type NodeId } from "./types.js";

/** A message with every field defaulted; `term` 0 means "fill in the sender's term". */
export function makeMessage(fields: Partial<Message> & { type: MessageType }): Message {
  return {
    from: "",
    to: "",
    term: 0,
    index: 0,
    logTerm: 0,
    entries: [],
    commit: 0,
    reject: false,
    rejectHint: 0,
    ...fields,
  };
}

const LOCAL_TYPES: ReadonlySet<MessageType> = new Set([
  MessageType.Hup,
  MessageType.Beat,
  MessageType.CheckQuorum,
  MessageType.SnapStatus,
  MessageType.Unreachable,
]);

const RESPONSE_TYPES: ReadonlySet<MessageType> = new Set([
  MessageType.AppResp,
  MessageType.VoteResp,
  MessageType.PreVoteResp,
  MessageType.HeartbeatResp,
  MessageType.Unreachable,
  MessageType.SnapStatus,
]);

/** Messages the core generates for itself; never accepted from the network. */
export function isLocalMessage(type: MessageType): boolean {
  return LOCAL_TYPES.has(type);
}

export function isResponseMessage(type: MessageType): boolean {
  return RESPONSE_TYPES.has(type);
}

export function voteResponseType(type: MessageType): MessageType {
  return type === MessageType.PreVote ? MessageType.PreVoteResp : MessageType.VoteResp;
}

/** One-line rendering used by the scenario tests and debug logs. */
export function describeMessage(m: Message): string {
  let text = `${m.from}->${m.to} ${m.type} term=${m.term}`;
  const t = m.type;
  if (t === MessageType.App || t === MessageType.Propose) {
    text += ` log=${m.logTerm}/${m.index} commit=${m.commit}`;
    if (m.entries.length > 0) text += ` entries=[${m.entries.map(describeEntryShort).join(" ")}]`;
  } else if (t === MessageType.AppResp) {
    text += ` index=${m.index}`;
    if (m.reject) text += ` reject hint=${m.logTerm}/${m.rejectHint}`;
  } else if (t === MessageType.Vote || t === MessageType.PreVote) {
    text += ` last=${m.logTerm}/${m.index}`;
    if (m.leaderTransfer) text += " transfer";
  } else if (t === MessageType.VoteResp || t === MessageType.PreVoteResp) {
    if (m.reject) text += " rejected";
  } else if (t === MessageType.Heartbeat) {
    text += ` commit=${m.commit}`;
  } else if (t === MessageType.Snap && m.snapshot) {
    const { index, term } = m.snapshot.metadata;
    text += ` snap=${term}/${index}`;
    if (m.snapshotChunk) {
      const c = m.snapshotChunk;
      text += ` chunk=${c.offset}+${m.snapshot.data.byteLength}/${c.total}${c.last ? " last" : ""}`;
    }
  } else if (t === MessageType.ReadIndexResp) {
    text += ` index=${m.index}`;
  }
  if (m.context && m.context.byteLength > 0 && t !== MessageType.App) text += ` ctx=${decodeText(m.context)}`;
  return text;
}

const textDecoder = new TextDecoder();
function decodeText(bytes: Uint8Array): string {
  return textDecoder.decode(bytes);
}

function describeEntryShort(e: { term: number; index: number; type: number; data: Uint8Array }): string {
  const payload = e.type === 1 ? "conf" : e.data.byteLength === 0 ? "" : `"${decodeText(e.data)}"`;
  return `${e.term}/${e.index}${payload ? ` ${payload}` : ""}`;
}

export function isNone(id: NodeId): boolean {
  return id === "";
}
