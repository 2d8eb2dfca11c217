// The vocabulary of the linearizability checker: a history of operations with call and return
// times, and a sequential model that says which outputs a legal sequential execution could give.

/**
 * One client operation as observed from outside: it was called at `call` and its response
 * arrived at `return`. An operation whose outcome the client never learned (timeout, crash of the
 * node it talked to) has `return: Infinity` and `output: undefined`: it may have taken effect at
 * any point after its call, or never.
 */
export interface Operation<Input, Output> {
  clientId: string;
  input: Input;
  output: Output | undefined;
  /** Time of the call; any totally ordered number (virtual ticks, event sequence numbers). */
  call: number;
  /** Time of the response; `Infinity` when unknown. Must be >= call. */
  return: number;
}

/**
 * A sequential specification. `step` is the heart: from `state`, can an operation with `input`
 * legally produce `output`, and what is the state after? With `output` undefined (outcome
 * unknown), `step` must accept and return the state the input leads to.
 */
export interface Model<State, Input, Output> {
  init(): State;
  /** Returns the next state, or undefined when `output` is impossible from `state`. */
  step(state: State, input: Input, output: Output | undefined): State | undefined;
  /** A string that is equal exactly for equal states; used to memoize the search. */
  stateKey(state: State): string;
  /**
   * Splits a history into independent sub-histories (P-compositionality: a history is
   * linearizable iff each part is), e.g. one per key. Default: one part.
   */
  partition?(
    operations: Operation<Input, Output>[],
  ): { name: string; operations: Operation<Input, Output>[] }[];
  /** Human-readable operation, for failure reports. */
  describe?(input: Input, output: Output | undefined): string;
}
