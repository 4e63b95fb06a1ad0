import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import type tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { cstr, tagged } from '../helpers/messages.js';
import { startupMessage, tlsConnect } from '../helpers/raw.js';
import { BackendReader, parseErrorFields } from '../helpers/raw-auth.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const xor = (a: Buffer, b: Buffer) => Buffer.from(a.map((v, i) => v ^ (b[i] as number)));
const hmac = (key: Buffer, data: string) => createHmac('sha256', key).update(data).digest();

/** Splits data at offsets (sorted, deduped, in range). */
const pieces = (data: Buffer, cuts: number[]) => {
  const cs = [...new Set(cuts)].filter((c) => c > 0 && c < data.length).sort((a, b) => a - b);
  const out: Buffer[] = [];
  let start = 0;
  for (const c of [...cs, data.length]) {
    out.push(data.subarray(start, c));
    start = c;
  }
  return out;
};

/** Parse backend messages of a whole reply. */
const messages = (data: Buffer) => {
  const out: { type: string; body: Buffer }[] = [];
  let i = 0;
  while (i + 5 <= data.length) {
    const len = data.readUInt32BE(i + 1);
    out.push({ type: String.fromCharCode(data[i] as number), body: data.subarray(i + 5, i + 1 + len) });
    i += 1 + len;
  }
  return out;
};

describe('login probes', () => {
  let gw: TestServer;
  let password = '';
  beforeAll(async () => {
    gw = await startTestServer({ LOGIN_TIMEOUT: '8s', AUTH_MAX_DELAY: '0' });
    password = await gw.createDatabase('probe');
  });
  afterAll(() => gw?.close());

  /** WebSocket: send pieces as separate frames (pause between), collect all until close. */
  const wsRun = (frames: Buffer[], pauseMs: number, timeoutMs = 7000) =>
    new Promise<{ data: Buffer; closed: boolean; ms: number }>((resolve, reject) => {
      const t0 = Date.now();
      const ws = new WebSocket(`wss://localhost:${gw.httpPort}/v2?address=probe.db.example.com:5432`, {
        ca: gw.ca,
      });
      const got: Buffer[] = [];
      const timer = setTimeout(() => {
        ws.terminate();
        resolve({ data: Buffer.concat(got), closed: false, ms: Date.now() - t0 });
      }, timeoutMs);
      ws.on('message', (d: Buffer) => got.push(d));
      ws.on('error', () => undefined);
      ws.once('close', () => {
        clearTimeout(timer);
        resolve({ data: Buffer.concat(got), closed: true, ms: Date.now() - t0 });
      });
      ws.once('open', async () => {
        for (const f of frames) {
          if (ws.readyState !== ws.OPEN) break;
          ws.send(f, { binary: true });
          if (pauseMs > 0) await sleep(pauseMs);
          else await new Promise((r) => setImmediate(r));
        }
      });
      ws.once('unexpected-response', () => reject(new Error('unexpected response')));
    });

  const wsLogin = () =>
    Buffer.concat([
      startupMessage({ user: 'postgres', database: 'postgres' }),
      tagged('p', cstr(password)),
      tagged('Q', cstr("select 'hello-' || 40+2 as v")),
      tagged('X'),
    ]);

  const wsOk = (data: Buffer) => {
    const ms = messages(data);
    const err = ms.find((m) => m.type === 'E');
    const row = ms.find((m) => m.type === 'D');
    return {
      ok: !err && !!row && row.body.toString().includes('hello-42'),
      err: err ? parseErrorFields(err.body) : undefined,
    };
  };

  it('(b) WebSocket: startup+password+query+X split into two frames at every offset', async () => {
    const all = wsLogin();
    const bad: string[] = [];
    for (let cut = 0; cut <= all.length; cut++) {
      const r = await wsRun(pieces(all, [cut]), 0);
      const v = wsOk(r.data);
      if (!v.ok || !r.closed) bad.push(`cut=${cut} closed=${r.closed} ms=${r.ms} err=${JSON.stringify(v.err)}`);
    }
    expect(bad).toEqual([]);
  });

  it('(b) WebSocket: three frames, cuts on a grid, with 5 ms pauses', async () => {
    const all = wsLogin();
    const bad: string[] = [];
    for (let a = 1; a < all.length; a += 3) {
      for (let b = a + 1; b < all.length; b += 7) {
        const r = await wsRun(pieces(all, [a, b]), 5);
        const v = wsOk(r.data);
        if (!v.ok || !r.closed) bad.push(`a=${a} b=${b} closed=${r.closed} ms=${r.ms} err=${JSON.stringify(v.err)}`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('(b) WebSocket: one byte per frame', async () => {
    const all = wsLogin();
    const cuts = Array.from({ length: all.length }, (_, i) => i);
    for (const pause of [0, 2]) {
      const r = await wsRun(pieces(all, cuts), pause, 15000);
      expect(wsOk(r.data), `pause ${pause}`).toMatchObject({ ok: true });
    }
  });

  it('(b) WebSocket: password first, then query after AuthenticationOk is seen (not pipelined)', async () => {
    const r = await wsRun(
      [Buffer.concat([startupMessage({ user: 'postgres', database: 'postgres' }), tagged('p', cstr(password))]),
        Buffer.concat([tagged('Q', cstr("select 'hello-' || 40+2 as v")), tagged('X')])],
      200,
    );
    expect(wsOk(r.data)).toMatchObject({ ok: true });
  });

  /** TCP/TLS SCRAM with every client message split at given offsets, optional pipelining. */
  const scram = async (o: {
    initialCuts?: number[];
    finalCuts?: number[];
    pauseMs?: number;
    /** Send startup + SASLInitialResponse together without waiting for R10. */
    pipelineInitial?: boolean;
    /** Appended to the SASLResponse (same write stream, cut together). */
    afterFinal?: Buffer;
    timeoutMs?: number;
  }) => {
    const timeout = o.timeoutMs ?? 7000;
    const pause = o.pauseMs ?? 1;
    const socket: tls.TLSSocket = await tlsConnect(gw.port, gw.ca, 'probe.db.example.com');
    try {
      const reader = new BackendReader(socket);
      const clientNonce = randomBytes(18).toString('base64');
      const clientFirstBare = `n=*,r=${clientNonce}`;
      const clientFirst = Buffer.from(`n,,${clientFirstBare}`);
      const len = Buffer.alloc(4);
      len.writeInt32BE(clientFirst.length);
      const initial = tagged('p', Buffer.concat([Buffer.from('SCRAM-SHA-256\0'), len, clientFirst]));
      const startup = startupMessage({ user: 'postgres', database: 'postgres' });
      const writeCut = async (data: Buffer, cuts: number[]) => {
        for (const p of pieces(data, cuts)) {
          socket.write(p);
          await sleep(pause);
        }
      };
      if (o.pipelineInitial) {
        await writeCut(Buffer.concat([startup, initial]), (o.initialCuts ?? []).map((c) => c + startup.length).concat([]));
      } else {
        socket.write(startup);
      }
      const r10 = await reader.message(timeout);
      if (r10.type !== 'R') return { err: parseErrorFields(r10.body) };
      if (!o.pipelineInitial) await writeCut(initial, o.initialCuts ?? []);
      const sf = await reader.message(timeout);
      if (sf.type !== 'R') return { err: parseErrorFields(sf.body) };
      const serverFirst = sf.body.subarray(4).toString();
      const attrs = Object.fromEntries(serverFirst.split(',').map((kv) => [kv[0], kv.slice(2)]));
      const salted = pbkdf2Sync(password, Buffer.from(attrs.s ?? '', 'base64'), Number(attrs.i), 32, 'sha256');
      const clientKey = hmac(salted, 'Client Key');
      const storedKey = createHash('sha256').update(clientKey).digest();
      const finalWithoutProof = `c=biws,r=${attrs.r}`;
      const authMessage = `${clientFirstBare},${serverFirst},${finalWithoutProof}`;
      const proof = xor(clientKey, hmac(storedKey, authMessage)).toString('base64');
      const fin = tagged('p', Buffer.from(`${finalWithoutProof},p=${proof}`));
      await writeCut(Buffer.concat([fin, o.afterFinal ?? Buffer.alloc(0)]), o.finalCuts ?? []);
      const got: { type: string; body: Buffer }[] = [];
      for (;;) {
        const m = await reader.message(timeout);
        got.push(m);
        if (m.type === 'E') return { err: parseErrorFields(m.body), got };
        if (m.type === 'Z') {
          if (!o.afterFinal) return { ok: true, got };
          const zs = got.filter((x) => x.type === 'Z').length;
          if (zs >= 2) return { ok: true, got };
        }
      }
    } finally {
      socket.destroy();
    }
  };

  it('(c) SCRAM over TLS: SASLInitialResponse split at every offset', async () => {
    const bad: string[] = [];
    for (let cut = 0; cut <= 70; cut++) {
      const r = await scram({ initialCuts: [cut] }).catch((e: Error) => ({ err: { M: e.message } }));
      if (!('ok' in r)) bad.push(`cut=${cut} ${JSON.stringify(r.err)}`);
    }
    expect(bad).toEqual([]);
  });

  it('(c) SCRAM over TLS: startup+SASLInitialResponse pipelined, split at every offset of the initial', async () => {
    const bad: string[] = [];
    for (let cut = -1; cut <= 70; cut++) {
      const r = await scram({ pipelineInitial: true, initialCuts: cut < 0 ? [] : [cut] }).catch((e: Error) => ({
        err: { M: e.message },
      }));
      if (!('ok' in r)) bad.push(`cut=${cut} ${JSON.stringify(r.err)}`);
    }
    expect(bad).toEqual([]);
  });

  it('(c) SCRAM over TLS: SASLResponse (+ pipelined Query) split at every offset', async () => {
    const q = tagged('Q', cstr("select 'hello-' || 40+2"));
    const bad: string[] = [];
    for (const after of [undefined, q]) {
      for (let cut = 0; cut <= 110 + (after ? after.length : 0); cut++) {
        const r = await scram({ finalCuts: [cut], afterFinal: after }).catch((e: Error) => ({ err: { M: e.message } }));
        if (!('ok' in r)) bad.push(`after=${!!after} cut=${cut} ${JSON.stringify(r.err)}`);
        else if (after && !r.got?.some((m) => m.type === 'D' && m.body.toString().includes('hello-42')))
          bad.push(`after cut=${cut}: no row`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('(c) SCRAM over TLS: SASLResponse + Query byte by byte, and with a 200 KiB query', async () => {
    const q = tagged('Q', cstr("select 'hello-' || 40+2"));
    const cuts = Array.from({ length: 200 }, (_, i) => i);
    const r = await scram({ finalCuts: cuts, afterFinal: q, pauseMs: 0 });
    expect(r).toMatchObject({ ok: true });
    const big = tagged('Q', cstr(`select length('${'x'.repeat(200 * 1024)}') || '-hello-42'`));
    const r2 = await scram({ finalCuts: [50, 120, 70_000, 140_000], afterFinal: big });
    expect(r2).toMatchObject({ ok: true });
  });
});
