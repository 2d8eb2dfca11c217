// Before a node touches its data dir (claims it in node.json, bootstraps a Raft log): can it bind
// its listen addresses, and has it file descriptors enough? A start that would fail on
// EADDRINUSE or EMFILE later must leave nothing behind.

import { createServer, type Server } from "node:net";
import {
  FD_LIMIT_MIN,
  type FileDescriptorLimit,
  readFileDescriptorLimit,
  tooFewDescriptors,
} from "../cli/fd-preflight.js";
import { CfnError } from "../errors.js";
import type { Logger } from "../obs/logger.js";
import { type NodeConfig, splitListen } from "./node-config.js";

/** A listen setting to probe: its name (for the message) and its host:port. */
export interface ListenSetting {
  setting: string;
  address: string;
}

/**
 * Binds every address in turn (all held until the last, so two settings on one port are caught
 * too), then releases them. CFN_ERR_CONFIG_INVALID naming the setting when one cannot be bound.
 * A race remains (another process may bind between the probe and the node's own listen): the
 * node's listen still fails then, only later.
 */
export async function probeListenAddresses(settings: ListenSetting[]): Promise<void> {
  const held: Server[] = [];
  try {
    for (const { setting, address } of settings) {
      const { host, port } = splitListen(address);
      const server = createServer();
      try {
        await new Promise<void>((resolve, reject) => {
          server.once("error", reject);
          server.listen({ host, port, exclusive: true }, () => resolve());
        });
      } catch (error) {
        throw new CfnError(
          "CFN_ERR_CONFIG_INVALID",
          `cannot listen: ${setting} ${address}: ${(error as Error).message} (check node.peerListen / node.apiListen)`,
          { setting, address, errno: (error as NodeJS.ErrnoException).code },
        );
      }
      held.push(server);
    }
  } finally {
    await Promise.all(held.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  }
}

/** Descriptors a node needs besides its connection caps (LevelDB, bus files, peers, logs). */
export const FD_RESERVE = 256;

/**
 * Before a node starts: enough file descriptors? Below FD_LIMIT_MIN it refuses
 * (CFN_ERR_CONFIG_INVALID naming the limit and the minimum) rather than failing later on a raw
 * EMFILE; below its connection caps plus FD_RESERVE it warns (a connection flood could then use
 * up the rest). Node.js raises the soft limit to the hard one at start-up: what is read here is
 * what the process has.
 */
export function checkFileDescriptorLimit(
  config: Pick<NodeConfig, "apiConnectionsMax" | "peerPendingConnectionsMax">,
  logger: Logger,
  limit: FileDescriptorLimit | undefined = readFileDescriptorLimit(),
): void {
  if (!limit) return;
  const refusal = tooFewDescriptors(limit);
  if (refusal)
    throw new CfnError("CFN_ERR_CONFIG_INVALID", refusal, {
      limit: "nofile",
      soft: limit.soft,
      hard: limit.hard,
      minimum: FD_LIMIT_MIN,
    });
  const wanted = config.apiConnectionsMax + config.peerPendingConnectionsMax + FD_RESERVE;
  if (limit.soft < wanted)
    logger.warn(
      "the open-files limit (ulimit -n) is below the connection caps plus a reserve: a connection flood could exhaust it",
      {
        soft: limit.soft,
        hard: limit.hard,
        wanted,
        apiConnectionsMax: config.apiConnectionsMax,
        peerPendingConnectionsMax: config.peerPendingConnectionsMax,
        reserve: FD_RESERVE,
        fix: "raise ulimit -n, or lower node.apiConnectionsMax / node.peerPendingConnectionsMax",
      },
    );
}
