import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { CfnError, ERROR_CODES, isCfnError } from "../src/errors.js";

describe("error registry", () => {
  it("lists exactly the codes documented in docs/ERRORS.md", () => {
    const doc = readFileSync(new URL("../docs/ERRORS.md", import.meta.url), "utf8");
    const documented = [...doc.matchAll(/^\| `(CFN_ERR_[A-Z_]+)` \|/gm)].map((match) => match[1]).sort();
    expect(documented).toEqual(Object.keys(ERROR_CODES).sort());
  });

  it("carries its code, a default message and details", () => {
    const error = new CfnError("CFN_ERR_INBOX_FULL", undefined, { to: "agent-1" });
    expect(error.message).toBe(ERROR_CODES.CFN_ERR_INBOX_FULL);
    expect(error.toJSON()).toMatchObject({ code: "CFN_ERR_INBOX_FULL", to: "agent-1" });
    expect(isCfnError(error, "CFN_ERR_INBOX_FULL")).toBe(true);
    expect(isCfnError(error, "CFN_ERR_TIMEOUT")).toBe(false);
    expect(isCfnError(new Error("plain"))).toBe(false);
  });
});
