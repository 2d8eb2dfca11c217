// The one registry of operating errors (STYLE.md item 6). A broken invariant is a bug and uses
// `assert`; an expected failure (bad input, full inbox, lost peer) throws a CfnError whose code is
// listed here and documented in docs/ERRORS.md. test/errors.test.ts keeps the two in step.
//
// To add a code: add one line here (keep the groups), and one row in docs/ERRORS.md.

export const ERROR_CODES = {
  // configuration
  CFN_ERR_CONFIG_INVALID: "A setting is missing, of the wrong type, or outside its allowed range",
  CFN_ERR_CONFIG_FILE: "A configuration file cannot be read or parsed",
  CFN_ERR_USAGE: "The command line is malformed: an unknown command or option, a missing or extra argument",

  // local bus
  CFN_ERR_INVALID_AGENT_ID: "An agent id is empty, too long, or has characters outside [A-Za-z0-9._-]",
  CFN_ERR_INBOX_FULL: "The receiver's inbox holds inboxDepthMax messages; nothing was written",
  CFN_ERR_MESSAGE_TOO_LARGE: "An encoded message is larger than messageBytesMax",
  CFN_ERR_BATCH_TOO_LARGE: "A batch holds more than batchMessagesMax messages",
  CFN_ERR_INVALID_MESSAGE: "A message on the bus or from a caller is malformed",
  CFN_ERR_UNKNOWN_AGENT: "No mailbox exists for the agent",
  CFN_ERR_TIMEOUT: "A deadline passed before the operation could finish",
  CFN_ERR_CLOSED: "The component was closed and takes no more work",
  CFN_ERR_BUS_IO:
    "The bus directory could not be read or written (ENOSPC, EROFS, EMFILE, ...); the errno is in details.errno",

  // raft
  CFN_ERR_PROPOSAL_DROPPED:
    "A proposal was dropped: no leader, a transfer in progress, or too many uncommitted bytes",
  CFN_ERR_NOT_LEADER: "The request needs the leader and this node is not it",
  CFN_ERR_RAFT_CONFIG: "A Raft limit is out of range or inconsistent with another",
  CFN_ERR_CONF_CHANGE: "A membership change is not allowed now (one is pending, or it would lose quorum)",
  CFN_ERR_LEARNER_NOT_CAUGHT_UP:
    "A learner cannot be promoted yet: the leader has not seen it replicating close to the log's end",

  // storage
  CFN_ERR_STORAGE: "A store of the data dir failed to read or write, or the data dir cannot be used",
  CFN_ERR_COMPACTED: "The requested log index was compacted into a snapshot",
  CFN_ERR_UNAVAILABLE: "Something asked for is not there (yet): a log index, an unfinished round to resume",
  CFN_ERR_DATA_DIR_FOREIGN: "The data dir belongs to another cluster or node",
  CFN_ERR_DATA_DIR_LOCKED: "The data dir is already open, in this process or in another one",

  // transport
  CFN_ERR_FRAME_TOO_LARGE: "A peer sent a frame larger than frameBytesMax",
  CFN_ERR_BAD_FRAME: "A peer sent a frame that does not decode to a valid message",
  CFN_ERR_AUTH: "A peer presented a wrong cluster token or an unknown node id",
  CFN_ERR_PEER_UNREACHABLE: "A peer could not be reached",

  // cluster node
  CFN_ERR_ROUTING_REFUSED:
    "The replicated routing state refused a command (a limit reached, an unknown member or team, a stale epoch)",
  CFN_ERR_NODE_REMOVED:
    "This node was removed from the cluster: it stops, and its data dir is not used again (start with a fresh one and --join)",

  // coordination
  CFN_ERR_TOPOLOGY_INVALID: "A topology (file, flags or CFN_TOPOLOGY) is malformed or outside its limits",
  CFN_ERR_SWARM_BUSY:
    "A local swarm is in use by another process: a round runs on it (or a stop), or a spawn of that name is under way",

  // security
  CFN_ERR_FORBIDDEN:
    "The caller's token is valid but may not do this: its roles lack the permission, the agent is outside its scope, or a member's URLs change without the cluster token",
  CFN_ERR_KEY_FILE:
    "The encryption key file is missing, not 32 bytes, readable by others, or lacks the key of a stored record",
  CFN_ERR_DECRYPT:
    "A record stored encrypted failed authentication (altered on disk or moved to another key)",
  CFN_ERR_AUDIT_TAMPERED: "The audit log's hash chain is broken: an entry was changed, inserted or removed",
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/** An expected operating error with a stable code; `details` carries machine-readable context. */
export class CfnError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message?: string, details: Record<string, unknown> = {}) {
    super(message ?? ERROR_CODES[code]);
    this.name = "CfnError";
    this.code = code;
    this.details = details;
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, ...this.details };
  }
}

export function isCfnError(error: unknown, code?: ErrorCode): error is CfnError {
  return error instanceof CfnError && (code === undefined || error.code === code);
}

/** Invariant check: a failure is a bug, never an operating error. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`invariant violated: ${message}`);
}
