// Encryption at rest: AES-256-GCM records, key files, rotation, tamper detection.

import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { isCfnError } from "../../src/errors.js";
import { PLAINTEXT_CODEC, RecordCipher, readKeyFile } from "../../src/security/record-cipher.js";

const dirs: string[] = [];
function keyFile(content: Buffer | string, mode = 0o600): string {
  const dir = mkdtempSync(join(tmpdir(), "cfn-key-"));
  dirs.push(dir);
  const path = join(dir, "key");
  writeFileSync(path, content, { mode });
  chmodSync(path, mode);
  return path;
}

function expectCode(action: () => unknown, code: "CFN_ERR_DECRYPT" | "CFN_ERR_KEY_FILE"): string {
  try {
    action();
  } catch (error) {
    expect(isCfnError(error, code)).toBe(true);
    return (error as Error).message;
  }
  throw new Error(`expected ${code}`);
}

afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe("record cipher", () => {
  it("round-trips a record, never storing the plaintext", () => {
    const cipher = new RecordCipher(randomBytes(32));
    const text = JSON.stringify({ id: "m1", payload: "the secret plan" });
    const sealed = cipher.seal(text, "o!n2!0001");
    expect(sealed.startsWith(`cfnenc1.${cipher.activeKeyId}.`)).toBe(true);
    expect(sealed).not.toContain("secret plan");
    expect(cipher.open(sealed, "o!n2!0001")).toBe(text);
    // A fresh IV per record: the same text seals differently.
    expect(cipher.seal(text, "o!n2!0001")).not.toBe(sealed);
  });

  it("detects a changed ciphertext, tag or IV, and a record moved to another key", () => {
    const cipher = new RecordCipher(randomBytes(32));
    const sealed = cipher.seal("hello world, a message body", "m!a1!P_1");
    const parts = sealed.split(".");
    const flip = (text: string) => {
      const bytes = Buffer.from(text, "base64url");
      bytes[0] ^= 1;
      return bytes.toString("base64url");
    };
    for (const at of [2, 3, 4]) {
      const tampered = parts.map((part, i) => (i === at ? flip(part) : part)).join(".");
      expect(expectCode(() => cipher.open(tampered, "m!a1!P_1"), "CFN_ERR_DECRYPT")).toMatch(
        /authentication failed/,
      );
    }
    expectCode(() => cipher.open(sealed, "m!a2!P_1"), "CFN_ERR_DECRYPT");
    expectCode(() => cipher.open("cfnenc1.zz", "m!a1!P_1"), "CFN_ERR_DECRYPT");
  });

  it("opens records of a previous key after a rotation; an unknown key id is a typed error", () => {
    const oldKey = randomBytes(32);
    const before = new RecordCipher(oldKey).seal("old record", "k");
    const rotated = new RecordCipher(randomBytes(32), [oldKey]);
    expect(rotated.open(before, "k")).toBe("old record");
    expect(rotated.seal("new", "k").split(".")[1]).toBe(rotated.activeKeyId);
    const forgotten = new RecordCipher(randomBytes(32));
    expect(expectCode(() => forgotten.open(before, "k"), "CFN_ERR_KEY_FILE")).toMatch(/not configured/);
  });

  it("passes plaintext written before encryption was on; without a key refuses sealed records", () => {
    const cipher = new RecordCipher(randomBytes(32));
    expect(cipher.open('{"legacy":true}', "k")).toBe('{"legacy":true}');
    expect(PLAINTEXT_CODEC.open(PLAINTEXT_CODEC.seal("x", "k"), "k")).toBe("x");
    expectCode(() => PLAINTEXT_CODEC.open(cipher.seal("x", "k"), "k"), "CFN_ERR_KEY_FILE");
  });

  it("reads raw, hex and base64 key files of 32 bytes with mode 0600", () => {
    const key = randomBytes(32);
    expect(readKeyFile(keyFile(key)).equals(key)).toBe(true);
    expect(readKeyFile(keyFile(`${key.toString("hex")}\n`)).equals(key)).toBe(true);
    expect(readKeyFile(keyFile(`${key.toString("base64")}\n`, 0o400)).equals(key)).toBe(true);
    const cipher = RecordCipher.fromKeyFiles(keyFile(key));
    expect(cipher.open(new RecordCipher(key).seal("same key", "k"), "k")).toBe("same key");
  });

  it("refuses a key file that is missing, readable by others, or not 32 bytes", () => {
    expect(expectCode(() => readKeyFile("/nonexistent/cfn.key"), "CFN_ERR_KEY_FILE")).toMatch(/cannot read/);
    expect(expectCode(() => readKeyFile(keyFile(randomBytes(32), 0o644)), "CFN_ERR_KEY_FILE")).toMatch(
      /mode 644/,
    );
    expect(expectCode(() => readKeyFile(keyFile(randomBytes(16))), "CFN_ERR_KEY_FILE")).toMatch(/32 bytes/);
    expectCode(
      () => RecordCipher.fromKeyFiles(keyFile(randomBytes(32)), ["/nonexistent/old.key"]),
      "CFN_ERR_KEY_FILE",
    );
  });
});
