// The storage adapters: the LogStore port, its LevelDB adapter and its memory twin.

export * from "./level-log-store.js";
export * from "./log-store.js";
export * from "./memory-log-store.js";
