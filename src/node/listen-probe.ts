// Before a node touches its data dir (claims it in node.json, bootstraps a Raft log): can it bind
// its listen addresses? A start that would fail on EADDRINUSE later must leave nothing behind.

import { createServer, type Server } from "node:net";
import { CfnError } from "../errors.js";
import { splitListen } from "./node-config.js";

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
