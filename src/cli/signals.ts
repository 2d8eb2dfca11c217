// SIGINT/SIGTERM of a CLI command that must clean up before it exits (a swarm spawn, a round, a
// direct message's reply mailbox): an abort instead of Node's default of dying on the spot.

/** Exit statuses of a command ended by a signal (128 + its number, as a shell reports them). */
export const EXIT_ON_SIGNAL = { SIGINT: 130, SIGTERM: 143 } as const;

/**
 * Turns SIGINT/SIGTERM into an abort while installed (instead of Node's default: dying on the
 * spot). `received` names the first signal; off() restores the default.
 */
export function interruptOnSignals(): {
  signal: AbortSignal;
  readonly received: keyof typeof EXIT_ON_SIGNAL | undefined;
  off(): void;
} {
  const controller = new AbortController();
  let received: keyof typeof EXIT_ON_SIGNAL | undefined;
  const handlers = (Object.keys(EXIT_ON_SIGNAL) as Array<keyof typeof EXIT_ON_SIGNAL>).map(
    (name) =>
      [
        name,
        () => {
          received ??= name;
          controller.abort();
        },
      ] as const,
  );
  for (const [name, handler] of handlers) process.on(name, handler);
  return {
    signal: controller.signal,
    get received() {
      return received;
    },
    off() {
      for (const [name, handler] of handlers) process.off(name, handler);
    },
  };
}
