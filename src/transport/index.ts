// The transport adapters: the Transport port, its WebSocket adapter and its in-memory twin.

export * from "./memory-transport.js";
export * from "./transport.js";
export * from "./ws-transport.js";
