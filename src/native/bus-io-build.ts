// Where the bus's Node-API helper (src/native/bus-io.c) is built and how. `npm run build` builds it
// (src/native/build.ts); at run time the bus only loads it (src/bus/file-io.ts).

import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { REPO_ROOT } from "../repo-root.js";
import { buildC, type CBuildResult } from "./c-build.js";

export const BUS_IO_SOURCE = join(REPO_ROOT, "src", "native", "bus-io.c");
export const BUS_IO_ADDON = join(REPO_ROOT, "dist", "native", "bus-io.node");

/** Directories that may hold Node's C headers (node_api.h), most specific first. */
function headerCandidates(): string[] {
  const candidates = [
    process.env.CFN_NODE_HEADERS,
    process.env.npm_config_nodedir && join(process.env.npm_config_nodedir, "include", "node"),
    join(dirname(dirname(process.execPath)), "include", "node"),
    process.env.HOME &&
      join(process.env.HOME, ".cache", "node-gyp", process.versions.node, "include", "node"),
  ];
  return candidates.filter((dir): dir is string => Boolean(dir));
}

/** The directory holding node_api.h, or undefined. */
export function nodeHeadersDir(): string | undefined {
  return headerCandidates().find((dir) => existsSync(join(dir, "node_api.h")));
}

export function buildBusIo(): CBuildResult {
  const headers = nodeHeadersDir();
  if (!headers)
    return { ok: false, reason: `no Node headers (node_api.h) in ${headerCandidates().join(", ")}` };
  const common = ["-O2", "-shared", "-fPIC", "-Wall", `-I${headers}`];
  // macOS resolves the Node-API symbols when the addon is loaded, not when it is linked.
  const flagSets = process.platform === "darwin" ? [[...common, "-undefined", "dynamic_lookup"]] : [common];
  return buildC({ source: BUS_IO_SOURCE, output: BUS_IO_ADDON, flagSets });
}
