// Randomness enters the Raft core only through this port, so a seeded simulator can replay a
// run exactly. The shell may pass any source of floats in [0, 1); tests pass `seededRandom`.

/** Returns a float in [0, 1). Called once per election-timeout reset. */
export type RandomSource = () => number;

/**
 * A small deterministic PRNG (mulberry32). Not cryptographic; it only spreads election
 * timeouts. The same seed yields the same sequence on every platform.
 */
export function seededRandom(seed: number): RandomSource {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A stable 32-bit hash of a node id (FNV-1a), used to seed the default source per node. */
export function hashNodeId(id: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) {
    hash ^= id.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}
