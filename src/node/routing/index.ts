// The replicated routing state (pure): commands, state, state machine and the master
// coordinator's planning functions.

export * from "./agent-liveness.js";
export * from "./assignment.js";
export * from "./commands.js";
export * from "./state.js";
export * from "./state-machine.js";
