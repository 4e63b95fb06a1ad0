import type { GatewayProcess } from '../gateway-process.js';
import { rawLogin, writeSplit } from '../raw-auth.js';
import { type Findings, ResponseCollector, sleep } from './bookkeeping.js';
import { cstr, tagged } from './frontend-messages.js';
import { describeRun, type ProtocolRun, protocolRunAt } from './pieces.js';
import { errorProblem, postgresOwnInternalError } from './server-answers.js';

/** Protocol fuzz after authentication: raw clients that log in, then send generated sequences. */

export interface Target {
  gateway: GatewayProcess;
  id: string;
  password: string;
}

export interface ProtocolFuzzOptions {
  target: Target;
  /** Stop starting runs after this long. */
  durationMs: number;
  /** Concurrent raw clients. */
  clients: number;
  seed: number;
  /** MAX_MESSAGE_SIZE the gateway runs with. */
  maxMessageSize: number;
  /** Stop after this many runs even if time is left. */
  maxRuns?: number;
  /** How long a well-framed sequence may go unanswered before it counts as a hang. Default 30 s. */
  answerTimeoutMs?: number;
  findings: Findings;
  /** Progress lines (the script prints them). */
  log?: (line: string) => void;
}

export interface ProtocolFuzzStats {
  runs: number;
  messagesSent: number;
  bytesSent: number;
}

/** Appended to a well-framed sequence: leave COPY, end the unit, end the transaction, then a marker row. */
function trailer(marker: string): Buffer {
  return Buffer.concat([
    tagged('f', cstr('fuzz: end of sequence')),
    tagged('S', Buffer.alloc(0)),
    tagged('Q', cstr('ROLLBACK')),
    tagged('Q', cstr('RESET ALL')),
    tagged('Q', cstr(`SELECT '${marker}'`)),
  ]);
}

/** Runs one generated sequence on a fresh raw connection and records what the server said. */
export async function runProtocolSequence(
  opts: Pick<ProtocolFuzzOptions, 'target' | 'findings' | 'answerTimeoutMs'>,
  run: ProtocolRun,
  where: string,
): Promise<{ messages: number; bytes: number }> {
  const { target, findings } = opts;
  const session = await rawLogin({
    port: target.gateway.port,
    ca: target.gateway.ca,
    id: target.id,
    password: target.password,
    sslRequestSplits: run.loginSplit === null ? [] : [run.loginSplit],
    pauseMs: 5,
    stepTimeoutMs: 20_000,
  });
  const marker = `fuzz-marker-${where.replace(/\W/g, '-')}`;
  const collector = new ResponseCollector(session.socket, Buffer.from(marker), session.leftover);
  const framed = run.pieces.every((p) => p.framed);
  const endsItself = run.pieces.some((p) => p.terminates);
  const stream = Buffer.concat(run.pieces.map((p) => p.bytes));
  let cuts = run.cuts.map((c) => Math.floor(c * stream.length));
  if (run.byteByByte)
    cuts = [...cuts, ...Array.from({ length: Math.min(200, stream.length) }, (_, i) => i + 1)];
  const pauseAt = (i: number) =>
    run.byteByByte && i < 200 ? i % 3 : (run.pauses[i % run.pauses.length] ?? 0);
  let messages = run.pieces.reduce((n, p) => n + p.messages, 0);
  let bytes = stream.length;
  try {
    const written = await writeSplit(session.socket, stream, cuts, pauseAt);
    let outcome: string;
    if (written && framed && !endsItself) {
      const tail = trailer(marker);
      session.socket.write(tail);
      messages += 5;
      bytes += tail.length;
      const readyBefore = collector.readyCount;
      const answered = await collector.until(
        () => collector.markerSeen || collector.closed,
        opts.answerTimeoutMs ?? 30_000,
      );
      if (collector.markerSeen) outcome = 'answered';
      else if (collector.closed)
        outcome = collector.errors.length > 0 ? 'closed with error' : 'closed silently';
      else if (!answered && collector.readyCount > readyBefore) {
        outcome = 'marker lost';
        findings.note(outcome, `${where}\n${describeRun(run)}`);
      } else {
        outcome = 'hang';
        findings.violation(
          `hang: a well-framed sequence got no answer within ${(opts.answerTimeoutMs ?? 30_000) / 1000} s`,
          `${where}\n${describeRun(run)}`,
        );
      }
    } else {
      // Framing is lost (or the client said goodbye): the server may wait for more; give it a moment.
      await collector.until(() => collector.closed, endsItself && framed ? 5000 : 500);
      outcome = collector.closed ? 'closed' : 'left waiting';
      if (!collector.closed && endsItself && framed) {
        findings.note('still open 5 s after a Terminate', `${where}\n${describeRun(run)}`);
      }
    }
    if (outcome === 'closed silently' && !endsItself) {
      findings.note('closed without an ErrorResponse', `${where}\n${describeRun(run)}`);
    }
    findings.outcome(outcome);
    if (collector.flooded) {
      findings.violation(
        'flood: the server kept answering (>500 ErrorResponses or >64 MiB)',
        `${where}: ${collector.errors.length} ErrorResponses, ${collector.bytes} bytes\n${describeRun(run)}`,
      );
    }
    for (const fields of collector.errors) {
      findings.error(fields);
      if (postgresOwnInternalError(fields))
        findings.note("PostgreSQL's own XX000 (as a real server)", fields.M ?? '');
      const problem = errorProblem(fields);
      if (problem) {
        findings.violation(
          `bad ErrorResponse: ${problem}`,
          `${where}: ${fields.S} ${fields.C} ${JSON.stringify(fields.M)}\n${describeRun(run)}`,
        );
      }
    }
  } finally {
    session.socket.destroy();
  }
  return { messages, bytes };
}

/** Several raw clients running generated sequences against one database until the time is up. */
export async function runProtocolFuzz(opts: ProtocolFuzzOptions): Promise<ProtocolFuzzStats> {
  const stats: ProtocolFuzzStats = { runs: 0, messagesSent: 0, bytesSent: 0 };
  const deadline = Date.now() + opts.durationMs;
  let next = 0;
  const worker = async (w: number) => {
    while (Date.now() < deadline && (opts.maxRuns === undefined || next < opts.maxRuns)) {
      const index = next++;
      const run = protocolRunAt(opts.seed, index, opts.maxMessageSize);
      const where = `seed ${opts.seed} run ${index}`;
      opts.findings.runStarted(where);
      try {
        const sent = await runProtocolSequence(opts, run, where);
        stats.messagesSent += sent.messages;
        stats.bytesSent += sent.bytes;
      } catch (err) {
        // Logging in must keep working whatever other clients do.
        opts.findings.violation(
          'fuzz client could not log in or talk',
          `${where} (client ${w}): ${(err as Error).message}`,
        );
        await sleep(200);
      }
      stats.runs++;
      if (stats.runs % 50 === 0) opts.log?.(`protocol fuzz: ${stats.runs} runs`);
    }
  };
  await Promise.all(Array.from({ length: opts.clients }, (_, w) => worker(w)));
  return stats;
}
