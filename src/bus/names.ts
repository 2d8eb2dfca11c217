// File names of the on-disk protocol (docs/PROTOCOL.md, "File names"). The name carries what the
// bus needs without opening the file, so that a byte-sorted readdir is the delivery order:
//
//   queued (inbox/):    P_TTTTTTTTTTTTTTTT_N_UNIQ_D.json
//   claimed (claimed/): P_TTTTTTTTTTTTTTTT_N_UNIQ_D_DEADLINE_PID.json
//
// P priority digit (0 high, 1 normal, 2 low), T arrival time in µs since the epoch (16 digits),
// N messages in the file (1, or the batch size), UNIQ unique across hosts and processes
// ([A-Za-z0-9.-]), D deliveries so far, DEADLINE the claim's visibility deadline in ms since the
// epoch, PID the claiming process. Pure functions only.

export type Priority = "high" | "normal" | "low";

export const PRIORITY_DIGIT: Record<Priority, string> = { high: "0", normal: "1", low: "2" };
const DIGIT_PRIORITY: Record<string, Priority> = { "0": "high", "1": "normal", "2": "low" };

export interface QueuedName {
  priority: Priority;
  arrivalUs: number;
  count: number;
  unique: string;
  deliveries: number;
}

export interface ClaimedName extends QueuedName {
  deadlineMs: number;
  pid: number;
}

const UNIQUE_PATTERN = /^[A-Za-z0-9.-]{1,160}$/;
const DIGITS = /^[0-9]+$/;

export function isValidUnique(unique: string): boolean {
  return UNIQUE_PATTERN.test(unique);
}

/** The name prefix shared by a queued file and its claim: P_T_N_UNIQ. */
export function namePrefix(name: QueuedName): string {
  return `${PRIORITY_DIGIT[name.priority]}_${String(name.arrivalUs).padStart(16, "0")}_${name.count}_${name.unique}`;
}

export function formatQueuedName(name: QueuedName): string {
  return `${namePrefix(name)}_${name.deliveries}.json`;
}

export function formatClaimedName(name: ClaimedName): string {
  return `${namePrefix(name)}_${name.deliveries}_${name.deadlineMs}_${name.pid}.json`;
}

function parseFields(fileName: string, fieldCount: number): string[] | undefined {
  if (!fileName.endsWith(".json")) return undefined;
  const fields = fileName.slice(0, -5).split("_");
  if (fields.length !== fieldCount) return undefined;
  const [p, t, n, unique, d] = fields;
  if (DIGIT_PRIORITY[p] === undefined || t.length !== 16 || !DIGITS.test(t)) return undefined;
  if (!DIGITS.test(n) || n.length > 9 || Number(n) < 1 || !UNIQUE_PATTERN.test(unique)) return undefined;
  if (!DIGITS.test(d) || d.length > 6) return undefined;
  return fields;
}

/** Parses an inbox file name; undefined for a foreign name. */
export function parseQueuedName(fileName: string): QueuedName | undefined {
  const fields = parseFields(fileName, 5);
  if (!fields) return undefined;
  return {
    priority: DIGIT_PRIORITY[fields[0]],
    arrivalUs: Number(fields[1]),
    count: Number(fields[2]),
    unique: fields[3],
    deliveries: Number(fields[4]),
  };
}

/** Parses a claimed file name; undefined for a foreign name. */
export function parseClaimedName(fileName: string): ClaimedName | undefined {
  const fields = parseFields(fileName, 7);
  if (!fields || !DIGITS.test(fields[5]) || !DIGITS.test(fields[6])) return undefined;
  return {
    priority: DIGIT_PRIORITY[fields[0]],
    arrivalUs: Number(fields[1]),
    count: Number(fields[2]),
    unique: fields[3],
    deliveries: Number(fields[4]),
    deadlineMs: Number(fields[5]),
    pid: Number(fields[6]),
  };
}

/**
 * Messages a directory entry counts for in the inbox depth: N of a well-formed name, else 1 (a
 * foreign file still takes room until a receiver moves it to dead-letter). Hot path of the send
 * side's recount, so it avoids a full parse.
 */
export function countOfEntry(fileName: string): number {
  const first = fileName.indexOf("_");
  if (first < 0) return 1;
  const second = fileName.indexOf("_", first + 1);
  if (second < 0) return 1;
  const third = fileName.indexOf("_", second + 1);
  if (third < 0) return 1;
  const count = Number(fileName.slice(second + 1, third));
  return Number.isInteger(count) && count >= 1 ? count : 1;
}
