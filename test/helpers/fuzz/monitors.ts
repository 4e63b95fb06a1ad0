import pg from 'pg';
import type { GatewayProcess } from '../gateway-process.js';
import { withTimeout } from '../raw-auth.js';
import { type Findings, sleep } from './bookkeeping.js';

/** Monitors polled throughout a fuzz: /healthz, another database, /metrics. */

export interface MonitorReport {
  healthzPolls: number;
  worstHealthzMs: number;
  otherDbPolls: number;
  worstOtherDbMs: number;
  baseRss: number;
  maxRss: number;
  maxOpenDatabases: number;
  serverAlive: boolean;
}

export interface MonitorOptions {
  gateway: GatewayProcess;
  /** A database the fuzz does not touch; `select 1` on it must keep answering. */
  otherDb: pg.ClientConfig;
  findings: Findings;
  /** A poll slower than this is a hang. Default 15 s. */
  hangMs?: number;
  intervalMs?: number;
}

export class Monitors {
  private stopped = false;
  private loops: Promise<void>[] = [];
  private readonly report: MonitorReport = {
    healthzPolls: 0,
    worstHealthzMs: 0,
    otherDbPolls: 0,
    worstOtherDbMs: 0,
    baseRss: 0,
    maxRss: 0,
    maxOpenDatabases: 0,
    serverAlive: true,
  };

  constructor(private readonly opts: MonitorOptions) {}

  private get hangMs() {
    return this.opts.hangMs ?? 15_000;
  }

  private get interval() {
    return this.opts.intervalMs ?? 250;
  }

  async start(): Promise<void> {
    const m = await this.opts.gateway.metrics(this.hangMs);
    this.report.baseRss = m.rss;
    this.report.maxRss = m.rss;
    this.loops = [this.healthz(), this.otherDb(), this.metrics()];
  }

  private async healthz(): Promise<void> {
    while (!this.stopped) {
      const started = Date.now();
      try {
        const res = await this.opts.gateway.adminGet('/healthz', this.hangMs);
        if (res.status !== 200) this.opts.findings.violation(`/healthz answered ${res.status}`, res.body);
      } catch (err) {
        this.opts.findings.violation('/healthz did not answer', (err as Error).message);
      }
      this.report.healthzPolls++;
      this.report.worstHealthzMs = Math.max(this.report.worstHealthzMs, Date.now() - started);
      await sleep(this.interval);
    }
  }

  private async otherDb(): Promise<void> {
    let client: pg.Client | undefined;
    while (!this.stopped) {
      const started = Date.now();
      try {
        if (!client) {
          const c = new pg.Client({ ...this.opts.otherDb, connectionTimeoutMillis: this.hangMs });
          c.on('error', () => undefined);
          try {
            await c.connect();
          } catch (err) {
            await c.end().catch(() => undefined);
            throw err;
          }
          client = c;
        }
        const res = await withTimeout(
          client.query('select 1 as one'),
          this.hangMs,
          'select 1 on the other database',
        );
        if (res.rows[0]?.one !== 1) {
          this.opts.findings.violation('other database: select 1 answered wrongly', JSON.stringify(res.rows));
        }
      } catch (err) {
        this.opts.findings.violation('other database: select 1 failed', (err as Error).message);
        await client?.end().catch(() => undefined);
        client = undefined;
      }
      this.report.otherDbPolls++;
      this.report.worstOtherDbMs = Math.max(this.report.worstOtherDbMs, Date.now() - started);
      await sleep(this.interval);
    }
    await client?.end().catch(() => undefined);
  }

  private async metrics(): Promise<void> {
    while (!this.stopped) {
      if (!this.opts.gateway.alive()) {
        this.report.serverAlive = false;
        this.opts.findings.violation('the server process exited', `${this.opts.gateway.exitStatus()}`);
        return;
      }
      try {
        const m = await this.opts.gateway.metrics(this.hangMs);
        if (m.rss > this.report.maxRss) this.report.maxRss = m.rss;
        if (m.openDatabases > this.report.maxOpenDatabases) this.report.maxOpenDatabases = m.openDatabases;
      } catch (err) {
        this.opts.findings.violation('/metrics did not answer', (err as Error).message);
      }
      await sleep(1000);
    }
  }

  async stop(): Promise<MonitorReport> {
    this.stopped = true;
    await Promise.all(this.loops);
    this.report.serverAlive = this.report.serverAlive && this.opts.gateway.alive();
    return { ...this.report };
  }
}
