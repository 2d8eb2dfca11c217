// cfn's Raft core — public API (stable; other layers and the simulator code against it).
//
//   new RawNode({ config: { id, ...limits }, storage, random?, logger? })
//     tick(): void                               one logical tick
//     step(message: Message): void               a message from a peer; CFN_ERR_INVALID_MESSAGE if local/misaddressed
//     campaign(): void                           start an election now
//     propose(data: Uint8Array): void            throws CFN_ERR_PROPOSAL_DROPPED
//     proposeConfChange(cc: ConfChange): void    throws CFN_ERR_PROPOSAL_DROPPED / CFN_ERR_CONF_CHANGE
//     readIndex(context: Uint8Array): void       → a ReadState in a later Ready; throws CFN_ERR_NOT_LEADER
//     transferLeader(to: NodeId): void
//     applyConfChange(cc: ConfChange): ConfState  call when applying a committed conf change entry
//     reportUnreachable(id: NodeId): void
//     reportSnapshot(id: NodeId, ok: boolean): void
//     hasReady(): boolean
//     ready(): Ready                             persist → send → apply, then:
//     advance(): void
//     status(): RaftStatus                       id, term, role, leader, commit, applied, progress
//
//   Storage (read port), MemoryStorage (append, setHardState, applySnapshot, createSnapshot,
//   compact; MemoryStorage.bootstrap(conf) for a new cluster's founders).
//   RaftConfig + DEFAULT_RAFT_CONFIG + validateConfig (CFN_ERR_RAFT_CONFIG, details.field).
//   encodeConfChange / decodeConfChange: the data of EntryType.ConfChange entries.
//   seededRandom(seed): a deterministic RandomSource.
//
// The Ready contract (see types.ts): hardState, snapshot, then entries are persisted (one
// batch, synced when mustSync) BEFORE any of messages is sent; committedEntries may be applied
// after the persist step; advance() is called before the next ready(). On restart pass
// config.applied; the core re-applies conf changes logged after the stored snapshot.

export { decodeConfChange, describeConfChange, encodeConfChange } from "./confchange.js";
/** Alias kept for readers coming from etcd: RaftConfig is the Config. */
export type { RaftConfig as Config } from "./config.js";
export {
  DEFAULT_RAFT_CONFIG,
  type RaftConfig,
  type ReadOnlyOption,
  resolveConfig,
  validateConfig,
} from "./config.js";
export { describeMessage, isLocalMessage, isResponseMessage, makeMessage } from "./messages.js";
export type { ProgressState } from "./progress.js";
export type { RaftLogger } from "./raft.js";
export { hashNodeId, type RandomSource, seededRandom } from "./random.js";
export { type PeerProgress, type RaftStatus, RawNode, type RawNodeOptions } from "./raw-node.js";
export {
  emptyConfState,
  emptyHardState,
  emptySnapshot,
  type InitialState,
  MemoryStorage,
  type Storage,
} from "./storage.js";
export * from "./types.js";
