// Runs swarm coordination on a cluster node: adapts a ClusterNode to the CoordinationNode port and
// starts a ClusterCoordination on it (`cfn node start` and the demo's embedded node call this).
// The node itself does not import coordination (lower layers never import upper ones).

import type { ClusterNode } from "../node/node.js";
import type { Logger } from "../obs/logger.js";
import type { Metrics } from "../obs/metrics.js";
import { ClusterCoordination, type CoordinationNode } from "./cluster-coordination.js";

export function coordinationNodeOf(node: ClusterNode): CoordinationNode {
  return {
    id: node.id,
    bus: node.bus,
    get routingState() {
      return node.routing.state;
    },
    propose: (command) => node.propose(command),
    isLeader: () => node.isServing && node.readiness().leader === node.id,
  };
}

/** Starts coordination on `node`; stop it before the node shuts down. */
export function attachCoordination(
  node: ClusterNode,
  options: { logger: Logger; metrics?: Metrics; reconcileIntervalMs?: number; livenessIntervalMs?: number },
): ClusterCoordination {
  const coordination = new ClusterCoordination({ node: coordinationNodeOf(node), ...options });
  coordination.start();
  return coordination;
}
