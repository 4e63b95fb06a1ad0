#!/usr/bin/env node
import { serve } from '../main.js';

// Placeholder entry until the CLI module lands: `serve` only.
const [command] = process.argv.slice(2);
if (command === 'serve' || command === undefined) {
  serve().catch((err) => {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(1);
  });
} else {
  process.stderr.write(`unknown command ${command}\n`);
  process.exit(2);
}
