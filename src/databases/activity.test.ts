import { describe, expect, it } from 'vitest';
import { CloseCause, NodeActivity } from './activity.js';

describe('NodeActivity', () => {
  it('counts units, transactions and waits per database and for the node', () => {
    const node = new NodeActivity();
    const seen: string[] = [];
    node.observe({ unit: (db, s, tx) => seen.push(`${db}:${s}:${tx}`) });
    const a = node.of('a');
    a.unitDone(2, false);
    a.unitDone(4, true);
    a.waited(500);
    expect(a.units).toBe(2);
    expect(a.transactions).toBe(1);
    expect(a.waitSeconds).toBe(0.5);
    expect(node.totals.units).toBe(2);
    expect(node.totals.unitSeconds).toBeCloseTo(0.006);
    expect(node.totals.transactions).toBe(1);
    expect(seen).toEqual(['a:0.002:false', 'a:0.004:true']);
    expect(node.of('a')).toBe(a);
    expect(node.peek('b')).toBeUndefined();
  });

  it('keeps a bounded ring of recent latencies, oldest first', () => {
    const a = new NodeActivity().of('a');
    for (let i = 0; i < 500; i++) a.unitDone(i, true);
    const recent = a.recentLatencies();
    expect(recent).toHaveLength(120);
    expect(recent[0]?.[1]).toBe(380);
    expect(recent.at(-1)?.[1]).toBe(499);
  });

  it('keeps a bounded ring of events with increasing sequence numbers', () => {
    const node = new NodeActivity();
    const heard: number[] = [];
    const stop = node.onEvent((e) => heard.push(e.seq));
    for (let i = 0; i < 300; i++) node.opened(`db${i}`, 0.1);
    stop();
    node.closed('db0', CloseCause.idle);
    const events = node.recentEvents();
    expect(events).toHaveLength(200);
    expect(events.at(-1)).toMatchObject({ kind: 'close', db: 'db0', detail: 'idle' });
    expect(node.recentEvents(events.at(-2)?.seq)).toHaveLength(1);
    expect(heard).toHaveLength(300);
    expect(node.totals.opens).toBe(300);
    expect(node.totals.closes.idle).toBe(1);
  });

  it('counts archive work and failures by operation', () => {
    const node = new NodeActivity();
    node.snapshot('a', 0.2, 1000);
    node.walShipped('a', 0.01, 8192);
    node.archiveError('a', 'wal', new Error('S3 down'));
    node.archiveError('a', 'snapshot', new Error('S3 down'));
    expect(node.totals).toMatchObject({
      snapshots: 1,
      snapshotBytes: 1000,
      walBytes: 8192,
      walErrors: 1,
      snapshotErrors: 1,
    });
    expect(node.of('a').lastSnapshotBytes).toBe(1000);
    expect(node.recentEvents().filter((e) => e.kind === 'error')).toHaveLength(2);
  });
});
