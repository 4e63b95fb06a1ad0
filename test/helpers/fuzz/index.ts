/**
 * Protocol fuzzing of a gateway in a child process, shared by the integration tests (short runs)
 * and `scripts/fuzz.ts` (long runs):
 *
 * - `runProtocolFuzz`: raw clients that log in for real, then send random sequences of valid and
 *   invalid frontend messages, split at random offsets with pauses, to ONE database, while a
 *   well-behaved client commits counter increments on it.
 * - `runPreauthFuzz`: random and partial pre-authentication traffic that must never open a
 *   database and must be cut off by LOGIN_TIMEOUT.
 * - `Monitors`: /healthz, a query on a second database and /metrics (RSS), polled throughout.
 *
 * Every run is generated from `seed + index`, so a failing run can be replayed alone.
 *
 * This file is the public API; the modules beside it hold one part each, and the helpers they
 * share among themselves (byte builders, `sleep`, the response collector) stay out of it.
 */
export { Findings } from './bookkeeping.js';
export { CounterClient, type CounterReport, FUZZ_SCHEMA } from './counter-client.js';
export { type Piece, tagged } from './frontend-messages.js';
export { type MonitorOptions, type MonitorReport, Monitors } from './monitors.js';
export { describeRun, type ProtocolRun, protocolRunArb, protocolRunAt } from './pieces.js';
export {
  captureClientHello,
  describeAction,
  type PreauthAction,
  preauthActionArb,
  preauthActionAt,
} from './preauth-actions.js';
export { type PreauthOptions, type PreauthStats, runPreauthAction, runPreauthFuzz } from './preauth-fuzz.js';
export {
  type ProtocolFuzzOptions,
  type ProtocolFuzzStats,
  runProtocolFuzz,
  runProtocolSequence,
  type Target,
} from './protocol-fuzz.js';
export { type FuzzSummary, formatSummary } from './reporting.js';
export { errorProblem, postgresOwnInternalError, rawTextProblem } from './server-answers.js';
export { SQL_HOSTILE, SQL_ORDINARY } from './sql.js';
