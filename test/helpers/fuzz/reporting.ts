import type { Findings } from './bookkeeping.js';
import type { CounterReport } from './counter-client.js';
import type { MonitorReport } from './monitors.js';
import type { PreauthStats } from './preauth-fuzz.js';
import type { ProtocolFuzzStats } from './protocol-fuzz.js';

/** Reporting: the summary a fuzz run prints. */

export interface FuzzSummary {
  seed: number;
  protocol?: ProtocolFuzzStats;
  preauth?: PreauthStats;
  counter?: CounterReport;
  monitors?: MonitorReport;
  findings: Findings;
  serverErrorLines: string[];
}

export function formatSummary(s: FuzzSummary): string {
  const mb = (n: number) => `${Math.round(n / (1024 * 1024))} MiB`;
  const lines = [`seed: ${s.seed}`];
  if (s.protocol) {
    lines.push(
      `protocol fuzz: ${s.protocol.runs} runs, ${s.protocol.messagesSent} messages, ${s.protocol.bytesSent} bytes sent`,
    );
  }
  if (s.preauth)
    lines.push(`pre-auth fuzz: ${s.preauth.actions} actions, ${s.preauth.idleConnections} idle connections`);
  lines.push(`outcomes: ${JSON.stringify(Object.fromEntries(s.findings.outcomes))}`);
  lines.push(
    `errors by SQLSTATE: ${JSON.stringify(Object.fromEntries([...s.findings.errorsByCode].sort((a, b) => b[1] - a[1])))}`,
  );
  if (s.counter) {
    const c = s.counter;
    lines.push(
      `counter: ${c.counter} = acknowledged ${c.acknowledged} + in-doubt committed ${c.inDoubtCommitted}/${c.inDoubt}: ` +
        `${c.ok ? 'OK' : `FAILED (${c.problems.join('; ')})`}; counter client errors ${JSON.stringify(c.errorsByCode)}`,
    );
  }
  if (s.monitors) {
    const m = s.monitors;
    lines.push(
      `server alive: ${m.serverAlive}; RSS ${mb(m.baseRss)} -> max ${mb(m.maxRss)} (growth ${mb(m.maxRss - m.baseRss)}); ` +
        `open databases max ${m.maxOpenDatabases}`,
    );
    lines.push(
      `worst /healthz ${m.worstHealthzMs} ms (${m.healthzPolls} polls); worst other-db query ${m.worstOtherDbMs} ms (${m.otherDbPolls} polls)`,
    );
  }
  for (const [kind, examples] of s.findings.notes) {
    lines.push(`note: ${kind} (e.g.):`, ...examples.map((e) => `  ${e.replace(/\n/g, '\n  ')}`));
  }
  if (s.serverErrorLines.length > 0) {
    lines.push(
      `server error log lines: ${s.serverErrorLines.length}`,
      ...s.serverErrorLines.slice(0, 5).map((l) => `  ${l.slice(0, 600)}`),
    );
  }
  lines.push(`violations: ${s.findings.violations.size === 0 ? 'none' : ''}`);
  for (const [kind, v] of s.findings.violations) {
    lines.push(
      `  - ${kind} (x${v.count}), e.g.:`,
      ...v.examples.map((e) => `      ${e.replace(/\n/g, '\n      ')}`),
    );
  }
  return lines.join('\n');
}
