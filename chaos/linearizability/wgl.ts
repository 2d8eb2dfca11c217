// A linearizability checker: the Wing–Gong–Lowe search (as improved by Lowe, and as used by
// Porcupine) over a history of operations with call and return times.
//
// The history becomes a doubly linked list of call and return events in time order. The search
// walks it, trying to linearize a pending call (apply it to the model state, remove it and its
// return from the list); reaching a return event whose call is not yet linearized means the
// current choice order is wrong, so it backtracks. Configurations already explored — the set of
// linearized operations (a bitset) plus the model state — are memoized, which is what makes the
// search practical. A step budget bounds the work: past it the verdict is "unknown", never a
// guess.

import type { Model, Operation } from "./model.js";

export type Verdict = "ok" | "illegal" | "unknown";

export interface CheckOptions {
  /** Search steps allowed per partition before giving up with "unknown". Default 2,000,000. */
  stepsMaxPerPartition?: number;
}

export interface PartitionResult<Input, Output> {
  name: string;
  verdict: Verdict;
  steps: number;
  operationsCount: number;
  /** The longest legal order found for a prefix of operations (for failure reports). */
  longestLinearization: Operation<Input, Output>[];
  /** When illegal: an operation that could not be placed after the longest linearization. */
  blockedOperation?: Operation<Input, Output>;
}

export interface CheckResult<Input, Output> {
  verdict: Verdict;
  partitions: PartitionResult<Input, Output>[];
}

export const CHECK_DEFAULTS = { stepsMaxPerPartition: 2_000_000 };

interface EventNode {
  /** Index of the operation in the partition. */
  id: number;
  isCall: boolean;
  time: number;
  /** For a call: its return event. */
  match: EventNode | null;
  prev: EventNode | null;
  next: EventNode | null;
}

function validate<Input, Output>(op: Operation<Input, Output>): void {
  if (Number.isNaN(op.call) || Number.isNaN(op.return) || !(op.return >= op.call) || op.call === Infinity) {
    throw new Error(`invalid operation times call=${op.call} return=${op.return} (client ${op.clientId})`);
  }
  if (op.output === undefined && op.return !== Infinity) {
    throw new Error(`operation of client ${op.clientId} has a return time but no output`);
  }
}

/** Builds the event list: by time; at equal times calls first (ties are treated as concurrent). */
function buildEventList<Input, Output>(operations: Operation<Input, Output>[]): EventNode {
  const events: EventNode[] = [];
  operations.forEach((op, id) => {
    const ret: EventNode = { id, isCall: false, time: op.return, match: null, prev: null, next: null };
    const call: EventNode = { id, isCall: true, time: op.call, match: ret, prev: null, next: null };
    events.push(call, ret);
  });
  events.sort((a, b) => {
    if (a.time !== b.time) return a.time < b.time ? -1 : 1;
    if (a.isCall !== b.isCall) return a.isCall ? -1 : 1;
    return a.id - b.id;
  });
  const head: EventNode = { id: -1, isCall: false, time: -Infinity, match: null, prev: null, next: null };
  let last = head;
  for (const event of events) {
    last.next = event;
    event.prev = last;
    last = event;
  }
  return head;
}

/** Removes a call and its return from the list (they stay linked to their old neighbours). */
function lift(call: EventNode): void {
  const ret = call.match as EventNode;
  (call.prev as EventNode).next = call.next;
  if (call.next !== null) call.next.prev = call.prev;
  (ret.prev as EventNode).next = ret.next;
  if (ret.next !== null) ret.next.prev = ret.prev;
}

/** Undoes `lift`, in the reverse order. */
function unlift(call: EventNode): void {
  const ret = call.match as EventNode;
  (ret.prev as EventNode).next = ret;
  if (ret.next !== null) ret.next.prev = ret;
  (call.prev as EventNode).next = call;
  if (call.next !== null) call.next.prev = call;
}

/** Checks one partition (a history the model treats as a single object). */
export function checkPartition<State, Input, Output>(
  model: Model<State, Input, Output>,
  name: string,
  operations: Operation<Input, Output>[],
  options: CheckOptions = {},
): PartitionResult<Input, Output> {
  const stepsMax = options.stepsMaxPerPartition ?? CHECK_DEFAULTS.stepsMaxPerPartition;
  for (const op of operations) validate(op);
  const head = buildEventList(operations);
  const linearized = new Uint32Array(Math.ceil(operations.length / 32) + 1);
  const explored = new Set<string>();
  const stack: { call: EventNode; state: State }[] = [];
  let longest: number[] = [];
  let state = model.init();
  let node = head.next;
  let steps = 0;

  const result = (verdict: Verdict): PartitionResult<Input, Output> => {
    const inLongest = new Set(longest);
    let blockedOperation: Operation<Input, Output> | undefined;
    if (verdict === "illegal") {
      for (const [id, op] of operations.entries()) {
        if (inLongest.has(id)) continue;
        if (blockedOperation === undefined || op.return < blockedOperation.return) blockedOperation = op;
      }
    }
    return {
      name,
      verdict,
      steps,
      operationsCount: operations.length,
      longestLinearization: longest.map((id) => operations[id] as Operation<Input, Output>),
      ...(blockedOperation === undefined ? {} : { blockedOperation }),
    };
  };

  while (head.next !== null) {
    steps++;
    if (steps > stepsMax) return result("unknown");
    if (node === null) throw new Error("wgl: walked off the event list (a return must follow every call)");
    if (node.isCall) {
      const op = operations[node.id] as Operation<Input, Output>;
      const next = model.step(state, op.input, op.output);
      if (next !== undefined) {
        const word = node.id >>> 5;
        const bit = 1 << (node.id & 31);
        linearized[word] = (linearized[word] as number) | bit;
        const key = `${linearized.join(",")}|${model.stateKey(next)}`;
        if (!explored.has(key)) {
          explored.add(key);
          stack.push({ call: node, state });
          state = next;
          lift(node);
          if (stack.length > longest.length) longest = stack.map((s) => s.call.id);
          node = head.next;
          continue;
        }
        linearized[word] = (linearized[word] as number) & ~bit;
      }
      node = node.next;
    } else {
      // A return whose call is not linearized: every order tried from here is wrong. Backtrack.
      const top = stack.pop();
      if (top === undefined) return result("illegal");
      const word = top.call.id >>> 5;
      linearized[word] = (linearized[word] as number) & ~(1 << (top.call.id & 31));
      state = top.state;
      unlift(top.call);
      node = top.call.next;
    }
  }
  return result("ok");
}

/**
 * Checks a whole history: partitions it with the model (if it can), checks each part, and
 * combines: "illegal" if any part is, else "unknown" if any part ran out of steps, else "ok".
 */
export function checkLinearizable<State, Input, Output>(
  model: Model<State, Input, Output>,
  operations: Operation<Input, Output>[],
  options: CheckOptions = {},
): CheckResult<Input, Output> {
  for (const op of operations) validate(op);
  const parts = model.partition ? model.partition(operations) : [{ name: "all", operations }];
  const partitions = parts.map((p) => checkPartition(model, p.name, p.operations, options));
  const verdict: Verdict = partitions.some((p) => p.verdict === "illegal")
    ? "illegal"
    : partitions.some((p) => p.verdict === "unknown")
      ? "unknown"
      : "ok";
  return { verdict, partitions };
}

/** A failure report a person can read: the failing partitions, their best order and the blocker. */
export function formatCheckResult<State, Input, Output>(
  model: Model<State, Input, Output>,
  result: CheckResult<Input, Output>,
): string {
  const describe = (op: Operation<Input, Output>): string => {
    const text = model.describe ? model.describe(op.input, op.output) : JSON.stringify([op.input, op.output]);
    return `${op.clientId} [${op.call}, ${op.return}] ${text}`;
  };
  const lines = [`linearizability: ${result.verdict}`];
  for (const p of result.partitions) {
    if (p.verdict === "ok") continue;
    lines.push(
      `  partition ${p.name}: ${p.verdict} after ${p.steps} steps over ${p.operationsCount} operations`,
    );
    lines.push("    longest linearization:");
    for (const op of p.longestLinearization) lines.push(`      ${describe(op)}`);
    if (p.blockedOperation) lines.push(`    cannot place: ${describe(p.blockedOperation)}`);
  }
  return lines.join("\n");
}
