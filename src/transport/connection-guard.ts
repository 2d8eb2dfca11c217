// Bounds the connections a listening server holds before they prove useful, so that a flood of
// TCP connections that send nothing (or half a request) cannot take every file descriptor of the
// process (docs/NODE.md "Connection limits"). Used by the node's HTTP API (src/node/http-api.ts)
// and the peer listener of the WebSocket transport (src/transport/ws-transport.ts).
//
// Every accepted socket is tracked as idle (connected, no request in progress: headers still
// coming, a keep-alive pause, a WebSocket handshake not yet authenticated) or busy (a request in
// progress). At `connectionsMax` a new connection evicts an idle one — a slow or silent client
// loses its slot to one that talks, so a client or peer that sends its request at once gets
// through a flood. The one evicted: never-served connections before keep-alive ones (a client
// reusing its connection is not cut off by a slowloris flood); of each, the oldest of the
// newcomer's own remote address, else the oldest of all (an address that floods churns through
// its own connections, not another's), but not another address's connection accepted in the
// current burst and not yet read (markNewborn). With none to evict the newcomer is refused. A socket `release`d (an
// authenticated peer connection) stops counting: those are bounded by the membership.
// `idleTimeoutMs`, when set, closes a socket idle for that long (the peer handshake deadline).
// Refusals and closes are counted by the caller's callbacks and logged as a rate-limited warning.

import type { Server, Socket } from "node:net";
import { CfnError } from "../errors.js";
import type { Logger } from "../obs/logger.js";

/** Why the guard closed a connection: it counts as refused or as reaped (see docs/MONITORING.md). */
export type GuardRefusal = "connections_max" | "emfile";
export type GuardReaping = "evicted" | "timeout";

export interface ConnectionGuardOptions {
  /** Names the server in log lines ("api", "peer listener"). */
  name: string;
  /** The setting that caps it, for log lines (e.g. node.apiConnectionsMax). */
  connectionsSetting: string;
  /** Connections held at once (released ones aside); at least 1. */
  connectionsMax: number;
  /** Idle sockets older than this are closed (reason "timeout"); undefined: never by the guard. */
  idleTimeoutMs?: number;
  /** The setting of idleTimeoutMs, for log lines. */
  timeoutSetting?: string;
  logger: Logger;
  onRefused: (reason: GuardRefusal) => void;
  onReaped: (reason: GuardReaping) => void;
  /** Told the number of counted connections whenever it changes (a gauge). */
  onCount?: (connections: number) => void;
  /** At most one warning per this many ms (the counts in between are summed into it). */
  warnIntervalMs?: number;
}

export const GUARD_WARN_INTERVAL_MS = 10_000;

export class ConnectionGuard {
  private readonly options: ConnectionGuardOptions;
  /** Idle, never served a request (headers still coming, or nothing sent yet). */
  private readonly fresh = new IdlePool();
  /** Idle after a request (keep-alive): they spoke the protocol once, so they go last. */
  private readonly kept = new IdlePool();
  private readonly addressOf = new Map<Socket, string>();
  private readonly busy = new Set<Socket>();
  /**
   * The accept batch of each socket not yet released (markNewborn): such a socket is not
   * evicted yet.
   */
  private readonly bornIn = new Map<Socket, number>();
  /** The accept batch now (one per I/O poll phase), whether it is open, the last one released. */
  private batch = 0;
  private batchOpen = false;
  private released = 0;
  private readonly warnings: RateLimitedWarning;
  private sweeper: NodeJS.Timeout | undefined;

  constructor(options: ConnectionGuardOptions) {
    if (!Number.isSafeInteger(options.connectionsMax) || options.connectionsMax < 1)
      throw new CfnError(
        "CFN_ERR_CONFIG_INVALID",
        `${options.connectionsSetting} must be a whole number ≥ 1, got ${String(options.connectionsMax)}`,
      );
    this.options = options;
    this.warnings = new RateLimitedWarning(
      options.logger,
      `${options.name}: connections refused or closed by the node (counted by reason: closed_timeout, a client that did not finish its handshake or request in time — a stalled link, a half-open connection or a flood of idle ones; closed_evicted or refused_*, the connection limit or the descriptors ran out)`,
      options.warnIntervalMs ?? GUARD_WARN_INTERVAL_MS,
      {
        [options.connectionsSetting]: options.connectionsMax,
        ...(options.timeoutSetting ? { [options.timeoutSetting]: options.idleTimeoutMs } : {}),
      },
    );
  }

  /** Tracks every connection `server` accepts from now on (and sweeps idle ones if timed). */
  attach(server: Server): void {
    server.on("connection", (socket: Socket) => this.admit(socket));
    const timeout = this.options.idleTimeoutMs;
    if (timeout !== undefined && !this.sweeper) {
      this.sweeper = setInterval(() => this.sweep(), sweepIntervalMs(timeout));
      this.sweeper.unref();
    }
  }

  /** Connections counted against connectionsMax. */
  get connections(): number {
    return this.fresh.size + this.kept.size + this.busy.size;
  }

  get idleConnections(): number {
    return this.fresh.size + this.kept.size;
  }

  /** A request started on `socket` (an http request or TLS socket: its TCP socket is meant). */
  markBusy(socket: Socket): void {
    const raw = rawSocketOf(socket);
    if (!this.fresh.delete(raw) && !this.kept.delete(raw) && !this.busy.has(raw)) return;
    this.busy.add(raw);
  }

  /** Its request ended and the socket stays open (keep-alive): idle again, youngest. */
  markIdle(socket: Socket): void {
    const raw = rawSocketOf(socket);
    if (!this.busy.delete(raw)) return;
    const address = this.addressOf.get(raw);
    if (!raw.destroyed && address !== undefined) this.kept.add(raw, address);
    else {
      this.addressOf.delete(raw); // closing: its 'close' finds nothing left to count
      this.counted();
    }
  }

  /** Stops counting `socket` (an authenticated peer connection, bounded by the membership). */
  release(socket: Socket): void {
    if (this.forget(rawSocketOf(socket))) this.counted();
  }

  /** A connection the server could not accept (EMFILE/ENFILE): counted and logged. */
  noteRefused(reason: GuardRefusal): void {
    this.options.onRefused(reason);
    this.warnings.note(`refused_${reason}`);
  }

  /** A connection the server closed itself (its own request/headers timeout): counted and logged. */
  noteReaped(reason: GuardReaping): void {
    this.options.onReaped(reason);
    this.warnings.note(`closed_${reason}`);
  }

  close(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
    this.warnings.flush();
    this.fresh.clear();
    this.kept.clear();
    this.addressOf.clear();
    this.bornIn.clear();
    this.busy.clear();
  }

  private admit(socket: Socket): void {
    const address = socket.remoteAddress ?? "";
    if (this.connections >= this.options.connectionsMax) {
      // Never-served connections first, then keep-alive ones; of each, the oldest of the
      // newcomer's own address, else the oldest of all: a flooding address churns through its
      // own connections, not another address's handshake.
      const eligible = (socket: Socket | undefined) =>
        socket !== undefined && (this.bornIn.get(socket) ?? 0) <= this.released ? socket : undefined;
      const victim =
        this.fresh.oldestOf(address) ??
        eligible(this.fresh.oldest()) ??
        this.kept.oldestOf(address) ??
        this.kept.oldest();
      if (victim === undefined) {
        socket.destroy();
        this.noteRefused("connections_max");
        return;
      }
      this.forget(victim);
      victim.destroy();
      this.noteReaped("evicted");
    }
    this.addressOf.set(socket, address);
    this.fresh.add(socket, address);
    this.markNewborn(socket);
    this.counted();
    socket.once("close", () => {
      if (this.forget(socket)) this.counted();
    });
  }

  /**
   * Not evictable until the next poll phase had the chance to read what it sent: libuv accepts a
   * whole burst before reading any of it, and a client whose request is already in its socket
   * would otherwise be evicted by the rest of its burst unread. Released after an immediate (the
   * end of the poll phase that accepted it) and another (the end of the next one).
   */
  private markNewborn(socket: Socket): void {
    if (!this.batchOpen) {
      this.batchOpen = true;
      const id = ++this.batch;
      setImmediate(() => {
        this.batchOpen = false;
        setImmediate(() => {
          this.released = Math.max(this.released, id);
        });
      });
    }
    this.bornIn.set(socket, this.batch);
  }

  /** Stops tracking `socket`; true when it was counted. */
  private forget(socket: Socket): boolean {
    const counted = this.fresh.delete(socket) || this.kept.delete(socket) || this.busy.delete(socket);
    this.addressOf.delete(socket);
    this.bornIn.delete(socket);
    return counted;
  }

  private counted(): void {
    this.options.onCount?.(this.connections);
  }

  private sweep(): void {
    const timeout = this.options.idleTimeoutMs;
    if (timeout === undefined) return;
    const before = Date.now() - timeout;
    for (const pool of [this.fresh, this.kept])
      for (const socket of pool.olderThan(before)) {
        this.forget(socket);
        socket.destroy();
        this.noteReaped("timeout");
        this.counted();
      }
  }
}

/** Idle sockets, oldest first (Maps and Sets keep insertion order), also per remote address. */
class IdlePool {
  private readonly since = new Map<Socket, number>();
  private readonly byAddress = new Map<string, Set<Socket>>();
  private readonly addressOf = new Map<Socket, string>();

  get size(): number {
    return this.since.size;
  }

  add(socket: Socket, address: string): void {
    this.delete(socket);
    this.since.set(socket, Date.now());
    this.addressOf.set(socket, address);
    let sockets = this.byAddress.get(address);
    if (!sockets) {
      sockets = new Set();
      this.byAddress.set(address, sockets);
    }
    sockets.add(socket);
  }

  delete(socket: Socket): boolean {
    if (!this.since.delete(socket)) return false;
    const address = this.addressOf.get(socket) ?? "";
    this.addressOf.delete(socket);
    const sockets = this.byAddress.get(address);
    sockets?.delete(socket);
    if (sockets?.size === 0) this.byAddress.delete(address);
    return true;
  }

  oldest(): Socket | undefined {
    return this.since.keys().next().value;
  }

  oldestOf(address: string): Socket | undefined {
    return this.byAddress.get(address)?.values().next().value;
  }

  /** The sockets idle since before `time`, oldest first (a copy: the caller deletes). */
  olderThan(time: number): Socket[] {
    const out: Socket[] = [];
    for (const [socket, since] of this.since) {
      if (since > time) break;
      out.push(socket);
    }
    return out;
  }

  clear(): void {
    this.since.clear();
    this.byAddress.clear();
    this.addressOf.clear();
  }
}

/** A sweep a few times per timeout, at most once per second: a socket lives ≤ timeout + 1 s. */
export function sweepIntervalMs(timeoutMs: number): number {
  return Math.max(25, Math.min(1000, Math.floor(timeoutMs / 4)));
}

function rawSocketOf(socket: Socket): Socket {
  // A TLS socket wraps the TCP socket the server accepted (and the guard tracks).
  return (socket as Socket & { _parent?: Socket | null })._parent ?? socket;
}

/**
 * One warning at the first event, then at most one per interval summing what happened since:
 * a flood of a million connections writes a handful of lines, not a million.
 */
export class RateLimitedWarning {
  private readonly counts = new Map<string, number>();
  private lastAt = Number.NEGATIVE_INFINITY;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly logger: Logger,
    private readonly message: string,
    private readonly intervalMs: number,
    private readonly fields: Record<string, unknown> = {},
  ) {}

  note(kind: string): void {
    this.counts.set(kind, (this.counts.get(kind) ?? 0) + 1);
    const wait = this.lastAt + this.intervalMs - Date.now();
    if (wait <= 0) this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), wait);
      this.timer.unref();
    }
  }

  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.counts.size === 0) return;
    this.lastAt = Date.now();
    const counts = Object.fromEntries(this.counts);
    this.counts.clear();
    this.logger.warn(this.message, { ...counts, ...this.fields, warnIntervalMs: this.intervalMs });
  }
}
