// Runs swarm coordination on a cluster node: adapts a ClusterNode to the CoordinationNode port and
// starts a ClusterCoordination on it (`cfn node start` and the demo's embedded node call this).
// The node itself does not import coordination (lower layers never import upper ones).

import { type CoordinationConfig, roundLimitsOf } from "../config/coordination-schema.js";
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
    isReady: () => node.isServing && node.readiness().ready,
  };
}

/** Starts coordination on `node` with the `coordination.*` settings; stop it before the node shuts down. */
export function attachCoordination(
  node: ClusterNode,
  options: { logger: Logger; metrics?: Metrics; config?: CoordinationConfig },
): ClusterCoordination {
  const config = options.config;
  const coordination = new ClusterCoordination({
    node: coordinationNodeOf(node),
    logger: options.logger,
    metrics: options.metrics,
    ...(config
      ? {
          defaultLimits: roundLimitsOf(config),
          roundTimeoutMs: config.roundTimeoutMs,
          reconcileIntervalMs: config.reconcileIntervalMs,
          livenessIntervalMs: config.livenessIntervalMs,
          roundQueueMax: config.roundQueueMax,
          workerDownGraceMs: config.workerDownGraceMs,
          checkpointPendingRecordsMax: config.checkpointPendingRecordsMax,
        }
      : {}),
  });
  coordination.start();
  return coordination;
}
