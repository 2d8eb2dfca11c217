// The data that crosses the Raft core's boundary: messages between peers, log entries, hard
// state, snapshots and the Ready batch handed to the shell. Plain data only (no classes, no
// Buffers from node:*), so it encodes with msgpackr (useRecords:false) and compares in tests.
//
// Shaped after etcd-io/raft's raftpb, simplified where TypeScript makes it natural.

export type NodeId = string;

export const EntryType = {
  Normal: 0,
  /** data = encoded ConfChange (see ConfChange below) */
  ConfChange: 1,
} as const;
export type EntryType = (typeof EntryType)[keyof typeof EntryType];

export interface Entry {
  term: number;
  index: number;
  type: EntryType;
  /** Opaque application bytes. An empty array is the no-op a new leader appends. */
  data: Uint8Array;
}

/** What must be on stable storage before any message that depends on it is sent. */
export interface HardState {
  term: number;
  /** "" when the node voted for nobody in `term`. */
  vote: NodeId;
  commit: number;
}

/** The membership: voters, learners, and during a joint change the outgoing voters. */
export interface ConfState {
  voters: NodeId[];
  learners: NodeId[];
  /** Non-empty only while in a joint configuration (C_old,new). */
  votersOutgoing: NodeId[];
  /** Learners that become voters when the joint configuration is left. */
  learnersNext: NodeId[];
  /** True when the joint configuration is left automatically once committed. */
  autoLeave: boolean;
}

export interface SnapshotMetadata {
  index: number;
  term: number;
  conf: ConfState;
}

export interface Snapshot {
  metadata: SnapshotMetadata;
  /** The state machine's serialized state at metadata.index. */
  data: Uint8Array;
}

export const ConfChangeType = {
  AddVoter: 0,
  RemoveNode: 1,
  AddLearner: 2,
} as const;
export type ConfChangeType = (typeof ConfChangeType)[keyof typeof ConfChangeType];

export interface ConfChangeSingle {
  type: ConfChangeType;
  nodeId: NodeId;
  /** Free-form context, e.g. the node's address; replicated with the change. */
  context?: string;
}

/**
 * A membership change. One change may be applied directly (simple); several at once use joint
 * consensus. `transition` "auto" leaves the joint state automatically; "explicit" waits for an
 * empty ConfChange from the application.
 */
export interface ConfChange {
  changes: ConfChangeSingle[];
  transition: "auto" | "explicit";
}

export const MessageType = {
  Hup: "hup", // local: start an election
  Beat: "beat", // local: leader sends heartbeats
  Propose: "propose", // local or forwarded proposal
  PreVote: "prevote",
  PreVoteResp: "prevote_resp",
  Vote: "vote",
  VoteResp: "vote_resp",
  App: "app", // append entries
  AppResp: "app_resp",
  Heartbeat: "heartbeat",
  HeartbeatResp: "heartbeat_resp",
  Snap: "snap", // install snapshot (one chunk)
  SnapStatus: "snap_status", // local: transport reports a snapshot send's outcome
  Unreachable: "unreachable", // local: transport reports a peer unreachable
  ReadIndex: "read_index",
  ReadIndexResp: "read_index_resp",
  TransferLeader: "transfer_leader",
  TimeoutNow: "timeout_now",
  CheckQuorum: "check_quorum", // local
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

export interface Message {
  type: MessageType;
  from: NodeId;
  to: NodeId;
  term: number;
  /** App: index of the entry before `entries`; AppResp: the acknowledged (or rejected) index.
   *  Heartbeat: the leader's tick count when sent, echoed in HeartbeatResp (leader lease). */
  index: number;
  /** App: term of the entry at `index`. Vote/PreVote: candidate's last log term. */
  logTerm: number;
  entries: Entry[];
  commit: number;
  reject: boolean;
  /** AppResp on reject: a hint of the follower's last index for fast back-off. */
  rejectHint: number;
  /** Snap: the snapshot; chunked via snapshotChunk. */
  snapshot?: Snapshot;
  /** Snap chunking: offset of this chunk's bytes in snapshot.data and whether it is the last. */
  snapshotChunk?: { offset: number; total: number; last: boolean };
  /** ReadIndex / heartbeats: opaque request context to correlate responses. */
  context?: Uint8Array;
  /** Vote/PreVote: the campaign follows a leadership transfer (TimeoutNow), so voters grant
   *  it even while they still hear from the old leader (they are inside its lease). */
  leaderTransfer?: boolean;
}

/** A linearizable read whose index is now known: apply up to `index`, then read. */
export interface ReadState {
  index: number;
  requestContext: Uint8Array;
}

export type StateRole = "follower" | "pre_candidate" | "candidate" | "leader";

/** Volatile state the application may show (status, tests); not persisted. */
export interface SoftState {
  leader: NodeId;
  role: StateRole;
}

/**
 * What the shell must do, in this order:
 *  1. persist `hardState` (if set), `snapshot` (if set; it replaces the log) and then `entries`
 *     (they follow the snapshot) in one write, synced when `mustSync`;
 *  2. then send `messages`;
 *  3. apply `committedEntries` (and install `snapshot` into the state machine);
 *  4. call advance().
 */
export interface Ready {
  softState?: SoftState;
  hardState?: HardState;
  entries: Entry[];
  snapshot?: Snapshot;
  committedEntries: Entry[];
  messages: Message[];
  readStates: ReadState[];
  /** True when the persist step must be synced (fsync) before `messages` are sent: there are
   *  entries, a snapshot, or a new term or vote. False when only the commit index moved, which
   *  may be written without a sync (it is recovered from the leader after a crash). */
  mustSync: boolean;
}
