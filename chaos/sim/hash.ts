// A small incremental hash for traces and log-chain fingerprints: two independent 32-bit FNV-1a
// lanes (different offsets and primes), so a collision needs both to collide. Deterministic and
// pure; not cryptographic.

export class TraceHash {
  private a = 0x811c9dc5;
  private b = 0x01000193;

  /** Mixes a string (by UTF-16 code unit). */
  addString(text: string): this {
    for (let i = 0; i < text.length; i++) this.addUnit(text.charCodeAt(i));
    this.addUnit(0xffff); // separator, so "ab"+"c" differs from "a"+"bc"
    return this;
  }

  addNumber(value: number): this {
    return this.addString(String(value));
  }

  addBytes(bytes: Uint8Array): this {
    for (let i = 0; i < bytes.length; i++) this.addUnit(bytes[i] as number);
    this.addUnit(0x1ffff);
    return this;
  }

  hex(): string {
    return (this.a >>> 0).toString(16).padStart(8, "0") + (this.b >>> 0).toString(16).padStart(8, "0");
  }

  private addUnit(unit: number): void {
    this.a = Math.imul(this.a ^ unit, 0x01000193);
    this.b = Math.imul(this.b ^ (unit + 0x9e37), 0x0100019d);
  }
}

/** Fingerprint of a log prefix: chain(previous, term, data). */
export function chainHash(previous: string, term: number, type: number, data: Uint8Array): string {
  return new TraceHash().addString(previous).addNumber(term).addNumber(type).addBytes(data).hex();
}
