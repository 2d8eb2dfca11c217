// A small in-memory cluster driven by text commands, for the scenario tests in
// test/raft/testdata/*.txt (the style of etcd's interaction tests). Every command returns the
// text it prints; the runner compares it with the expected output in the file.

import { type CfnError, isCfnError } from "../../../src/errors.js";
import {
  type ConfChange,
  type ConfChangeSingle,
  ConfChangeType,
  type ConfState,
  decodeConfChange,
  describeConfChange,
  describeMessage,
  type Entry,
  EntryType,
  emptyConfState,
  MemoryStorage,
  type Message,
  MessageType,
  type RaftConfig,
  RawNode,
  type Ready,
} from "../../../src/raft/index.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

interface AppState {
  /** Applied normal entries with data, in order. */
  data: { index: number; value: string }[];
  /** Membership after each applied conf change. */
  confs: { index: number; conf: ConfState }[];
  applied: number;
}

interface TestNode {
  id: string;
  node: RawNode;
  storage: MemoryStorage;
  app: AppState;
  config: Partial<RaftConfig>;
  random: number;
}

export function describeEntry(e: Entry): string {
  if (e.type === EntryType.ConfChange)
    return `${e.term}/${e.index} conf(${describeConfChange(decodeConfChange(e.data))})`;
  return e.data.byteLength === 0
    ? `${e.term}/${e.index}`
    : `${e.term}/${e.index} "${decoder.decode(e.data)}"`;
}

function describeConf(c: ConfState): string {
  let text = `voters=(${c.voters.join(" ")})`;
  if (c.votersOutgoing.length > 0) text += `&&(${c.votersOutgoing.join(" ")})`;
  if (c.learners.length > 0) text += ` learners=(${c.learners.join(" ")})`;
  if (c.learnersNext.length > 0) text += ` learners_next=(${c.learnersNext.join(" ")})`;
  if (c.autoLeave) text += " autoleave";
  return text;
}

function parseList(value: string): string[] {
  const inner = value.replace(/^\(/, "").replace(/\)$/, "").trim();
  return inner === "" ? [] : inner.split(/[ ,]+/);
}

function parseConfig(args: Record<string, string>): Partial<RaftConfig> {
  const config: Partial<RaftConfig> = {};
  const numeric = [
    "electionTimeoutTicks",
    "heartbeatTicks",
    "inflightMsgsMax",
    "inflightBytesMax",
    "msgBytesMax",
    "uncommittedEntriesBytesMax",
    "snapshotChunkBytes",
    "snapshotTimeoutTicks",
    "maxCommittedBytesPerReady",
  ] as const;
  for (const key of numeric) if (args[key] !== undefined) config[key] = Number(args[key]);
  for (const key of ["preVote", "checkQuorum", "disableProposalForwarding"] as const) {
    if (args[key] !== undefined) config[key] = args[key] === "true";
  }
  if (args.readOnly !== undefined) config.readOnlyOption = args.readOnly as RaftConfig["readOnlyOption"];
  return config;
}

export class InteractionEnv {
  readonly nodes = new Map<string, TestNode>();
  /** Messages waiting to be delivered, per recipient, in send order. */
  private readonly queues = new Map<string, Message[]>();
  /** Cut links "from->to"; messages on them are dropped at send time. */
  private readonly cut = new Set<string>();

  run(command: string, positional: string[], args: Record<string, string>): string {
    switch (command) {
      case "add-nodes":
        return this.addNodes(Number(positional[0]), args);
      case "campaign":
        return this.guard(() => this.get(positional[0]).node.campaign());
      case "propose":
        return this.guard(() => this.get(positional[0]).node.propose(encoder.encode(positional[1] ?? "")));
      case "propose-conf-change":
        return this.guard(() =>
          this.get(positional[0]).node.proposeConfChange(parseConfChange(positional.slice(1), args)),
        );
      case "transfer-leader":
        return this.guard(() => this.get(positional[0]).node.transferLeader(positional[1]));
      case "read-index":
        return this.guard(() => this.get(positional[0]).node.readIndex(encoder.encode(positional[1])));
      case "tick":
        return this.tick(positional, Number(args.count ?? "1"));
      case "tick-heartbeat":
        return this.tick(positional, this.get(positional[0]).node.internals.configLimits().heartbeatTicks);
      case "tick-election":
        return this.tick(
          positional,
          this.get(positional[0]).node.internals.configLimits().electionTimeoutTicks,
        );
      case "process-ready":
        return this.each(positional, (id) => this.processReady(id));
      case "deliver-msgs":
        return this.each(positional, (id) => this.deliver(id));
      case "drop-msgs":
        return this.each(positional, (id) => {
          const dropped = this.queues.get(id) ?? [];
          this.queues.set(id, []);
          return dropped.map((m) => `  dropped: ${describeMessage(m)}`).join("\n");
        });
      case "stabilize":
        return this.stabilize(positional.length > 0 ? positional : [...this.nodes.keys()]);
      case "isolate":
        for (const other of this.nodes.keys()) {
          if (other === positional[0]) continue;
          this.cut.add(`${positional[0]}->${other}`);
          this.cut.add(`${other}->${positional[0]}`);
        }
        return "ok";
      case "cut":
        this.cut.add(`${positional[0]}->${positional[1]}`);
        this.cut.add(`${positional[1]}->${positional[0]}`);
        return "ok";
      case "heal":
        this.cut.clear();
        return "ok";
      case "compact":
        return this.compact(positional[0], Number(positional[1]));
      case "restart":
        return this.restart(positional[0]);
      case "report-unreachable":
        this.get(positional[0]).node.reportUnreachable(positional[1]);
        return "ok";
      case "report-snapshot":
        this.get(positional[0]).node.reportSnapshot(positional[1], positional[2] === "ok");
        return "ok";
      case "status":
        return this.status(positional[0]);
      case "raft-log":
        return this.raftLog(positional[0]);
      case "raft-state":
        return this.raftState();
      case "applied":
        return this.each(positional, (id) => {
          const app = this.get(id).app;
          return `${id}: applied=${app.applied} data=[${app.data.map((d) => d.value).join(" ")}]`;
        });
      default:
        throw new Error(`unknown command ${command}`);
    }
  }

  private get(id: string): TestNode {
    const node = this.nodes.get(id);
    if (!node) throw new Error(`no node ${id}`);
    return node;
  }

  private guard(fn: () => void): string {
    try {
      fn();
      return "ok";
    } catch (error) {
      if (isCfnError(error)) return `error: ${(error as CfnError).code}: ${error.message}`;
      throw error;
    }
  }

  private each(ids: string[], fn: (id: string) => string): string {
    const targets = ids.length > 0 ? ids : [...this.nodes.keys()];
    return targets
      .map(fn)
      .filter((s) => s !== "")
      .join("\n");
  }

  private addNodes(count: number, args: Record<string, string>): string {
    const config = parseConfig(args);
    const lines: string[] = [];
    for (let i = 0; i < count; i++) {
      const id = String(this.nodes.size + 1);
      let storage: MemoryStorage;
      if (args.voters !== undefined) {
        storage = MemoryStorage.bootstrap({
          voters: parseList(args.voters),
          learners: parseList(args.learners ?? "()"),
        });
      } else {
        storage = new MemoryStorage(); // a node joining an existing cluster
      }
      // A fixed random value per node: node k's randomized election timeout is
      // electionTimeoutTicks + (k - 1) (with the default 10 ticks: node 1 → 10, node 2 → 11, …),
      // so scripts know who times out first. `random=0.5` overrides it.
      const fixed = args.random !== undefined ? Number(args.random) : ((Number(id) - 1) % 10) / 10 + 1e-9;
      const node = new RawNode({ config: { id, ...config }, storage, random: () => fixed });
      const conf = storage.initialState().confState;
      const app: AppState = {
        data: [],
        confs: [{ index: storage.firstIndex() - 1, conf }],
        applied: storage.firstIndex() - 1,
      };
      this.nodes.set(id, { id, node, storage, app, config, random: fixed });
      this.queues.set(id, []);
      const s = node.status();
      lines.push(
        `${id}: term=${s.term} commit=${s.commit} first=${s.firstIndex} last=${s.lastIndex} ${describeConf(s.config)}`,
      );
    }
    return lines.join("\n");
  }

  /** Crash and restart: volatile state is lost; storage and the applied state survive. */
  private restart(id: string): string {
    const n = this.get(id);
    const fixed = n.random;
    n.node = new RawNode({
      config: { id, ...n.config, applied: n.app.applied },
      storage: n.storage,
      random: () => fixed,
    });
    const s = n.node.status();
    return `${id}: restarted term=${s.term} commit=${s.commit} applied=${s.applied} last=${s.lastIndex}`;
  }

  private tick(ids: string[], count: number): string {
    for (let i = 0; i < count; i++) for (const id of ids) this.get(id).node.tick();
    return "ok";
  }

  private processReady(id: string): string {
    const n = this.get(id);
    if (!n.node.hasReady()) return "";
    const rd = n.node.ready();
    const lines = [`> ${id} ready`];
    this.persist(n, rd, lines);
    const failedSnapshots: string[] = [];
    // Identical messages (e.g. heartbeats from many ticks) print once with a count.
    const sendLines: string[] = [];
    const counts = new Map<string, number>();
    for (const m of rd.messages) {
      let line: string;
      if (this.cut.has(`${m.from}->${m.to}`) || !this.nodes.has(m.to)) {
        line = `  send: ${describeMessage(m)} DROPPED`;
        if (m.type === MessageType.Snap && m.snapshotChunk?.last) failedSnapshots.push(m.to);
      } else {
        line = `  send: ${describeMessage(m)}`;
        this.queues.get(m.to)!.push(m);
      }
      if (!counts.has(line)) sendLines.push(line);
      counts.set(line, (counts.get(line) ?? 0) + 1);
    }
    for (const line of sendLines) lines.push(counts.get(line)! > 1 ? `${line} (x${counts.get(line)})` : line);
    this.apply(n, rd, lines);
    n.node.advance();
    // A transport reports a snapshot it could not deliver.
    for (const to of failedSnapshots) {
      n.node.reportSnapshot(to, false);
      lines.push(`  report-snapshot ${to} failed`);
    }
    return lines.join("\n");
  }

  private persist(n: TestNode, rd: Ready, lines: string[]): void {
    if (rd.softState) lines.push(`  soft: role=${rd.softState.role} leader=${rd.softState.leader || "none"}`);
    if (rd.hardState) {
      const h = rd.hardState;
      lines.push(`  hard: term=${h.term} vote=${h.vote || "none"} commit=${h.commit}`);
      n.storage.setHardState(h);
    }
    if (rd.snapshot) {
      const m = rd.snapshot.metadata;
      lines.push(
        `  snapshot: ${m.term}/${m.index} ${describeConf(m.conf)} bytes=${rd.snapshot.data.byteLength}`,
      );
      n.storage.applySnapshot(rd.snapshot);
    }
    for (const e of rd.entries) lines.push(`  persist: ${describeEntry(e)}`);
    n.storage.append(rd.entries);
  }

  private apply(n: TestNode, rd: Ready, lines: string[]): void {
    if (rd.snapshot) {
      const m = rd.snapshot.metadata;
      const restored = rd.snapshot.data.byteLength === 0 ? [] : JSON.parse(decoder.decode(rd.snapshot.data));
      n.app.data = restored;
      n.app.confs = [{ index: m.index, conf: m.conf }];
      n.app.applied = m.index;
    }
    for (const e of rd.committedEntries) {
      lines.push(`  apply: ${describeEntry(e)}`);
      if (e.type === EntryType.ConfChange) {
        const conf = n.node.applyConfChange(decodeConfChange(e.data));
        n.app.confs.push({ index: e.index, conf });
        lines.push(`  conf: ${describeConf(conf)}`);
      } else if (e.data.byteLength > 0) {
        n.app.data.push({ index: e.index, value: decoder.decode(e.data) });
      }
      n.app.applied = e.index;
    }
    for (const rs of rd.readStates)
      lines.push(`  read-state: index=${rs.index} ctx=${decoder.decode(rs.requestContext)}`);
  }

  private deliver(id: string): string {
    const queue = this.queues.get(id) ?? [];
    this.queues.set(id, []);
    const lines: string[] = [];
    for (const m of queue) {
      this.get(id).node.step(m);
      // A transport reports a snapshot it delivered completely.
      if (m.type === MessageType.Snap && m.snapshotChunk?.last) {
        const sender = this.nodes.get(m.from);
        if (sender) {
          sender.node.reportSnapshot(id, true);
          lines.push(`> ${m.from} report-snapshot ${id} ok`);
        }
      }
    }
    return lines.join("\n");
  }

  private stabilize(ids: string[]): string {
    const out: string[] = [];
    for (let round = 0; round < 500; round++) {
      let idle = true;
      for (const id of ids) {
        const text = this.processReady(id);
        if (text !== "") {
          out.push(text);
          idle = false;
        }
      }
      for (const id of ids) {
        if ((this.queues.get(id) ?? []).length > 0) {
          idle = false;
          const text = this.deliver(id);
          if (text !== "") out.push(text);
        }
      }
      if (idle) return out.length > 0 ? out.join("\n") : "(nothing to do)";
    }
    throw new Error("stabilize: no quiescence after 500 rounds");
  }

  private compact(id: string, index: number): string {
    const n = this.get(id);
    if (index > n.app.applied) throw new Error(`compact ${id} ${index}: only applied up to ${n.app.applied}`);
    let conf = emptyConfState();
    for (const c of n.app.confs) if (c.index <= index) conf = c.conf;
    const data = encoder.encode(JSON.stringify(n.app.data.filter((d) => d.index <= index)));
    n.storage.createSnapshot(index, conf, data);
    n.storage.compact(index);
    return `${id}: snapshot at ${index} (${data.byteLength} bytes), first index now ${n.storage.firstIndex()}`;
  }

  private status(id: string): string {
    const s = this.get(id).node.status();
    const lines = [
      `${id}: ${s.role} term=${s.term} leader=${s.leader || "none"} commit=${s.commit} applied=${s.applied} last=${s.lastIndex}${s.leadTransferee ? ` transferee=${s.leadTransferee}` : ""}`,
      `  config: ${describeConf(s.config)}`,
    ];
    for (const [peer, p] of Object.entries(s.progress)) {
      let text = `  ${peer}: ${p.state} match=${p.match} next=${p.next}`;
      if (p.isLearner) text += " learner";
      if (p.paused) text += " paused";
      if (p.pendingSnapshot > 0) text += ` pendingSnap=${p.pendingSnapshot}`;
      if (p.inflightMsgs > 0) text += ` inflight=${p.inflightMsgs}`;
      text += ` lag=${s.lastIndex - p.match}`;
      lines.push(text);
    }
    return lines.join("\n");
  }

  private raftLog(id: string): string {
    const n = this.get(id);
    const first = n.storage.firstIndex();
    const last = n.storage.lastIndex();
    if (last < first) return `(empty; snapshot at ${first - 1})`;
    return n.storage
      .entries(first, last + 1, Number.MAX_SAFE_INTEGER)
      .map(describeEntry)
      .join("\n");
  }

  private raftState(): string {
    const lines: string[] = [];
    for (const [id, n] of this.nodes) {
      const s = n.node.status();
      const voter = s.config.voters.includes(id) || s.config.votersOutgoing.includes(id);
      const kind = voter ? "voter" : s.config.learners.includes(id) ? "learner" : "none";
      lines.push(
        `${id}: ${s.role} (${kind}) term=${s.term} leader=${s.leader || "none"} commit=${s.commit} last=${s.lastIndex}`,
      );
    }
    return lines.join("\n");
  }
}

function parseConfChange(tokens: string[], args: Record<string, string>): ConfChange {
  const changes: ConfChangeSingle[] = tokens.map((token) => {
    const kind = token[0];
    const nodeId = token.slice(1);
    if (kind === "v") return { type: ConfChangeType.AddVoter, nodeId };
    if (kind === "l") return { type: ConfChangeType.AddLearner, nodeId };
    if (kind === "r") return { type: ConfChangeType.RemoveNode, nodeId };
    throw new Error(`bad conf change token ${token}`);
  });
  return { changes, transition: args.transition === "explicit" ? "explicit" : "auto" };
}
