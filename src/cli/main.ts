#!/usr/bin/env -S node --min-semi-space-size=16
// `cfn`: the command-line interface (commands in src/cli/cli.ts). With too few file descriptors
// even loading the CLI's modules fails with a raw EMFILE, so `cfn node start` checks the limit
// first, with nothing loaded but node:fs (fd-preflight.ts), and only then imports the rest.

import { preflightFileDescriptors } from "./fd-preflight.js";

preflightFileDescriptors(process.argv);
const { main } = await import("./cli.js");
process.exitCode = await main(process.argv);
