// The node settings live with the rest of the configuration (src/config/node-schema.ts, the
// `node` section of the main schema); re-exported here for the node layer.
export * from "../config/node-schema.js";
