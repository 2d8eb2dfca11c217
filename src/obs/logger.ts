// A namespaced structured logger (`cfn:bus`, `cfn:raft`, …): JSON lines on stderr, one object per
// event, so logs stay machine-readable and never mix with a command's stdout output.
// The level comes from the component's config (CFN_LOG_LEVEL); tests pass `silentLogger`.

export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";
const LEVEL_RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
  child(namespace: string): Logger;
}

export interface LoggerOptions {
  level?: LogLevel;
  /** Where lines go; stderr by default. */
  write?: (line: string) => void;
}

export function createLogger(namespace: string, options: LoggerOptions = {}): Logger {
  const threshold = LEVEL_RANK[options.level ?? "info"];
  const write = options.write ?? ((line: string) => process.stderr.write(line));
  const log = (level: LogLevel, message: string, fields?: Record<string, unknown>) => {
    if (LEVEL_RANK[level] < threshold) return;
    const record = { ts: new Date().toISOString(), level, ns: namespace, msg: message, ...fields };
    write(`${JSON.stringify(record, errorReplacer)}\n`);
  };
  return {
    debug: (m, f) => log("debug", m, f),
    info: (m, f) => log("info", m, f),
    warn: (m, f) => log("warn", m, f),
    error: (m, f) => log("error", m, f),
    child: (sub) => createLogger(`${namespace}:${sub}`, options),
  };
}

function errorReplacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) {
    const withCode = value as Error & { code?: string };
    return { name: value.name, message: value.message, code: withCode.code };
  }
  return value;
}

/** A logger that drops everything, for tests and benchmarks. */
export const silentLogger: Logger = createLogger("cfn", { level: "silent" });
