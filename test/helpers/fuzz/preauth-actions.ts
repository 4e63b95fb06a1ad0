import { Duplex } from 'node:stream';
import tls from 'node:tls';
import fc from 'fast-check';

/** Pre-authentication fuzz: the generated actions (reproducible from seed + index). */

export type PreauthAction =
  | { kind: 'random'; bytes: Uint8Array; cuts: number[]; pause: number }
  | {
      kind: 'partial';
      packet: 'ssl' | 'gss' | 'cancel' | 'startup';
      cuts: number[];
      keepFraction: number;
      pause: number;
    }
  | { kind: 'oversized'; length: number; code: number }
  | { kind: 'tls-garbage'; bytes: Uint8Array }
  | { kind: 'hello-mutant'; cutFraction: number; flips: number[] }
  | { kind: 'slowloris'; intervalMs: number; tls: boolean }
  | { kind: 'idle' }
  | { kind: 'tls-stall'; stage: 'handshake-done' | 'startup-partial' | 'after-startup' | 'mid-scram' }
  | { kind: 'bad-password'; startupCut: number }
  | { kind: 'bad-sni'; servername: string };

export const preauthActionArb: fc.Arbitrary<PreauthAction> = fc.oneof(
  fc.record({
    kind: fc.constant('random' as const),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 300 }),
    cuts: fc.array(fc.nat({ max: 300 }), { maxLength: 5 }),
    pause: fc.integer({ min: 0, max: 50 }),
  }),
  fc.record({
    kind: fc.constant('partial' as const),
    packet: fc.constantFrom('ssl' as const, 'gss' as const, 'cancel' as const, 'startup' as const),
    cuts: fc.array(fc.nat({ max: 60 }), { minLength: 1, maxLength: 6 }),
    keepFraction: fc.oneof(fc.constant(1), fc.double({ min: 0, max: 1, noNaN: true })),
    pause: fc.integer({ min: 1, max: 100 }),
  }),
  fc.record({
    kind: fc.constant('oversized' as const),
    length: fc.oneof(fc.integer({ min: 10_001, max: 0xffffffff }), fc.integer({ min: 0, max: 7 })),
    code: fc.constantFrom(196608, 80877103, 80877102, 80877104, 0x12345678),
  }),
  fc.record({
    kind: fc.constant('tls-garbage' as const),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 400 }),
  }),
  fc.record({
    kind: fc.constant('hello-mutant' as const),
    cutFraction: fc.double({ min: 0, max: 1, noNaN: true }),
    flips: fc.array(fc.nat({ max: 400 }), { maxLength: 4 }),
  }),
  fc.record({
    kind: fc.constant('slowloris' as const),
    intervalMs: fc.integer({ min: 150, max: 250 }),
    tls: fc.boolean(),
  }),
  fc.constant({ kind: 'idle' as const }),
  fc.record({
    kind: fc.constant('tls-stall' as const),
    stage: fc.constantFrom(
      'handshake-done' as const,
      'startup-partial' as const,
      'after-startup' as const,
      'mid-scram' as const,
    ),
  }),
  fc.record({ kind: fc.constant('bad-password' as const), startupCut: fc.nat({ max: 45 }) }),
  fc.record({
    kind: fc.constant('bad-sni' as const),
    servername: fc.constantFrom(
      'nosuchdb.db.example.com',
      'UPPER.db.example.com',
      'x.other.example',
      'db.example.com',
    ),
  }),
);

export function preauthActionAt(seed: number, index: number): PreauthAction {
  const [action] = fc.sample(preauthActionArb, { seed: (seed + index) | 0, numRuns: 1 });
  return action as PreauthAction;
}

export function describeAction(action: PreauthAction): string {
  return JSON.stringify(action, (_, v) =>
    v instanceof Uint8Array ? `${v.length} bytes: ${Buffer.from(v).subarray(0, 64).toString('hex')}` : v,
  );
}

let helloCache: Buffer | undefined;

/** A real TLS ClientHello for `target.db.example.com`, captured from Node's TLS client. */
export async function captureClientHello(servername: string): Promise<Buffer> {
  if (helloCache) return helloCache;
  const hello = await new Promise<Buffer>((resolve, reject) => {
    const duplex = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        resolve(Buffer.from(chunk));
        cb();
      },
    });
    const socket = tls.connect({ socket: duplex, servername, rejectUnauthorized: false });
    socket.on('error', () => undefined);
    setTimeout(() => reject(new Error('no ClientHello')), 5000).unref();
    setTimeout(() => socket.destroy(), 100).unref();
  });
  helloCache = hello;
  return hello;
}
