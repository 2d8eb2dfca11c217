// `npm run build` runs this after tsc: builds the bus's Node-API helper. A machine without a C
// compiler or Node's headers still builds and runs cfn; the bus then uses its JavaScript file path
// (slower per message, same files) and this prints why.

import { buildBusIo } from "./bus-io-build.js";

const result = buildBusIo();
if (!result.ok) {
  process.stderr.write(`cfn build: bus I/O helper not built (${result.reason}); the bus uses node:fs\n`);
} else if (result.built) {
  process.stderr.write(`cfn build: built ${result.path}\n`);
}
