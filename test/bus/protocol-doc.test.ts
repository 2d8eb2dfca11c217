// docs/PROTOCOL.md states the defaults a foreign implementation (a bash agent) is built against:
// they must be the ones busSchema gives.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { busSchema } from "../../src/config/schema.js";
import { REPO } from "./helpers.js";

const protocol = readFileSync(join(REPO, "docs", "PROTOCOL.md"), "utf8");
const defaults = busSchema.parse({});

/** The number in "<setting>` … (default <number> [unit]" of the protocol, in the unit given. */
function documentedDefault(setting: string): number {
  const match = new RegExp(`${setting}\`?[^(]{0,40}\\(default ([0-9]+)( MiB| s| ms)?`).exec(protocol);
  expect(match, `docs/PROTOCOL.md gives no default for ${setting}`).not.toBeNull();
  const value = Number(match?.[1]);
  const unit = match?.[2]?.trim();
  if (unit === "MiB") return value * 1024 * 1024;
  if (unit === "s") return value * 1000;
  return value;
}

describe("docs/PROTOCOL.md", () => {
  it.each([
    "messageBytesMax",
    "batchMessagesMax",
    "inboxDepthMax",
    "deliveriesMax",
    "heartbeatIntervalMs",
  ] as const)("gives the default of %s that the configuration has", (setting) => {
    expect(documentedDefault(setting)).toBe(defaults[setting]);
  });
});
