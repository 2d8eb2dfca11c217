// Agent ids name directories, so they are validated before they touch a path: safe characters
// only, bounded length, no "." or ".." (no path traversal), and a stable shard computable in bash.

import { CfnError } from "../errors.js";
import { posixCksum } from "./cksum.js";

/** Longest agent id, in characters. */
export const AGENT_ID_LENGTH_MAX = 128;

const AGENT_ID_PATTERN = /^[A-Za-z0-9._-]{1,128}$/;

/** True when `id` is a valid agent id. */
export function isValidAgentId(id: unknown): id is string {
  return typeof id === "string" && AGENT_ID_PATTERN.test(id) && id !== "." && id !== "..";
}

/** Returns `id` unchanged or throws CFN_ERR_INVALID_AGENT_ID. */
export function validateAgentId(id: unknown): string {
  if (isValidAgentId(id)) return id;
  const shown = typeof id === "string" ? JSON.stringify(id.slice(0, 200)) : typeof id;
  throw new CfnError(
    "CFN_ERR_INVALID_AGENT_ID",
    `invalid agent id ${shown}: use 1 to ${AGENT_ID_LENGTH_MAX} characters from [A-Za-z0-9._-], not "." or ".."`,
    { agentId: typeof id === "string" ? id.slice(0, 200) : undefined },
  );
}

/** Shard of an agent: POSIX cksum of the id's bytes modulo the shard count (see docs/PROTOCOL.md). */
export function shardOf(agentId: string, shards: number): number {
  return posixCksum(Buffer.from(agentId, "utf8")) % shards;
}
