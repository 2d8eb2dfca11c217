// Encryption at rest for records a node keeps on disk (the persistence mirror, the delivery
// spool): AES-256-GCM with a fresh 96-bit IV per record and the record's storage key as
// additional data, so a record moved to another key (or another message) fails to open.
//
// Sealed form (a string, as the LevelDB values are text):
//   cfnenc1.<keyId>.<iv b64url>.<tag b64url>.<ciphertext b64url>
// keyId names the key (first 8 hex digits of SHA-256 over a label and the key): records sealed
// under an older key still open after a rotation while its file is listed among the previous
// keys. A value without the prefix is plaintext written before encryption was turned on.

import { createCipheriv, createDecipheriv, createHash, randomFillSync } from "node:crypto";
import { CfnError } from "../errors.js";
import { readKeyFileBytes } from "./at-rest.js";

const PREFIX = "cfnenc1.";
const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** IVs drawn per CSPRNG call: one randomBytes(12) per record cost as much as the encryption. */
const IV_POOL_BYTES = IV_BYTES * 512;
const ivPool = Buffer.alloc(IV_POOL_BYTES);
let ivPoolOffset = IV_POOL_BYTES;

/** A fresh random IV (random 96-bit IVs: rotate a key well before 2^32 records). */
function nextIv(): Buffer {
  if (ivPoolOffset >= IV_POOL_BYTES) {
    randomFillSync(ivPool);
    ivPoolOffset = 0;
  }
  const iv = Buffer.from(ivPool.subarray(ivPoolOffset, ivPoolOffset + IV_BYTES));
  ivPoolOffset += IV_BYTES;
  return iv;
}

export interface SealedRecordCodec {
  /** Encrypts `plaintext` bound to `storageKey`. */
  seal(plaintext: string, storageKey: string): string;
  /**
   * Decrypts. CFN_ERR_DECRYPT when the record was altered or bound to another storage key (set
   * it aside); CFN_ERR_KEY_FILE when it was sealed with a key this node lacks (a configuration
   * error: refuse to start rather than discard every record).
   */
  open(stored: string, storageKey: string): string;
}

export function keyIdOf(key: Buffer): string {
  return createHash("sha256").update("cfn-record-key\n").update(key).digest("hex").slice(0, 8);
}

/**
 * Reads a key file: 32 raw bytes, or 64 hex digits, or 44 base64 characters (a trailing newline
 * is allowed). The file must not be readable by group or others (0600 or 0400).
 */
export function readKeyFile(path: string): Buffer {
  const raw = readKeyFileBytes(path); // a regular file of mode 600/400, or CFN_ERR_KEY_FILE
  const text = raw.toString("latin1").trim();
  let key: Buffer | undefined;
  if (raw.byteLength === KEY_BYTES) key = raw;
  else if (/^[0-9a-fA-F]{64}$/.test(text)) key = Buffer.from(text, "hex");
  else if (/^[A-Za-z0-9+/_-]{43}=?$/.test(text)) key = Buffer.from(text, "base64");
  if (!key || key.byteLength !== KEY_BYTES) {
    throw new CfnError(
      "CFN_ERR_KEY_FILE",
      `encryption key file ${path} must hold 32 bytes (raw, 64 hex digits or base64); it holds ${raw.byteLength} bytes`,
      { path },
    );
  }
  return key;
}

/** AES-256-GCM over records with an active key and any number of older keys for reading. */
export class RecordCipher implements SealedRecordCodec {
  readonly activeKeyId: string;
  private readonly active: Buffer;
  private readonly keys = new Map<string, Buffer>();

  constructor(activeKey: Buffer, previousKeys: Buffer[] = []) {
    if (activeKey.byteLength !== KEY_BYTES)
      throw new CfnError("CFN_ERR_KEY_FILE", "the encryption key must be 32 bytes");
    this.active = activeKey;
    this.activeKeyId = keyIdOf(activeKey);
    for (const key of [activeKey, ...previousKeys]) this.keys.set(keyIdOf(key), key);
  }

  /** The cipher of `security.encryptionKeyFile` (and previous key files); errors are CFN_ERR_KEY_FILE. */
  static fromKeyFiles(activeKeyFile: string, previousKeyFiles: string[] = []): RecordCipher {
    return new RecordCipher(readKeyFile(activeKeyFile), previousKeyFiles.map(readKeyFile));
  }

  /** Key ids this cipher can open. */
  get keyIds(): string[] {
    return [...this.keys.keys()];
  }

  seal(plaintext: string, storageKey: string): string {
    const iv = nextIv();
    const cipher = createCipheriv("aes-256-gcm", this.active, iv, { authTagLength: TAG_BYTES });
    cipher.setAAD(Buffer.from(storageKey, "utf8"));
    const ciphertext = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
    const tag = cipher.getAuthTag();
    return `${PREFIX}${this.activeKeyId}.${iv.toString("base64url")}.${tag.toString("base64url")}.${ciphertext.toString("base64url")}`;
  }

  open(stored: string, storageKey: string): string {
    if (!isSealed(stored)) return stored;
    const parts = stored.slice(PREFIX.length).split(".");
    if (parts.length !== 4) throw decryptError(storageKey, "malformed sealed record");
    const [keyId, ivText, tagText, bodyText] = parts;
    const key = this.keys.get(keyId);
    if (!key) throw missingKeyError(storageKey, keyId);
    const iv = Buffer.from(ivText, "base64url");
    const tag = Buffer.from(tagText, "base64url");
    if (iv.byteLength !== IV_BYTES || tag.byteLength !== TAG_BYTES)
      throw decryptError(storageKey, "malformed sealed record");
    try {
      const decipher = createDecipheriv("aes-256-gcm", key, iv, { authTagLength: TAG_BYTES });
      decipher.setAAD(Buffer.from(storageKey, "utf8"));
      decipher.setAuthTag(tag);
      return Buffer.concat([decipher.update(Buffer.from(bodyText, "base64url")), decipher.final()]).toString(
        "utf8",
      );
    } catch {
      throw decryptError(storageKey, "authentication failed (record altered or bound to another key)");
    }
  }
}

/** The identity codec: what the mirror and spool use when encryption is off. */
export const PLAINTEXT_CODEC: SealedRecordCodec = {
  seal: (plaintext) => plaintext,
  open: (stored, storageKey) => {
    if (isSealed(stored)) throw missingKeyError(storageKey, stored.slice(PREFIX.length).split(".")[0]);
    return stored;
  },
};

export function isSealed(stored: string): boolean {
  return stored.startsWith(PREFIX);
}

function missingKeyError(storageKey: string, keyId: string): CfnError {
  return new CfnError(
    "CFN_ERR_KEY_FILE",
    `record ${storageKey} is sealed with key ${keyId}, which is not configured: set security.encryptionKeyFile ` +
      "(or list the old key in security.encryptionPreviousKeyFiles)",
    { record: storageKey, keyId },
  );
}

function decryptError(storageKey: string, reason: string): CfnError {
  return new CfnError("CFN_ERR_DECRYPT", `cannot decrypt record ${storageKey}: ${reason}`, {
    record: storageKey,
    reason,
  });
}
