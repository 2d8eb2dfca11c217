// Public API of the local bus (src/bus). Everything the CLI, the node daemon and the coordination
// layer use comes from here; the on-disk protocol it speaks is docs/PROTOCOL.md.
//
//   const bus = new Bus({ config: { root, name }, metrics, logger });
//   bus.sendSync("lead", "worker-1", { type: "task", payload: { n: 1 } });          // throws INBOX_FULL
//   await bus.send("lead", "worker-1", { type: "task" }, { waitMs: 5000 });        // waits for room
//   bus.sendBatchSync("lead", "worker-1", [{ type: "task" }, { type: "task" }]);   // one atomic file
//
//   const mailbox = bus.openMailbox("worker-1");            // creates dirs, recovers crashed claims
//   for (const delivery of await mailbox.receive({ timeoutMs: 1000, max: 32 })) {
//     try { handle(delivery.message); mailbox.ack(delivery); }
//     catch (error) { mailbox.nack(delivery, { reason: String(error) }); }      // redelivered, then dead-letter
//   }
//   await mailbox.drain(handle);                  // graceful shutdown: process what is queued …
//   mailbox.close({ removeDirs: true });          // … hand back the rest, remove the empty mailbox
//   await mailbox.shutdown(handle);               // (both in one call)
//
//   bus.status();                                 // per agent: inbox depth, claimed, dead letters, last-seen
//
// Errors are CfnError with codes CFN_ERR_INVALID_AGENT_ID, CFN_ERR_INBOX_FULL,
// CFN_ERR_MESSAGE_TOO_LARGE, CFN_ERR_BATCH_TOO_LARGE, CFN_ERR_INVALID_MESSAGE, CFN_ERR_CLOSED,
// CFN_ERR_BUS_IO (a full, read-only or descriptor-starved bus directory; docs/BUS.md)
// (docs/ERRORS.md).

export { AGENT_ID_LENGTH_MAX, isValidAgentId, shardOf, validateAgentId } from "./agent-id.js";
export { RECOUNT_MESSAGES_MAX } from "./backpressure.js";
export {
  type AgentStatus,
  Bus,
  type BusOptions,
  type BusStatus,
  type ForwardedMessage,
  type OutgoingMessage,
  type SendOptions,
  type SendResult,
} from "./bus.js";
export { posixCksum } from "./cksum.js";
export { type Envelope, EXPIRES_AT_HEADER, PROTOCOL_VERSION } from "./envelope.js";
export {
  type Delivery,
  Mailbox,
  type MailboxOptions,
  type NackOptions,
  type ReceiveOptions,
} from "./mailbox.js";
export { type Priority, parseQueuedName } from "./names.js";
