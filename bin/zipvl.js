#!/usr/bin/env node
// The zipvl command. The compiler is TypeScript run through tsx's loader (no build step for users).
import { register } from "tsx/esm/api";

register();
const { main } = await import("../src/cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
