import { z } from 'zod';

/**
 * Fault injection for test and development runs: the fault harness (test/helpers/cluster.ts)
 * runs in another process than the nodes and serves a small HTTP control API on loopback
 * (FAULT_CONTROL_URL, refused in production by config.ts). This client is what the admin API's
 * /v1/faults routes call: GET <url>/actions lists what the harness can do, POST <url>/run
 * {action, node} does it to one node.
 */

/** Fault injection as the admin API sees it. */
export interface FaultActions {
  /** Action names the harness offers, e.g. ['pause', 'resume', 'kill']. */
  actions(): Promise<readonly string[]>;
  /** Runs one action on one node (by NODE_ID); resolves once the harness applied it. */
  run(action: string, node: string): Promise<void>;
}

/** The harness refused (400, 404) or could not be reached or answered otherwise (502). */
export class FaultHarnessError extends Error {
  constructor(
    message: string,
    readonly status: 400 | 404 | 502,
  ) {
    super(message);
  }
}

const Actions = z.object({ actions: z.array(z.string().regex(/^[a-z][a-z0-9-]{0,40}$/)).max(50) });
const Refusal = z.object({ error: z.string().max(500) });

/** How long a call to the harness may take (a kill waits for the process to exit). */
const DEFAULT_TIMEOUT_MS = 15_000;

export class FaultControl implements FaultActions {
  private readonly base: string;

  constructor(
    url: string,
    private readonly timeoutMs = DEFAULT_TIMEOUT_MS,
  ) {
    this.base = url.replace(/\/+$/, '');
  }

  async actions(): Promise<readonly string[]> {
    const res = await this.call('GET', '/actions');
    const parsed = Actions.safeParse(await res.json().catch(() => undefined));
    if (!parsed.success) throw new FaultHarnessError('the fault harness answered an unexpected list', 502);
    return parsed.data.actions;
  }

  async run(action: string, node: string): Promise<void> {
    await this.call('POST', '/run', { action, node });
  }

  private async call(method: string, path: string, body?: unknown): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(`${this.base}${path}`, {
        method,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
        redirect: 'error',
      });
    } catch (err) {
      throw new FaultHarnessError(`the fault harness is unreachable: ${(err as Error).message}`, 502);
    }
    if (res.ok) return res;
    const refusal = Refusal.safeParse(await res.json().catch(() => undefined));
    const message = refusal.success ? refusal.data.error : `the fault harness answered ${res.status}`;
    throw new FaultHarnessError(message, res.status === 400 || res.status === 404 ? res.status : 502);
  }
}
