// The sequential specification of cfn's KV state machine (src/statemachine/kv.ts) for the
// linearizability checker. Keys are independent, so the history is checked one key at a time and
// the model state is just that key's value (null = absent).

import type { Model, Operation } from "./model.js";

export type KvInput =
  | { op: "put"; key: string; value: string }
  | { op: "get"; key: string }
  | { op: "delete"; key: string }
  | { op: "cas"; key: string; expected: string | null; value: string };

/** Mirrors KvResult: `value` is what the command observed (previous value; for cas the compared one). */
export interface KvOutput {
  ok: boolean;
  value: string | null;
}

export type KvOperation = Operation<KvInput, KvOutput>;

function sameOutput(output: KvOutput | undefined, ok: boolean, value: string | null): boolean {
  return output === undefined || (output.ok === ok && output.value === value);
}

/** The per-key register with put/get/delete/cas. */
export const kvModel: Model<string | null, KvInput, KvOutput> = {
  init: () => null,

  step(state, input, output) {
    switch (input.op) {
      case "get":
        return sameOutput(output, true, state) ? state : undefined;
      case "put":
        return sameOutput(output, true, state) ? input.value : undefined;
      case "delete":
        return sameOutput(output, true, state) ? null : undefined;
      case "cas": {
        const swaps = state === input.expected;
        if (!sameOutput(output, swaps, state)) return undefined;
        return swaps ? input.value : state;
      }
    }
  },

  stateKey: (state) => (state === null ? "-" : `=${state}`),

  partition(operations) {
    const byKey = new Map<string, KvOperation[]>();
    for (const op of operations) {
      // A read whose answer never arrived constrains nothing; leaving it out shrinks the search.
      if (op.input.op === "get" && op.output === undefined) continue;
      let list = byKey.get(op.input.key);
      if (list === undefined) {
        list = [];
        byKey.set(op.input.key, list);
      }
      list.push(op);
    }
    return [...byKey.entries()]
      .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
      .map(([key, ops]) => ({ name: `key ${JSON.stringify(key)}`, operations: dropUnobservedWrites(ops) }));
  },

  describe(input, output) {
    const out = output === undefined ? "?" : `${output.ok ? "ok" : "fail"} ${JSON.stringify(output.value)}`;
    switch (input.op) {
      case "get":
        return `get(${input.key}) -> ${out}`;
      case "put":
        return `put(${input.key}, ${JSON.stringify(input.value)}) -> ${out}`;
      case "delete":
        return `delete(${input.key}) -> ${out}`;
      case "cas":
        return `cas(${input.key}, ${JSON.stringify(input.expected)} => ${JSON.stringify(input.value)}) -> ${out}`;
    }
  },
};

/**
 * Drops put and cas operations of unknown outcome whose value nobody observed: no known output
 * shows it and no cas expected it. Such an operation can always be linearized last (nothing
 * after it sees its effect), so the history is linearizable with it iff it is without it; and
 * without it the search no longer tries every position for an operation that is pending forever,
 * which is what makes histories with many timeouts expensive.
 *
 * Why dropping is sound: in a linearization with the write W (value V) somewhere, every operation
 * with a known output that runs while the value is V would output V (all KV outputs report the
 * value they observed), and none does; so until the next write only operations of unknown
 * outcome run, and a cas among them fails (none expects V). Remove W and move those cas to the
 * end: every known output is unchanged. The other direction appends W at the end.
 */
function dropUnobservedWrites(operations: KvOperation[]): KvOperation[] {
  const observed = new Set<string>();
  for (const op of operations) {
    if (op.output !== undefined && op.output.value !== null) observed.add(op.output.value);
    if (op.input.op === "cas" && op.input.expected !== null) observed.add(op.input.expected);
  }
  return operations.filter((op) => {
    if (op.output !== undefined) return true;
    if (op.input.op !== "put" && op.input.op !== "cas") return true;
    return observed.has(op.input.value);
  });
}
