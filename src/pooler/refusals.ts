import type { GatewayError } from '../errors.js';
import { backendMessages } from '../wire/backend-scan.js';
import { errorResponse, readErrorFields } from '../wire/protocol.js';

/**
 * Gateway errors raised inside the session. A refused statement is replaced by one that fails in
 * the engine (so a transaction around it is aborted there too, as Postgres would), and the
 * engine's error for it is replaced by the gateway's own on the way to the client.
 */
export class Refusals {
  private readonly pending = new Map<string, GatewayError>();
  private count = 0;

  get size(): number {
    return this.pending.size;
  }

  /** SQL that fails in the engine with an error `replace` turns into `error`. */
  sql(error: GatewayError): string {
    return `SELECT pg_catalog.${this.marker(error)}()`;
  }

  /** A word that, found in the message of an engine's error, has `replace` put `error` there. */
  marker(error: GatewayError): string {
    const marker = `pglite_gateway_refusal_${++this.count}`;
    this.pending.set(marker, error);
    return marker;
  }

  /** Markers of statements skipped after an earlier error are dropped at the end of a unit. */
  clear(): void {
    this.pending.clear();
  }

  /** Replaces the engine's ErrorResponses for pending markers by the gateway's errors. */
  replace(response: Uint8Array): Uint8Array {
    if (this.pending.size === 0) return response;
    let out: Uint8Array[] | undefined;
    let copied = 0;
    for (const m of backendMessages(response)) {
      if (m.code !== 0x45) continue;
      const message = readErrorFields(response.subarray(m.start, m.end)).get('M') ?? '';
      const marker = /pglite_gateway_refusal_\d+/.exec(message)?.[0];
      const error = marker ? this.pending.get(marker) : undefined;
      if (!marker || !error) continue;
      this.pending.delete(marker);
      out ??= [];
      out.push(response.subarray(copied, m.start), errorResponse(error));
      copied = m.end;
    }
    if (!out) return response;
    out.push(response.subarray(copied));
    return Buffer.concat(out);
  }
}
