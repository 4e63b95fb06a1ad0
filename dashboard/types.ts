/**
 * What the live reporting API answers. The types are the server's own (src/http/stats-wire.ts,
 * which imports nothing), so the bundle carries no server code and the two cannot drift apart.
 */
export type {
  ActivityEventJson,
  ClusterNodeStats,
  DatabaseDetail,
  DatabaseStats,
  NodeStats,
  StatsSnapshot,
} from '../src/http/stats-wire.js';
