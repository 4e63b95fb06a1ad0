// Preloaded into the nodes bench/baseline-rss.ts measures (`node --expose-gc --import`): SIGUSR2
// runs a full garbage collection of the main thread, so RSS can also be read after one.
process.on('SIGUSR2', () => globalThis.gc?.());
