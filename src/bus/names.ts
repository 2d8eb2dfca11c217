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

// Reference grammar of the two names (docs/PROTOCOL.md). The parsers below implement it by hand
// (a character scan allocates nothing but the fields, the hot path of every claim runs one);
// test/bus/protocol.test.ts checks that they agree with these patterns.
export const QUEUED_NAME_PATTERN =
  /^([012])_([0-9]{16})_([1-9][0-9]{0,8})_([A-Za-z0-9.-]{1,160})_([0-9]{1,6})\.json$/;
export const CLAIMED_NAME_PATTERN =
  /^([012])_([0-9]{16})_([1-9][0-9]{0,8})_([A-Za-z0-9.-]{1,160})_([0-9]{1,6})_([0-9]{1,16})_([0-9]{1,10})\.json$/;

const CODE_0 = 48;
const CODE_9 = 57;
const CODE_UNDERSCORE = 95;
const UNIQUE_LENGTH_MAX = 160;

/** Value of the decimal digits text[from, to) when it is 1 to `lengthMax` digits, else -1. */
function digitsAt(text: string, from: number, to: number, lengthMax: number): number {
  if (to <= from || to - from > lengthMax) return -1;
  let value = 0;
  for (let index = from; index < to; index++) {
    const code = text.charCodeAt(index);
    if (code < CODE_0 || code > CODE_9) return -1;
    value = value * 10 + (code - CODE_0);
  }
  return value;
}

/** True when text[from, to) is 1 to 160 characters of [A-Za-z0-9.-]. */
function isUniqueAt(text: string, from: number, to: number): boolean {
  if (to <= from || to - from > UNIQUE_LENGTH_MAX) return false;
  for (let index = from; index < to; index++) {
    const code = text.charCodeAt(index);
    const ok =
      (code >= 97 && code <= 122) || // a-z
      (code >= 65 && code <= 90) || // A-Z
      (code >= CODE_0 && code <= CODE_9) ||
      code === 46 || // .
      code === 45; // -
    if (!ok) return false;
  }
  return true;
}

/**
 * Parses the P_T_N_UNIQ_D fields at the start of a name whose remaining fields (`extraFields`
 * more, then ".json") are left to the caller. Returns undefined for a foreign name; `end` is the
 * index just past D.
 */
function parseQueuedFields(
  fileName: string,
  extraFields: number,
): { name: QueuedName; end: number } | undefined {
  const length = fileName.length;
  if (length < 27 || !fileName.endsWith(".json")) return undefined;
  const stem = length - 5;
  const priorityCode = fileName.charCodeAt(0);
  if (priorityCode < CODE_0 || priorityCode > CODE_0 + 2 || fileName.charCodeAt(1) !== CODE_UNDERSCORE)
    return undefined;
  // T: exactly 16 digits at [2, 18), then "_".
  if (fileName.charCodeAt(18) !== CODE_UNDERSCORE || digitsAt(fileName, 2, 18, 16) < 0) return undefined;
  const countEnd = fileName.indexOf("_", 19);
  if (countEnd < 0 || fileName.charCodeAt(19) === CODE_0) return undefined;
  const count = digitsAt(fileName, 19, countEnd, 9);
  if (count < 1) return undefined;
  const uniqueEnd = fileName.indexOf("_", countEnd + 1);
  if (uniqueEnd < 0 || !isUniqueAt(fileName, countEnd + 1, uniqueEnd)) return undefined;
  let end = fileName.indexOf("_", uniqueEnd + 1);
  if (extraFields === 0) {
    if (end >= 0) return undefined;
    end = stem;
  } else if (end < 0) {
    return undefined;
  }
  const deliveries = digitsAt(fileName, uniqueEnd + 1, end, 6);
  if (deliveries < 0) return undefined;
  return {
    name: {
      priority: DIGIT_PRIORITY[fileName[0]],
      arrivalUs: Number(fileName.slice(2, 18)),
      count,
      unique: fileName.slice(countEnd + 1, uniqueEnd),
      deliveries,
    },
    end,
  };
}

/** Parses an inbox file name; undefined for a foreign name. */
export function parseQueuedName(fileName: string): QueuedName | undefined {
  return parseQueuedFields(fileName, 0)?.name;
}

/** Parses a claimed file name; undefined for a foreign name. */
export function parseClaimedName(fileName: string): ClaimedName | undefined {
  const fields = parseQueuedFields(fileName, 2);
  if (!fields) return undefined;
  const stem = fileName.length - 5;
  const deadlineEnd = fileName.indexOf("_", fields.end + 1);
  if (deadlineEnd < 0 || fileName.indexOf("_", deadlineEnd + 1) >= 0) return undefined;
  const deadlineMs = digitsAt(fileName, fields.end + 1, deadlineEnd, 16);
  const pid = digitsAt(fileName, deadlineEnd + 1, stem, 10);
  if (deadlineMs < 0 || pid < 0) return undefined;
  // Values past 2^53 (16 digits) round exactly as Number(text) does only when read from the text.
  return {
    ...fields.name,
    deadlineMs: Number(fileName.slice(fields.end + 1, deadlineEnd)),
    pid,
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
  return `${queuedPrefixOf(queuedFileName)}${queued.deliveries + 1}_${deadlineMs}_${pid}.json`;
}

/** "P_T_N_UNIQ_" of a well-formed queued name: the part a claim and a requeue keep unchanged. */
export function queuedPrefixOf(queuedFileName: string): string {
  return queuedFileName.slice(0, queuedFileName.lastIndexOf("_") + 1);
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
