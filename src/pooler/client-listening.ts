import { type Listener, listenChanges, type NotificationHub } from './notifications.js';
import { quoteIdent } from './session-errors.js';

/**
 * One client's part in its database's LISTEN/NOTIFY fan-out (notifications.ts): which channels it
 * listens to, what the session must run after its UNLISTEN or when it leaves, and the routing of
 * notifications out of its replies.
 */
export class ClientListening {
  private readonly listener: Listener;
  /** An UNLISTEN ran: the session must listen again to the channels other clients want. */
  private relisten = false;

  constructor(
    private readonly hub: NotificationHub,
    notify: (message: Uint8Array) => void,
    /** The client's BackendKeyData process id, written into the notifications it sends. */
    private readonly processId?: number,
  ) {
    this.listener = { notify };
  }

  /** Tracks the client's LISTEN/UNLISTEN statements in `sql` (before they run). */
  note(sql: string): void {
    for (const change of listenChanges(sql)) {
      if (change.kind === 'listen') this.hub.listen(this.listener, change.channel);
      else {
        this.hub.unlisten(this.listener, change.channel);
        this.relisten = true;
      }
    }
  }

  /** After a unit with UNLISTEN: SQL that listens again to every channel someone wants. */
  takeRelistenSql(): string | undefined {
    if (!this.relisten) return undefined;
    this.relisten = false;
    return this.hub.listenAllSql();
  }

  /** The client stops listening to everything: SQL for the channels nobody listens to any more. */
  leaveSql(): string | undefined {
    const unheard = this.hub.unlisten(this.listener, '*');
    return unheard.length > 0 ? unheard.map((ch) => `UNLISTEN ${quoteIdent(ch)}`).join('; ') : undefined;
  }

  /** A reply to this client with notifications sent on to whoever listens to them. */
  route(reply: Uint8Array): Uint8Array {
    return this.hub.active ? this.hub.route(reply, this.listener, this.processId) : reply;
  }
}
