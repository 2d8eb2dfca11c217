// The flags every command that talks to a node's HTTP API shares: where (--api) and as whom
// (--token), with the same environment fallbacks everywhere.

import type { Command } from "commander";
import { SINGLE_NODE_TOKEN } from "../config/node-schema.js";
import { CfnError, isCfnError } from "../errors.js";
import { apiRequest } from "../node/api-client.js";

export interface ApiFlags {
  api?: string;
  token?: string;
  json?: boolean;
}

export const DEFAULT_API = "http://127.0.0.1:7201";
export const DEFAULT_TOKEN = SINGLE_NODE_TOKEN;

/** The token the caller gave: --token, else CFN_API_TOKEN, else CFN_CLUSTER_TOKEN; undefined if none. */
function givenToken(flags: ApiFlags): string | undefined {
  return (
    flags.token ??
    process.env.CFN_API_TOKEN ??
    process.env.CFN_CLUSTER_TOKEN ??
    process.env.CFN_NODE_CLUSTER_TOKEN
  );
}

/**
 * Where and as whom: --api/--token, else CFN_NODE_API and CFN_API_TOKEN (or CFN_CLUSTER_TOKEN).
 * With no token given it is the single-node default, which a node on that default needs for
 * writes; reads go through apiRead, which sends none first.
 */
export function apiOf(flags: ApiFlags): { api: string; token: string } {
  return {
    api: flags.api ?? process.env.CFN_NODE_API ?? DEFAULT_API,
    token: givenToken(flags) ?? DEFAULT_TOKEN,
  };
}

/**
 * A GET through a node's API (`base`, default apiOf's). Reads need no token by default
 * (security.anonymousReadAllowed), so with no token given none is sent — the single-node
 * default would be refused as a wrong token by a cluster with its own. Only a node that refuses
 * anonymous reads is asked again with the single-node default.
 */
export async function apiRead(flags: ApiFlags, path: string, base = apiOf(flags).api): Promise<unknown> {
  const token = givenToken(flags);
  if (token !== undefined) return apiRequest(base, "GET", path, token);
  try {
    return await apiRequest(base, "GET", path, undefined);
  } catch (error) {
    if (!isCfnError(error, "CFN_ERR_AUTH")) throw error;
    return apiRequest(base, "GET", path, DEFAULT_TOKEN);
  }
}

/**
 * A refusal of the API's credentials where none was given (no --token, CFN_API_TOKEN or
 * CFN_CLUSTER_TOKEN: the single-node default went out) says so; any other error is returned as is.
 */
export function explainAuthError(error: unknown, argv: string[]): unknown {
  if (!isCfnError(error, "CFN_ERR_AUTH")) return error;
  const given =
    argv.some((arg) => arg === "--token" || arg.startsWith("--token=")) ||
    process.env.CFN_API_TOKEN !== undefined ||
    process.env.CFN_CLUSTER_TOKEN !== undefined ||
    process.env.CFN_NODE_CLUSTER_TOKEN !== undefined;
  if (given) return error;
  return new CfnError(
    "CFN_ERR_AUTH",
    `${error.message} (no token given, so the single-node default was sent: pass --token or set CFN_API_TOKEN or CFN_CLUSTER_TOKEN)`,
    error.details,
  );
}

/** Adds --api, --token and --json to `command`. */
export function withApi(command: Command): Command {
  return command
    .option("--api <url>", `node API URL (default CFN_NODE_API or ${DEFAULT_API})`)
    .option("--token <secret>", "API or cluster token (default CFN_API_TOKEN, then CFN_CLUSTER_TOKEN)")
    .option("--json", "print as JSON");
}

/** commander's repeatable option collector (`--set a --set b`). */
export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}
