// Development/test entry for the engine worker: Node 20 workers do not inherit --import loaders,
// so register tsx here before loading the TypeScript worker. Built code uses engine-worker.js.
import { register } from 'tsx/esm/api';

register();
await import(new URL('./engine-worker.ts', import.meta.url).href);
