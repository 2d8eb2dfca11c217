// The bus API's one typed error for a bus directory that cannot be read or written (a full or
// read-only tmpfs, no inodes or descriptors left): CFN_ERR_BUS_IO with the system's errno in
// details, instead of a raw node:fs error (docs/ERRORS.md, docs/BUS.md "When the bus directory
// fails"). Anything that is not a system error (a bug) is passed through unchanged.

import { CfnError } from "../errors.js";

/** A system error (node:fs or the helper's node:fs-shaped one): `code` is an errno name. */
export function isSystemError(error: unknown): error is NodeJS.ErrnoException {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return error instanceof Error && typeof code === "string" && /^E[A-Z0-9]+$/.test(code);
}

/**
 * Errors of the process or the system, not of a file: a claim that met one is put back as it was
 * (no delivery counted), the file itself is fine.
 */
export const RESOURCE_ERRNOS: ReadonlySet<string> = new Set([
  "EMFILE",
  "ENFILE",
  "ENOMEM",
  "EAGAIN",
  "EINTR",
]);

/** `error` as CFN_ERR_BUS_IO when it is a system error; CfnErrors and bugs are returned as they are. */
export function busIoError(error: unknown, operation: string): unknown {
  if (error instanceof CfnError || !isSystemError(error)) return error;
  const typed = new CfnError("CFN_ERR_BUS_IO", `${operation}: ${error.message}`, {
    errno: error.code,
    syscall: error.syscall,
    path: error.path,
    operation,
  });
  typed.cause = error;
  return typed;
}

/** Runs `step`, turning a system error into CFN_ERR_BUS_IO (busIoError). */
export function withBusIoError<T>(operation: string, step: () => T): T {
  try {
    return step();
  } catch (error) {
    throw busIoError(error, operation);
  }
}

/**
 * Whether `error` from a bus write is the bus failing (CFN_ERR_BUS_IO, or anything untyped), not
 * a message the bus refuses (any other CfnError: too large, invalid, a full inbox): a caller
 * holding the message tries it again later instead of dead-lettering it.
 */
export function isBusFailure(error: unknown): boolean {
  return !(error instanceof CfnError) || error.code === "CFN_ERR_BUS_IO";
}
