// The linearizability checker: models, the WGL search, and the KV model.

export { type KvInput, type KvOperation, type KvOutput, kvModel } from "./kv-model.js";
export type { Model, Operation } from "./model.js";
export {
  CHECK_DEFAULTS,
  type CheckOptions,
  type CheckResult,
  checkLinearizable,
  checkPartition,
  formatCheckResult,
  type PartitionResult,
  type Verdict,
} from "./wgl.js";
