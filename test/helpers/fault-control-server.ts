import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { HarnessNode } from './cluster.js';

/**
 * The fault harness's control API, on loopback: what a node's admin API proxies when it runs with
 * FAULT_CONTROL_URL (src/http/fault-control.ts), so the dashboard of any node can pause, kill or
 * isolate any node of the harness. GET /actions → {actions}; POST /run {action, node} → 204, or
 * 404 for an unknown action or node. Every fault is bounded: a pause or a catalog cut heals by
 * itself after MAX_FAULT_MS.
 */

export const FAULT_ACTIONS = [
  'pause',
  'resume',
  'kill',
  'restart',
  'isolate',
  'isolate-catalog',
  'heal',
] as const;
export type FaultAction = (typeof FAULT_ACTIONS)[number];

/** Longest a pause or an isolation lasts without a resume or a heal. */
const MAX_FAULT_MS = 120_000;
const MAX_BODY = 4096;

export interface FaultControlServer {
  /** http://127.0.0.1:<port>: the nodes' FAULT_CONTROL_URL. */
  url: string;
  /** Actions run so far, oldest first (for tests): `action node`. */
  readonly log: string[];
  close(): Promise<void>;
}

export async function startFaultControl(nodes: () => readonly HarnessNode[]): Promise<FaultControlServer> {
  const pauses = new Map<string, NodeJS.Timeout>();
  const log: string[] = [];
  const resume = (node: HarnessNode) => {
    clearTimeout(pauses.get(node.id));
    pauses.delete(node.id);
    node.resume();
  };
  const apply = async (action: FaultAction, node: HarnessNode): Promise<void> => {
    switch (action) {
      case 'pause': {
        node.pause();
        clearTimeout(pauses.get(node.id));
        const timer = setTimeout(() => resume(node), MAX_FAULT_MS);
        timer.unref();
        pauses.set(node.id, timer);
        return;
      }
      case 'resume':
        return resume(node);
      case 'kill':
        return node.kill9();
      case 'restart':
        // Answered at once: the node takes seconds to start, and may be the one that asked.
        void node.restart().catch(() => undefined);
        return;
      case 'isolate':
        // Cut off from everything it talks to: the catalog, the archive and its peers.
        for (const proxy of Object.values(node.faults)) proxy.fault('blackhole', MAX_FAULT_MS);
        return;
      case 'isolate-catalog':
        return node.faults.catalog.fault('blackhole', MAX_FAULT_MS);
      case 'heal':
        for (const proxy of Object.values(node.faults)) proxy.heal();
        return resume(node);
    }
  };
  const server = http.createServer((req, res) => {
    const answer = (status: number, body?: unknown) => {
      res.writeHead(status, body === undefined ? {} : { 'content-type': 'application/json' });
      res.end(body === undefined ? undefined : JSON.stringify(body));
    };
    if (req.method === 'GET' && req.url === '/actions') return answer(200, { actions: FAULT_ACTIONS });
    if (req.method !== 'POST' || req.url !== '/run') return answer(404, { error: 'not found' });
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => {
      body += chunk;
      if (body.length > MAX_BODY) req.destroy();
    });
    req.on('end', () => {
      let parsed: { action?: unknown; node?: unknown };
      try {
        parsed = JSON.parse(body) as typeof parsed;
      } catch {
        return answer(400, { error: 'expected JSON {action, node}' });
      }
      const action = FAULT_ACTIONS.find((a) => a === parsed.action);
      if (!action) return answer(404, { error: `no fault action "${String(parsed.action)}"` });
      const node = nodes().find((n) => n.id === parsed.node);
      if (!node) return answer(404, { error: `no node "${String(parsed.node)}" in the harness` });
      log.push(`${action} ${node.id}`);
      apply(action, node).then(
        () => answer(204),
        (err: unknown) => answer(500, { error: (err as Error).message }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    log,
    close: async () => {
      for (const node of nodes()) if (pauses.has(node.id)) resume(node);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
