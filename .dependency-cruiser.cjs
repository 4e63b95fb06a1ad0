/**
 * The layering of src/ (see README "Architecture"): folders are layers, and a folder may import
 * only the folders listed before it. The leaf modules (errors, log, units, ids, config,
 * keyed-chain, listen, log-throttle) may be imported by all and import no folder. main.ts and server.ts are the composition roots.
 * `npm run lint` fails on any violation.
 */
const layers = ['wire', 'pgdata', 'engine', 'catalog', 'storage', 'databases', 'pooler', 'cluster', 'gateway', 'admin', 'http', 'cli'];

const upward = layers.slice(0, -1).map((layer, i) => ({
  name: `${layer}-imports-only-lower-layers`,
  comment: `src/${layer}/ may import only ${layers.slice(0, i).join(', ') || 'the leaf modules'}`,
  severity: 'error',
  from: { path: `^src/${layer}/` },
  to: { path: `^src/(${layers.slice(i + 1).join('|')})/` },
}));

module.exports = {
  forbidden: [
    ...upward,
    {
      name: 'wire-is-a-pure-codec',
      comment: 'src/wire/ imports nothing from src/ but errors.ts, and no Node I/O modules',
      severity: 'error',
      from: { path: '^src/wire/' },
      to: { path: '^src/(?!wire/|errors\\.ts$)|^(node:)?(fs|net|tls|worker_threads|child_process)$' },
    },
    {
      name: 'leaves-import-no-folder',
      comment: 'errors, log(-throttle), units, ids, config(-schema), keyed-chain and listen are leaves: they import no layer',
      severity: 'error',
      from: { path: '^src/(errors|log|log-throttle|units|ids|config|config-schema|keyed-chain|listen)\\.ts$' },
      to: { path: '^src/[^/]+/' },
    },
    {
      name: 'no-composition-root-below-cli',
      comment: 'only the CLI may build a node through the composition root (server.ts builds on node-base.ts)',
      severity: 'error',
      from: { path: '^src/(?!cli/|main\\.ts$|server\\.ts$)' },
      to: { path: '^src/(main|server|node-base)\\.ts$' },
    },
    {
      name: 'no-circular',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '\\.test\\.ts$' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
