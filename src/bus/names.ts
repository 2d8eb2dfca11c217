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

const QUEUED_PATTERN = /^([012])_([0-9]{16})_([1-9][0-9]{0,8})_([A-Za-z0-9.-]{1,160})_([0-9]{1,6})\.json$/;
const CLAIMED_PATTERN =
  /^([012])_([0-9]{16})_([1-9][0-9]{0,8})_([A-Za-z0-9.-]{1,160})_([0-9]{1,6})_([0-9]{1,16})_([0-9]{1,10})\.json$/;

/** Parses an inbox file name; undefined for a foreign name. */
export function parseQueuedName(fileName: string): QueuedName | undefined {
  const fields = QUEUED_PATTERN.exec(fileName);
  if (!fields) return undefined;
  return {
    priority: DIGIT_PRIORITY[fields[1]],
    arrivalUs: Number(fields[2]),
    count: Number(fields[3]),
    unique: fields[4],
    deliveries: Number(fields[5]),
  };
}

/** Parses a claimed file name; undefined for a foreign name. */
export function parseClaimedName(fileName: string): ClaimedName | undefined {
  const fields = CLAIMED_PATTERN.exec(fileName);
  if (!fields) return undefined;
  return {
    priority: DIGIT_PRIORITY[fields[1]],
    arrivalUs: Number(fields[2]),
    count: Number(fields[3]),
    unique: fields[4],
    deliveries: Number(fields[5]),
    deadlineMs: Number(fields[6]),
    pid: Number(fields[7]),
  };
}

/**
 * Name of the claim of a queued file (hot path of every receive): the queued name with the
 * delivery count incremented and the deadline and pid appended, without re-formatting the rest.
 */
export function claimedNameOf(
  queuedFileName: string,
  queued: QueuedName,
  deadlineMs: number,
  pid: number,
): string {
  const prefixLength = queuedFileName.length - 5 - String(queued.deliveries).length; // ".json" and D
  return `${queuedFileName.slice(0, prefixLength)}${queued.deliveries + 1}_${deadlineMs}_${pid}.json`;
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
