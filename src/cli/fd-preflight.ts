// Has the process file descriptors enough to start a node? Checked before anything else loads:
// below about 128 open files even loading the CLI's modules fails (a raw EMFILE from the module
// loader), so this module imports node:fs only and is meant to run before the rest of the CLI is
// imported (src/cli/main.ts). `cfn node start` checks again, with its connection caps
// (checkFileDescriptorLimit in src/node/listen-probe.ts).

import { readFileSync } from "node:fs";

/** Below this soft limit of open files (`ulimit -n`) a node refuses to start. */
export const FD_LIMIT_MIN = 128;

export interface FileDescriptorLimit {
  soft: number;
  hard: number;
}

/** The soft and hard limit of open files of this process, from /proc (Linux); undefined elsewhere. */
export function readFileDescriptorLimit(limitsText?: string): FileDescriptorLimit | undefined {
  let text = limitsText;
  if (text === undefined) {
    try {
      text = readFileSync("/proc/self/limits", "utf8");
    } catch {
      return undefined; // not Linux (or no /proc): nothing to read
    }
  }
  const match = /^Max open files\s+(\S+)\s+(\S+)/m.exec(text);
  if (!match) return undefined;
  const value = (field: string) => (field === "unlimited" ? Number.POSITIVE_INFINITY : Number(field));
  const soft = value(match[1]);
  const hard = value(match[2]);
  return Number.isNaN(soft) || Number.isNaN(hard) ? undefined : { soft, hard };
}

/** The refusal's message (CFN_ERR_CONFIG_INVALID), or undefined when the limit is enough. */
export function tooFewDescriptors(limit: FileDescriptorLimit | undefined): string | undefined {
  if (!limit || limit.soft >= FD_LIMIT_MIN) return undefined;
  return `too few file descriptors: the open-files limit (ulimit -n) is ${limit.soft}, a node needs at least ${FD_LIMIT_MIN} (raise it: ulimit -n 65536, LimitNOFILE= in systemd, --ulimit nofile= in Docker)`;
}

/**
 * For `cfn node start` only: with too few descriptors, prints the refusal as every refused start
 * does (`cfn: CFN_ERR_CONFIG_INVALID …`, or JSON with --json) and ends the process with exit
 * status 2 (EXIT.usage). Other commands need few descriptors and go on.
 */
export function preflightFileDescriptors(
  argv: string[] = process.argv,
  limit: FileDescriptorLimit | undefined = readFileDescriptorLimit(),
): void {
  const at = argv.indexOf("node");
  if (at < 0 || argv[at + 1] !== "start") return;
  const message = tooFewDescriptors(limit);
  if (!message) return;
  const code = "CFN_ERR_CONFIG_INVALID";
  process.stderr.write(
    argv.includes("--json")
      ? `${JSON.stringify({ error: { code, message, details: { limit: "nofile", ...limit, minimum: FD_LIMIT_MIN } } })}\n`
      : `cfn: ${code} ${message}\n`,
  );
  process.exit(2);
}
