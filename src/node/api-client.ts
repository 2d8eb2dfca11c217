// A client of a node's HTTP API (docs/NODE.md "HTTP API"): the CLI's cluster commands, a node's
// join, removal checks and hand-offs.

import { CfnError, ERROR_CODES } from "../errors.js";

/** Calls a node's HTTP API with the cluster token; throws the API's CfnError on failure. */
export async function apiRequest(
  baseUrl: string,
  method: string,
  path: string,
  token: string | undefined,
  body?: unknown,
  timeoutMs = 5_000,
): Promise<unknown> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (token) headers["x-cfn-cluster-token"] = token;
  if (body !== undefined) headers["content-type"] = "application/json";
  let response: Response;
  try {
    response = await fetch(new URL(path, baseUrl), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (error) {
    throw new CfnError(
      "CFN_ERR_PEER_UNREACHABLE",
      `cannot reach node API ${baseUrl}: ${(error as Error).message}`,
      { url: baseUrl },
    );
  }
  const text = await response.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : {};
  } catch {
    json = { text };
  }
  if (!response.ok) {
    const error = (json as { error?: { code?: string; message?: string } | string }).error;
    if (typeof error === "string") {
      // A routing result the state machine refused ({ok: false, error: reason}, HTTP 409).
      throw new CfnError("CFN_ERR_ROUTING_REFUSED", `${method} ${path} refused: ${error}`, {
        status: response.status,
        reason: error,
      });
    }
    const code = error?.code && isKnownCode(error.code) ? error.code : "CFN_ERR_PEER_UNREACHABLE";
    throw new CfnError(code as never, error?.message ?? `${method} ${path} → HTTP ${response.status}`, {
      status: response.status,
    });
  }
  return json;
}

function isKnownCode(code: string): boolean {
  return Object.hasOwn(ERROR_CODES, code);
}
