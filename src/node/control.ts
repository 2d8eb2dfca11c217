// The node-to-node control channel ("node" on the transport): liveness pings, and proposals
// forwarded from followers to the leader (only the leader takes proposals; any node can accept
// a routing change from its agents or API and forward it).
//
//   {t:"ping"}                                   every healthIntervalMs to every member
//   {t:"prop", r:<request id>, c:<command>}      follower → leader
//   {t:"propr", r, ok:true, v:<RoutingResult>}   leader → follower
//   {t:"propr", r, ok:false, code, message}
//
// Frames are validated; a malformed one is counted (cfn_node_bad_frames_total) and dropped.

import { CfnError, ERROR_CODES, type ErrorCode, isCfnError } from "../errors.js";
import type { Logger } from "../obs/logger.js";
import type { Transport } from "../transport/index.js";
import type { NodeMetrics } from "./node-metrics.js";
import type { RaftHost } from "./raft-host.js";
import {
  encodeRoutingCommand,
  type RoutingCommand,
  type RoutingResult,
  validateRoutingCommand,
} from "./routing/commands.js";

export const CONTROL_CHANNEL = "node";

type ControlFrame =
  | { t: "ping" }
  | { t: "prop"; r: number; c: RoutingCommand }
  | { t: "propr"; r: number; ok: true; v: RoutingResult | null }
  | { t: "propr"; r: number; ok: false; code: string; message: string };

export interface ControlOptions {
  nodeId: string;
  host: RaftHost<RoutingResult>;
  transport: Transport;
  logger: Logger;
  metrics: NodeMetrics;
  /** Members to ping (ids other than this node). */
  peers: () => string[];
  healthIntervalMs: number;
  /** A proposal not applied within this time fails with CFN_ERR_TIMEOUT (it may still apply). */
  proposalTimeoutMs: number;
}

interface Pending {
  resolve: (result: RoutingResult) => void;
  reject: (error: unknown) => void;
  timer: NodeJS.Timeout;
}

/** One forwarded attempt waits this long for the leader's answer before trying again. */
const FORWARD_ATTEMPT_TIMEOUT_MS = 1_500;

const RETRYABLE = new Set<string>([
  "CFN_ERR_NOT_LEADER",
  "CFN_ERR_PROPOSAL_DROPPED",
  "CFN_ERR_PEER_UNREACHABLE",
]);

/**
 * A ping tick this many health intervals late means this process itself stalled: liveness is
 * judged afresh from the resume (alive()).
 */
export const STALL_TICKS = 2;

export class ControlPlane {
  private readonly options: ControlOptions;
  private readonly logger: Logger;
  private readonly lastHeardMs = new Map<string, number>();
  /** Since when each member has been heard without a gap of more than STALL_TICKS intervals. */
  private readonly heardSinceMs = new Map<string, number>();
  private readonly startedMs = Date.now();
  /** When this process last resumed from a stall of its own (a pause, a frozen VM), or started. */
  private resumedMs = this.startedMs;
  /** When the ping timer last ran: one overdue by a whole interval means this process stalled. */
  private lastTickMs = this.startedMs;
  private readonly pending = new Map<number, Pending>();
  private nextRequest = 1;
  private pingTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(options: ControlOptions) {
    this.options = options;
    this.logger = options.logger.child("control");
    options.transport.onFrame(CONTROL_CHANNEL, (payload, from) => this.onFrame(payload, from));
  }

  start(): void {
    this.lastTickMs = Date.now();
    this.pingTimer = setInterval(() => this.ping(), this.options.healthIntervalMs);
    this.pingTimer.unref();
  }

  /** Stops pinging: peers see this node go quiet (graceful shutdown, tests). */
  stopPinging(): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = undefined;
  }

  close(): void {
    this.closed = true;
    this.stopPinging();
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer);
      pending.reject(new CfnError("CFN_ERR_CLOSED", "node is stopping"));
      this.pending.delete(id);
    }
  }

  /**
   * Members heard from within `downAfterMs` (this node included). A member never heard since
   * this process started counts as alive for the first `downAfterMs`, so a fresh leader does not
   * declare everyone dead before their first ping arrives. The same holds after a stall of this
   * process (stopped, its VM paused, starved for longer than STALL_TICKS health intervals): what
   * it last heard is stale because it was not listening, not because the members went quiet —
   * their pings wait unread on its sockets — so every member counts as heard at the resume.
   */
  alive(members: Iterable<string>, downAfterMs: number): Set<string> {
    const now = Date.now();
    this.noteStall(now);
    const alive = new Set<string>([this.options.nodeId]);
    for (const id of members) {
      const heard = Math.max(this.lastHeardMs.get(id) ?? this.startedMs, this.resumedMs);
      if (now - heard <= downAfterMs) alive.add(id);
    }
    return alive;
  }

  /** Records a resume when the ping timer is overdue by STALL_TICKS intervals (or was, at its run). */
  private noteStall(now: number): void {
    if (!this.pingTimer) return;
    if (now - this.lastTickMs > STALL_TICKS * this.options.healthIntervalMs) {
      if (this.resumedMs < this.lastTickMs)
        this.logger.info("this node stalled; members get a fresh liveness window", {
          stalledMs: now - this.lastTickMs,
        });
      this.resumedMs = now;
    }
  }

  /** How long `id` has been heard without a gap (0 when it is not being heard now), ms. */
  heardWithoutGapMs(id: string): number {
    const now = Date.now();
    const last = this.lastHeardMs.get(id);
    const since = this.heardSinceMs.get(id);
    if (last === undefined || since === undefined || now - last > STALL_TICKS * this.options.healthIntervalMs)
      return 0;
    return now - since;
  }

  lastHeard(id: string): number | undefined {
    return this.lastHeardMs.get(id);
  }

  /**
   * Replicates a routing command from any node: proposed here when leader, else forwarded to the
   * leader; retried while there is no leader, until proposalTimeoutMs. Settles within that bound:
   * CFN_ERR_TIMEOUT when it has not applied by then ("no leader" in the message when none was
   * known at the end: quorum lost), so an API caller gets an answer before its own timeout.
   */
  async propose(command: RoutingCommand): Promise<RoutingResult> {
    const timeoutMs = this.options.proposalTimeoutMs;
    const deadline = Date.now() + timeoutMs;
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw new CfnError("CFN_ERR_CLOSED", "node is stopping");
      try {
        return await this.proposeOnce(command, deadline);
      } catch (error) {
        // Routing commands are idempotent or fenced (expected epoch, checkpoint seq), so a
        // forwarded proposal whose answer was lost (leader change) is safe to send again.
        const retryable =
          isCfnError(error) && (RETRYABLE.has(error.code) || error.code === "CFN_ERR_TIMEOUT");
        if (!retryable) throw error;
        if (Date.now() + 50 >= deadline) throw this.deadlinePassed(error, timeoutMs);
        await new Promise((resolve) => setTimeout(resolve, Math.min(50 * (attempt + 1), 200)));
      }
    }
  }

  /** The error of a proposal whose deadline passed on a retryable `last` error. */
  private deadlinePassed(last: CfnError, timeoutMs: number): CfnError {
    const leader = this.options.host.leaderHint().leader;
    if (leader && last.code === "CFN_ERR_TIMEOUT") return last;
    return new CfnError(
      "CFN_ERR_TIMEOUT",
      leader
        ? `routing change not applied within ${timeoutMs} ms (leader ${leader}): ${last.message}`
        : `no leader: routing change not applied within ${timeoutMs} ms (is a majority of the members down?)`,
      { leader: leader || undefined, last: last.code },
    );
  }

  private async proposeOnce(command: RoutingCommand, deadline: number): Promise<RoutingResult> {
    const { host } = this.options;
    if (host.isLeader()) {
      // A leader cut off from its quorum keeps the entry uncommitted until RaftHost's own
      // timeout: bounded by the proposal's deadline too (the entry may still apply, as with any
      // timeout). Not per attempt: a slow commit proposed again could be refused as stale.
      const remainingMs = Math.max(1, deadline - Date.now());
      const result = await withTimeout(
        host.propose(encodeRoutingCommand(command)),
        remainingMs,
        () => new CfnError("CFN_ERR_TIMEOUT", `proposal not applied in ${remainingMs} ms`),
      );
      return result ?? { ok: false, error: "no_result" };
    }
    const timeoutMs = Math.min(FORWARD_ATTEMPT_TIMEOUT_MS, deadline - Date.now());
    const leader = host.leaderHint().leader;
    if (!leader) throw new CfnError("CFN_ERR_NOT_LEADER", "no leader is known");
    const id = this.nextRequest++;
    return new Promise<RoutingResult>((resolve, reject) => {
      const timer = setTimeout(
        () => {
          this.pending.delete(id);
          reject(
            new CfnError(
              "CFN_ERR_TIMEOUT",
              `proposal forwarded to ${leader} not answered in ${timeoutMs} ms`,
            ),
          );
        },
        Math.max(1, timeoutMs),
      );
      this.pending.set(id, { resolve, reject, timer });
      try {
        const queued = this.options.transport.sendFrame(leader, CONTROL_CHANNEL, {
          t: "prop",
          r: id,
          c: command,
        });
        if (!queued) throw new CfnError("CFN_ERR_PROPOSAL_DROPPED", `queue to ${leader} is full`);
      } catch (error) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(error);
      }
    });
  }

  private ping(): void {
    const now = Date.now();
    this.noteStall(now);
    this.lastTickMs = now;
    for (const peer of this.options.peers()) {
      try {
        this.options.transport.sendFrame(peer, CONTROL_CHANNEL, { t: "ping" });
      } catch {
        // not (yet) a transport peer
      }
    }
  }

  private onFrame(payload: unknown, from: string): void {
    const frame = parseControlFrame(payload);
    if (!frame) {
      this.options.metrics.badFrames.inc({ channel: CONTROL_CHANNEL, reason: "malformed" });
      this.logger.warn("malformed control frame dropped", { from });
      return;
    }
    const now = Date.now();
    const last = this.lastHeardMs.get(from);
    if (last === undefined || now - last > STALL_TICKS * this.options.healthIntervalMs)
      this.heardSinceMs.set(from, now);
    this.lastHeardMs.set(from, now);
    switch (frame.t) {
      case "ping":
        return;
      case "prop":
        void this.serveForwarded(frame.r, frame.c, from);
        return;
      case "propr": {
        const pending = this.pending.get(frame.r);
        if (!pending) return;
        this.pending.delete(frame.r);
        clearTimeout(pending.timer);
        if (frame.ok) pending.resolve(frame.v ?? { ok: false, error: "no_result" });
        else pending.reject(new CfnError(asErrorCode(frame.code), frame.message));
        return;
      }
    }
  }

  private async serveForwarded(request: number, command: RoutingCommand, from: string): Promise<void> {
    let reply: ControlFrame;
    try {
      if (!this.options.host.isLeader())
        throw new CfnError("CFN_ERR_NOT_LEADER", `${this.options.nodeId} is not the leader`);
      const result = await this.options.host.propose(encodeRoutingCommand(command));
      reply = { t: "propr", r: request, ok: true, v: result ?? null };
    } catch (error) {
      const code = isCfnError(error) ? error.code : "CFN_ERR_INTERNAL";
      reply = {
        t: "propr",
        r: request,
        ok: false,
        code,
        message: (error as Error)?.message ?? String(error),
      };
    }
    try {
      this.options.transport.sendFrame(from, CONTROL_CHANNEL, reply);
    } catch (error) {
      this.logger.debug("proposal reply not sent", { to: from, error });
    }
  }
}

/** `promise`, or `timedOut()` as its rejection after `ms`. */
function withTimeout<T>(promise: Promise<T>, ms: number, timedOut: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(timedOut()), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function asErrorCode(code: string): ErrorCode {
  return Object.hasOwn(ERROR_CODES, code) ? (code as ErrorCode) : "CFN_ERR_PROPOSAL_DROPPED";
}

function parseControlFrame(value: unknown): ControlFrame | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const f = value as Record<string, unknown>;
  if (f.t === "ping") return { t: "ping" };
  if (typeof f.r !== "number" || !Number.isSafeInteger(f.r)) return undefined;
  if (f.t === "prop") {
    const command = validateRoutingCommand(f.c);
    return command ? { t: "prop", r: f.r, c: command } : undefined;
  }
  if (f.t === "propr") {
    if (f.ok === true) return { t: "propr", r: f.r, ok: true, v: (f.v ?? null) as RoutingResult | null };
    if (f.ok === false && typeof f.code === "string" && typeof f.message === "string") {
      return { t: "propr", r: f.r, ok: false, code: f.code, message: f.message };
    }
  }
  return undefined;
}
