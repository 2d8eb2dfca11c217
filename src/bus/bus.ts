// The bus of one host: opens <root>/<name>, writes messages into agents' inboxes (maildir: write
// to tmp/, rename into inbox/), enforces the limits, reports status, and opens mailboxes.
// Sends are synchronous on purpose: sync fs calls on tmpfs cost a few microseconds, a promise
// round trip per file would cost more than the write itself.

import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { describeIssues } from "../config/load.js";
import { type BusConfig, busSchema } from "../config/schema.js";
import { CfnError, isCfnError } from "../errors.js";
import { type Logger, silentLogger } from "../obs/logger.js";
import { Metrics } from "../obs/metrics.js";
import { isValidAgentId, validateAgentId } from "./agent-id.js";
import { type DepthEstimate, fitsAfterCount, freshEstimate, mustRecount } from "./backpressure.js";
import { busIoError, withBusIoError } from "./bus-io-error.js";
import { type BusMetrics, createBusMetrics, type InboxDepthSource, OverflowReporter } from "./bus-metrics.js";
import { nextArrivalUs, UniqueNames, wallClockUs } from "./clock.js";
import {
  type Envelope,
  encodeEnvelope,
  encodeMessageFile,
  headersProblem,
  isValidMessageId,
  isValidMessageType,
  joinBatchFile,
  PROTOCOL_VERSION,
} from "./envelope.js";
import { chooseFileIo, type FileIo } from "./file-io.js";
import { type AgentPaths, BusLayout, DIRECTORY_MODE, FILE_MODE, openBusDirectory } from "./layout.js";
import { Mailbox, type MailboxOptions } from "./mailbox.js";
import { countOfEntry, formatQueuedName, PRIORITY_DIGIT, type Priority } from "./names.js";
import { SpareFile, sweepStaleSpares } from "./spare.js";

/** What a caller sends; the bus fills in the rest of the envelope. */
export interface OutgoingMessage {
  /** Application message type ([A-Za-z0-9._:/-], 1 to 128 characters). */
  type: string;
  /** Any JSON-serialisable value; undefined is sent as null. */
  payload?: unknown;
  /** Default "normal". High is delivered before normal, normal before low. */
  priority?: Priority;
  /** String headers, e.g. { traceparent: "00-…" }. */
  headers?: Record<string, string>;
  /** Message id; default a random UUID. Give one to make retries idempotent downstream. */
  id?: string;
}

/**
 * A message forwarded from another host's bus (cross-node delivery): it keeps the per-sender
 * sequence its sender's bus gave it, so the file written here is as long as the sender's was and
 * a message that fit the sender's `messageBytesMax` fits here too.
 */
export interface ForwardedMessage extends OutgoingMessage {
  /** The sender bus's `seq`; absent (a sender of an older version): this bus assigns one. */
  seq?: number;
}

export interface SendOptions {
  /**
   * How long to wait for room when the inbox is full, in ms (capped by sendWaitMsMax). 0 (the
   * default) refuses at once with CFN_ERR_INBOX_FULL. Only the async send/sendBatch can wait.
   */
  waitMs?: number;
}

export interface SendResult {
  /** Ids of the messages written, in order. */
  ids: string[];
  /** Name of the file written into the inbox. */
  file: string;
}

export interface BusOptions {
  /** Bus settings; missing ones take the defaults of busSchema. */
  config?: Partial<BusConfig>;
  metrics?: Metrics;
  logger?: Logger;
}

/** Per-agent view of the bus, for `cfn status` and dashboards. */
export interface AgentStatus {
  agentId: string;
  shard: number;
  /** Messages waiting in inbox/ (a batch counts its messages). */
  inboxDepth: number;
  /** Messages held by consumers in claimed/. */
  claimed: number;
  /** Files in dead/. */
  deadLetters: number;
  /** Time of the last heartbeat in ms since the epoch; null when the agent never opened a mailbox. */
  lastSeenMs: number | null;
}

export interface BusStatus {
  dir: string;
  shards: number;
  agents: AgentStatus[];
}

export class Bus implements InboxDepthSource {
  readonly config: BusConfig;
  /** <root>/<name>. */
  readonly dir: string;
  readonly layout: BusLayout;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** @internal shared with mailboxes */
  readonly busMetrics: BusMetrics;
  /** @internal */
  readonly uniqueNames = new UniqueNames();
  /** @internal the file steps of send, claim and ack (compiled helper or node:fs) */
  readonly io: FileIo;
  private readonly sequences = new Map<string, number>();
  private readonly depthEstimates = new Map<string, DepthEstimate>();
  /** Log and JSONL lines of refused sends, at most one per inbox per second, counts kept. */
  private readonly overflowReporter: OverflowReporter;
  /** Takes this bus's inboxes out of the registry's cfn_bus_inbox_depth. */
  private readonly removeInboxDepthSource: () => void;
  /** The file the next send writes into, opened after the previous one (src/bus/spare.ts). */
  private readonly spare: SpareFile;
  private closed = false;

  constructor(options: BusOptions = {}) {
    const parsed = busSchema.safeParse({ ...busSchema.parse({}), ...options.config });
    if (!parsed.success) {
      // As loadConfig says it: the field under bus. and what it allows, before anything is opened.
      const issues = parsed.error.issues.map((issue) => ({ ...issue, path: ["bus", ...issue.path] }));
      throw new CfnError("CFN_ERR_CONFIG_INVALID", `invalid configuration: ${describeIssues(issues)}`, {
        field: issues[0]?.path.join("."),
      });
    }
    this.config = parsed.data;
    this.logger = (options.logger ?? silentLogger).child("bus");
    this.metrics = options.metrics ?? new Metrics();
    this.busMetrics = createBusMetrics(this.metrics);
    this.dir = join(this.config.root, this.config.name);
    this.io = chooseFileIo(this.config.nativeIo);
    const shards = withBusIoError(`opening the bus directory ${this.dir}`, () =>
      openBusDirectory(this.dir, this.config.shards, this.uniqueNames.next()),
    );
    if (shards !== this.config.shards) {
      this.logger.warn("bus.conf fixes a different shard count; using it", {
        configured: this.config.shards,
        shards,
      });
    }
    this.layout = new BusLayout(this.dir, shards);
    this.spare = new SpareFile(this.dir, this.io, () => this.uniqueNames.next());
    const swept = sweepStaleSpares(this.dir);
    if (swept > 0) this.logger.info("removed spare files of exited processes", { files: swept });
    this.overflowReporter = new OverflowReporter((agentId, refused, suppressed, depth) =>
      this.reportOverflow(agentId, refused, suppressed, depth),
    );
    this.removeInboxDepthSource = this.busMetrics.addInboxDepthSource(this);
  }

  /** Writes one message into `to`'s inbox, or throws (INBOX_FULL, MESSAGE_TOO_LARGE, INVALID_*). */
  sendSync(from: string, to: string, message: OutgoingMessage): SendResult {
    return this.sendMessage(from, to, message, true, false);
  }

  /**
   * sendSync of a message forwarded from another node, keeping its sender's `seq`. A failing bus
   * directory is CFN_ERR_BUS_IO as for any send: the node's delivery code retries it
   * (isBusFailure) and dead-letters only a message the bus refuses.
   */
  sendForwardedSync(from: string, to: string, message: ForwardedMessage): SendResult {
    return this.sendMessage(from, to, message, true, true);
  }

  private sendMessage(
    from: string,
    to: string,
    message: OutgoingMessage,
    countOverflow: boolean,
    forwarded: boolean,
  ): SendResult {
    this.assertOpen();
    validateAgentId(from);
    validateAgentId(to);
    const sequenceBefore = this.sequences.get(from);
    try {
      const envelope = this.envelope(from, to, message, forwarded);
      const text = this.encodeSingle(envelope);
      const file = this.deliverFile(to, envelope.priority, 1, text, countOverflow);
      return { ids: [envelope.id], file };
    } catch (error) {
      this.restoreSequence(from, sequenceBefore);
      throw busIoError(error, `sending to ${to}`);
    }
  }

  /** The text of a single-message file, checked against messageBytesMax. */
  private encodeSingle(envelope: Envelope): string {
    const text = encodeMessageFile(envelope);
    // UTF-8 takes at most 3 bytes per UTF-16 unit: count bytes only when it could matter.
    if (
      text.length * 3 > this.config.messageBytesMax &&
      Buffer.byteLength(text) > this.config.messageBytesMax
    ) {
      throw new CfnError(
        "CFN_ERR_MESSAGE_TOO_LARGE",
        `message of ${Buffer.byteLength(text)} bytes exceeds messageBytesMax ${this.config.messageBytesMax}`,
        {
          bytes: Buffer.byteLength(text),
          messageBytesMax: this.config.messageBytesMax,
        },
      );
    }
    return text;
  }

  /**
   * Writes several messages to one inbox as ONE batch file: all are queued or none (atomic per
   * inbox). The batch is queued at the priority of its first message.
   */
  sendBatchSync(from: string, to: string, messages: OutgoingMessage[]): SendResult {
    return this.sendBatchMessages(from, to, messages, true, false);
  }

  /** sendBatchSync of messages forwarded from another node (errors as sendForwardedSync). */
  sendForwardedBatchSync(from: string, to: string, messages: ForwardedMessage[]): SendResult {
    return this.sendBatchMessages(from, to, messages, true, true);
  }

  private sendBatchMessages(
    from: string,
    to: string,
    messages: OutgoingMessage[],
    countOverflow: boolean,
    forwarded: boolean,
  ): SendResult {
    this.assertOpen();
    validateAgentId(from);
    validateAgentId(to);
    if (!Array.isArray(messages) || messages.length === 0) {
      throw new CfnError("CFN_ERR_INVALID_MESSAGE", "a batch needs at least one message");
    }
    if (messages.length > this.config.batchMessagesMax) {
      throw new CfnError(
        "CFN_ERR_BATCH_TOO_LARGE",
        `batch of ${messages.length} exceeds batchMessagesMax ${this.config.batchMessagesMax}`,
        {
          messages: messages.length,
          batchMessagesMax: this.config.batchMessagesMax,
        },
      );
    }
    const sequenceBefore = this.sequences.get(from);
    try {
      return this.sendBatchEnvelopes(
        to,
        messages.map((message) => this.envelope(from, to, message, forwarded)),
        countOverflow,
      );
    } catch (error) {
      this.restoreSequence(from, sequenceBefore);
      throw busIoError(error, `sending a batch to ${to}`);
    }
  }

  private sendBatchEnvelopes(to: string, envelopes: Envelope[], countOverflow: boolean): SendResult {
    const text = this.encodeBatch(envelopes);
    const file = this.deliverFile(to, envelopes[0].priority, envelopes.length, text, countOverflow);
    return { ids: envelopes.map((envelope) => envelope.id), file };
  }

  /** The text of a batch file, each message checked against messageBytesMax. */
  private encodeBatch(envelopes: Envelope[]): string {
    // Encode each envelope once: its size is checked alone, then the parts are joined.
    const bytesMax = this.config.messageBytesMax;
    const parts = envelopes.map(encodeEnvelope);
    for (let index = 0; index < parts.length; index++) {
      const part = parts[index];
      // UTF-8 takes at most 3 bytes per UTF-16 unit: count bytes only when it could matter.
      if (part.length * 3 + 1 > bytesMax) {
        const bytes = Buffer.byteLength(part) + 1;
        if (bytes > bytesMax) {
          throw new CfnError(
            "CFN_ERR_MESSAGE_TOO_LARGE",
            `batch message ${envelopes[index].id} of ${bytes} bytes exceeds messageBytesMax ${bytesMax}`,
            {
              bytes,
              messageBytesMax: bytesMax,
            },
          );
        }
      }
    }
    return joinBatchFile(parts);
  }

  /**
   * @internal Writes forwarded messages as ONE file (a batch when more than one) into `dir`, a
   * node's park of messages waiting for room in `to`'s inbox (src/node/delivery/park.ts): named
   * as the inbox would name it, not counted against inboxDepthMax. Written as `.<name>` and
   * renamed, so `dir` only ever shows whole files. admitParked() moves it into the inbox.
   */
  parkForwarded(
    dir: string,
    from: string,
    to: string,
    messages: ForwardedMessage[],
  ): { name: string; count: number } {
    this.assertOpen();
    validateAgentId(from);
    validateAgentId(to);
    if (messages.length === 0 || messages.length > this.config.batchMessagesMax)
      throw new CfnError(
        "CFN_ERR_BATCH_TOO_LARGE",
        `a parked file holds 1 to ${this.config.batchMessagesMax} messages`,
      );
    const sequenceBefore = this.sequences.get(from);
    let envelopes: Envelope[];
    let text: string;
    try {
      envelopes = messages.map((message) => this.envelope(from, to, message, true));
      text = envelopes.length === 1 ? this.encodeSingle(envelopes[0]) : this.encodeBatch(envelopes);
    } catch (error) {
      this.restoreSequence(from, sequenceBefore);
      throw error;
    }
    const name = formatQueuedName({
      priority: envelopes[0].priority,
      arrivalUs: nextArrivalUs(),
      count: envelopes.length,
      unique: this.uniqueNames.next(),
      deliveries: 0,
    });
    const tmpPath = join(dir, `.${name}`);
    try {
      mkdirSync(dir, { recursive: true, mode: DIRECTORY_MODE });
      writeFileSync(tmpPath, text, { mode: FILE_MODE });
      renameSync(tmpPath, join(dir, name));
    } catch (error) {
      this.restoreSequence(from, sequenceBefore);
      try {
        rmSync(tmpPath, { force: true });
      } catch {
        // Left for the park's sweep of dot files at start (a failing disk may refuse this too).
      }
      throw busIoError(error, `parking for ${to}`);
    }
    return { name, count: envelopes.length };
  }

  /**
   * @internal Moves a file parkForwarded() wrote at `path` into `to`'s inbox under its name when
   * the inbox has room for its `count` messages. False when the inbox is full; true once moved
   * (or when the file is gone: moved by someone else). A file of more than inboxDepthMax messages
   * (parked before a restart with a lower inboxDepthMax) moves in once the inbox is empty: it could
   * never fit otherwise, and the inbox then holds at most one parked file's worth over its limit.
   */
  admitParked(to: string, path: string, name: string, count: number): boolean {
    this.assertOpen();
    const paths = this.layout.agent(to);
    this.layout.ensureAgent(paths);
    try {
      this.admit(paths, count, false, Math.min(count, this.config.inboxDepthMax));
    } catch (error) {
      if (isCfnError(error, "CFN_ERR_INBOX_FULL")) return false;
      throw error;
    }
    for (let attempt = 0; ; attempt++) {
      try {
        renameSync(path, `${paths.inbox}/${name}`);
        break;
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        // The mailbox was removed under us (agent shut down): recreate it and move again.
        if (code === "ENOENT" && attempt < 2 && existsSync(path)) {
          this.layout.ensureAgent(paths, true);
          continue;
        }
        this.forgetEstimate(to, count);
        if (code === "ENOENT") return true;
        throw error;
      }
    }
    this.busMetrics.countSent(count);
    return true;
  }

  /** sendSync that may wait for room in a full inbox (options.waitMs). */
  async send(
    from: string,
    to: string,
    message: OutgoingMessage,
    options: SendOptions = {},
  ): Promise<SendResult> {
    return this.retryWhileFull((last) => this.sendMessage(from, to, message, last, false), options);
  }

  /** sendBatchSync that may wait for room in a full inbox (options.waitMs). */
  async sendBatch(
    from: string,
    to: string,
    messages: OutgoingMessage[],
    options: SendOptions = {},
  ): Promise<SendResult> {
    return this.retryWhileFull((last) => this.sendBatchMessages(from, to, messages, last, false), options);
  }

  /** Opens (creating if needed) the mailbox of `agentId` to receive its messages. */
  openMailbox(agentId: string, options: MailboxOptions = {}): Mailbox {
    this.assertOpen();
    validateAgentId(agentId);
    return withBusIoError(`opening the mailbox of ${agentId}`, () => new Mailbox(this, agentId, options));
  }

  /** Messages queued + claimed in an agent's inbox, counted now (two readdirs). */
  inboxDepth(agentId: string): number {
    validateAgentId(agentId);
    const paths = this.layout.agent(agentId);
    return sumCounts(safeReaddir(paths.inbox)) + sumCounts(safeReaddir(paths.claimed));
  }

  /** Status of one agent; undefined when it has no directory on this bus. */
  agentStatus(agentId: string): AgentStatus | undefined {
    validateAgentId(agentId);
    const paths = this.layout.agent(agentId);
    let inboxDepth: number;
    try {
      inboxDepth = sumCounts(readdirSync(paths.inbox));
    } catch {
      return undefined;
    }
    const claimed = sumCounts(safeReaddir(paths.claimed));
    const deadLetters = safeReaddir(paths.dead).filter((name) => !name.endsWith(".reason")).length;
    let lastSeenMs: number | null = null;
    try {
      lastSeenMs = statSync(paths.heartbeat).mtimeMs;
    } catch {
      lastSeenMs = null;
    }
    return { agentId, shard: paths.shard, inboxDepth, claimed, deadLetters, lastSeenMs };
  }

  /** Ids of every agent with a directory on this bus, sorted. */
  listAgents(): string[] {
    const agents: string[] = [];
    for (const shard of safeReaddir(this.dir)) {
      if (!/^[0-9]+$/.test(shard)) continue;
      for (const agentId of safeReaddir(join(this.dir, shard)))
        if (isValidAgentId(agentId)) agents.push(agentId);
    }
    return agents.sort();
  }

  /** Status of every agent of the bus. */
  status(): BusStatus {
    const agents: AgentStatus[] = [];
    for (const agentId of this.listAgents()) {
      const status = this.agentStatus(agentId);
      if (status) agents.push(status);
    }
    return { dir: this.dir, shards: this.layout.shards, agents };
  }

  /**
   * Stops taking sends, writes the overflow counts still held back to the log and the JSONL
   * stream, and leaves cfn_bus_inbox_depth. Mailboxes are closed by their owners.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.spare.discard();
    this.overflowReporter.close();
    this.removeInboxDepthSource();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private restoreSequence(from: string, sequenceBefore: number | undefined): void {
    if (sequenceBefore === undefined) this.sequences.delete(from);
    else this.sequences.set(from, sequenceBefore);
  }

  private assertOpen(): void {
    if (this.closed) throw new CfnError("CFN_ERR_CLOSED", "the bus is closed");
  }

  private envelope(from: string, to: string, message: OutgoingMessage, forwarded: boolean): Envelope {
    if (typeof message !== "object" || message === null)
      throw new CfnError("CFN_ERR_INVALID_MESSAGE", "a message must be an object");
    if (!isValidMessageType(message.type)) {
      throw new CfnError("CFN_ERR_INVALID_MESSAGE", "message type must match [A-Za-z0-9._:/-]{1,128}", {
        type: message.type,
      });
    }
    const priority = message.priority ?? "normal";
    if (PRIORITY_DIGIT[priority] === undefined) {
      throw new CfnError("CFN_ERR_INVALID_MESSAGE", "priority must be high, normal or low", { priority });
    }
    const headers = message.headers ?? {};
    const problem = message.headers === undefined ? undefined : headersProblem(headers);
    if (problem) throw new CfnError("CFN_ERR_INVALID_MESSAGE", problem);
    let id = message.id;
    if (id === undefined) id = randomUUID();
    else if (!isValidMessageId(id))
      throw new CfnError("CFN_ERR_INVALID_MESSAGE", "message id must match [A-Za-z0-9._:-]{1,128}", { id });
    let seq = forwarded ? (message as ForwardedMessage).seq : undefined;
    if (seq === undefined) {
      seq = (this.sequences.get(from) ?? 0) + 1;
      this.sequences.set(from, seq);
    } else if (!Number.isSafeInteger(seq) || seq < 0) {
      throw new CfnError("CFN_ERR_INVALID_MESSAGE", "a forwarded seq must be a non-negative integer", {
        seq,
      });
    }
    return {
      v: PROTOCOL_VERSION,
      id,
      from,
      to,
      type: message.type,
      priority,
      seq,
      ts: wallClockUs(),
      headers,
      payload: message.payload,
    };
  }

  /** The send path: admission, write into tmp/, rename into inbox/. Returns the inbox file name. */
  private deliverFile(
    to: string,
    priority: Priority,
    count: number,
    text: string,
    countOverflow: boolean,
  ): string {
    const paths = this.layout.agent(to);
    this.layout.ensureAgent(paths);
    this.admit(paths, count, countOverflow);
    const name = formatQueuedName({
      priority,
      arrivalUs: nextArrivalUs(),
      count,
      unique: this.uniqueNames.next(),
      deliveries: 0,
    });
    const inboxPath = `${paths.inbox}/${name}`;
    if (this.spare.deliver(inboxPath, text)) {
      this.busMetrics.countSent(count);
      this.spare.refill();
      return name;
    }
    const tmpPath = `${paths.tmp}/${name}`;
    for (let attempt = 0; ; attempt++) {
      try {
        this.io.writeAndRename(tmpPath, inboxPath, text, FILE_MODE);
        break;
      } catch (error) {
        // The mailbox was removed under us (agent shut down): recreate it and write again.
        if ((error as NodeJS.ErrnoException).code !== "ENOENT" || attempt >= 2) {
          this.forgetEstimate(to, count);
          throw error;
        }
        this.layout.ensureAgent(paths, true);
      }
    }
    this.busMetrics.countSent(count);
    // The next send writes into a spare opened now, off its critical path.
    this.spare.refill();
    return name;
  }

  /**
   * Admits `count` messages into an inbox or throws INBOX_FULL. `room` is the room they need, less
   * than `count` only for admitParked's file of more than inboxDepthMax messages.
   */
  private admit(paths: AgentPaths, count: number, countOverflow: boolean, room = count): void {
    const depthMax = this.config.inboxDepthMax;
    let estimate = this.depthEstimates.get(paths.agentId);
    if (mustRecount(estimate, room, depthMax)) {
      estimate = freshEstimate(this.countDepth(paths), depthMax);
      if (this.depthEstimates.size > 10_000) this.depthEstimates.clear();
      this.depthEstimates.set(paths.agentId, estimate);
      if (!fitsAfterCount(estimate.counted, room, depthMax))
        this.refuseFull(paths, estimate.counted, count, countOverflow);
    }
    (estimate as DepthEstimate).sentSinceCount += count;
  }

  private forgetEstimate(agentId: string, count: number): void {
    const estimate = this.depthEstimates.get(agentId);
    if (estimate) estimate.sentSinceCount = Math.max(0, estimate.sentSinceCount - count);
  }

  /** The depth admission counts (a failed listing throws rather than count as empty). */
  private countDepth(paths: AgentPaths): number {
    return sumCounts(readdirOrNone(paths.inbox)) + sumCounts(readdirOrNone(paths.claimed));
  }

  private refuseFull(paths: AgentPaths, depth: number, count: number, countOverflow: boolean): never {
    if (countOverflow) this.countOverflow(paths, depth, count);
    throw new CfnError(
      "CFN_ERR_INBOX_FULL",
      `inbox of ${paths.agentId} holds ${depth} of ${this.config.inboxDepthMax} messages`,
      {
        agentId: paths.agentId,
        depth,
        count,
        inboxDepthMax: this.config.inboxDepthMax,
      },
    );
  }

  private countOverflow(paths: AgentPaths, depth: number, count: number): void {
    this.busMetrics.overflows.inc(count);
    this.overflowReporter.refused(paths.agentId, count, depth);
  }

  /** One line per inbox per second at most (OverflowReporter); the JSONL values sum to the counter. */
  private reportOverflow(agentId: string, refused: number, suppressed: number, depth: number): void {
    this.logger.warn("inbox full, send refused", {
      agent: agentId,
      depth,
      inboxDepthMax: this.config.inboxDepthMax,
      refused,
      suppressed,
    });
    this.metrics.emit("cfn_bus_inbox_overflows_total", refused, { agent: agentId });
  }

  /** Retries a refused send until options.waitMs passes; only the last refusal counts as an overflow. */
  private async retryWhileFull(
    attempt: (last: boolean) => SendResult,
    options: SendOptions,
  ): Promise<SendResult> {
    const waitMs = Math.min(Math.max(0, options.waitMs ?? 0), this.config.sendWaitMsMax);
    const deadline = Date.now() + waitMs;
    let pauseMs = 1;
    for (;;) {
      try {
        return attempt(Date.now() >= deadline);
      } catch (error) {
        if (!(error instanceof CfnError) || error.code !== "CFN_ERR_INBOX_FULL" || waitMs === 0) throw error;
        if (Date.now() >= deadline) {
          // The deadline passed during this attempt: one last, counted attempt.
          return attempt(true);
        }
      }
      await sleep(Math.min(pauseMs, Math.max(1, deadline - Date.now())));
      pauseMs = Math.min(pauseMs * 2, 50);
    }
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * The names in `dir`, none when it does not exist. Any other failure (EMFILE) is thrown: a listing
 * taken for empty would under-count an inbox and admit sends past inboxDepthMax.
 */
function readdirOrNone(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
}

function sumCounts(names: string[]): number {
  let total = 0;
  for (const name of names) total += countOfEntry(name);
  return total;
}
