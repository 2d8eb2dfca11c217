// How commands talk to people and to scripts: human text on stdout by default, one JSON document
// with --json, errors always on stderr with a stable code and a non-zero exit status.

import { CfnError } from "../errors.js";

/** Exit statuses: 0 ok, 1 operating error, 2 usage or configuration error, 3 timeout/nothing received. */
export const EXIT = { ok: 0, failure: 1, usage: 2, timeout: 3 } as const;

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

export function printLine(text = ""): void {
  process.stdout.write(`${text}\n`);
}

export function exitCodeOf(error: unknown): number {
  if (error instanceof CfnError) {
    if (error.code === "CFN_ERR_CONFIG_INVALID" || error.code === "CFN_ERR_CONFIG_FILE") return EXIT.usage;
    const usageCodes = ["CFN_ERR_INVALID_AGENT_ID", "CFN_ERR_INVALID_MESSAGE", "CFN_ERR_TOPOLOGY_INVALID"];
    if (usageCodes.includes(error.code)) return EXIT.usage;
    if (error.code === "CFN_ERR_TIMEOUT") return EXIT.timeout;
  }
  return EXIT.failure;
}

export function reportError(error: unknown, json: boolean): number {
  const code = exitCodeOf(error);
  if (json) {
    const body =
      error instanceof CfnError ? error.toJSON() : { code: "CFN_ERR_INTERNAL", message: String(error) };
    process.stderr.write(`${JSON.stringify({ error: body })}\n`);
  } else if (error instanceof CfnError) {
    process.stderr.write(`cfn: ${error.code} ${error.message}\n`);
  } else {
    process.stderr.write(`cfn: unexpected error: ${(error as Error)?.stack ?? String(error)}\n`);
  }
  return code;
}

/** Pads a table of rows (first row = header) into aligned columns. */
export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, cell.length);
    });
  }
  return rows
    .map((row) =>
      row
        .map((cell, i) => cell.padEnd(widths[i]))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}
