import { backendMessages } from '../wire/backend-scan.js';
import { identifierName, leadingWords, statements, type Token } from './sql-lexer.js';

/**
 * LISTEN/NOTIFY across the clients of one database. The database has one Postgres session; it
 * listens to the union of its clients' channels, and each NotificationResponse it produces
 * (in the reply to whichever client's statement made it arrive) goes to exactly the clients
 * listening on its channel, the sender included only if it listens. PgBouncer cannot do this in
 * transaction mode: there the notification would go to whoever happens to hold the session.
 */

/** A client that can receive notifications outside its own replies. */
export interface Listener {
  notify(message: Uint8Array): void;
}

export class NotificationHub {
  private readonly byChannel = new Map<string, Set<Listener>>();
  private readonly byListener = new Map<Listener, Set<string>>();

  /** Whether any client listens: replies are scanned for notifications only then. */
  get active(): boolean {
    return this.byChannel.size > 0;
  }

  listens(listener: Listener): boolean {
    return this.byListener.has(listener);
  }

  listen(listener: Listener, channel: string): void {
    const listeners = this.byChannel.get(channel) ?? new Set<Listener>();
    this.byChannel.set(channel, listeners.add(listener));
    const channels = this.byListener.get(listener) ?? new Set<string>();
    this.byListener.set(listener, channels.add(channel));
  }

  /** Stops one channel, or all of the listener's (`*`). Returns channels nobody listens to any more. */
  unlisten(listener: Listener, channel: string): string[] {
    const channels = this.byListener.get(listener);
    if (!channels) return [];
    const dropped: string[] = [];
    for (const ch of channel === '*' ? [...channels] : [channel]) {
      if (!channels.delete(ch)) continue;
      const listeners = this.byChannel.get(ch);
      listeners?.delete(listener);
      if (listeners?.size === 0) {
        this.byChannel.delete(ch);
        dropped.push(ch);
      }
    }
    if (channels.size === 0) this.byListener.delete(listener);
    return dropped;
  }

  /** SQL that makes the session listen to every channel someone wants (after UNLISTEN, a restart). */
  listenAllSql(): string | undefined {
    if (this.byChannel.size === 0) return undefined;
    return [...this.byChannel.keys()].map((ch) => `LISTEN ${quoteIdent(ch)}`).join('; ');
  }

  /**
   * Takes the notifications out of a reply to `sender`: each goes to the other clients listening
   * on its channel; the sender keeps those it listens to, in place. The database has one session,
   * so a notification arrives in the reply to the client whose transaction sent it: with
   * `senderPid` (that client's BackendKeyData process id) it replaces PGlite's constant one, so
   * clients can tell their own notifications from others'. Returns the reply to send.
   */
  route(reply: Uint8Array, sender: Listener, senderPid?: number): Uint8Array {
    let out: Uint8Array[] | undefined;
    let copied = 0;
    for (const m of backendMessages(reply)) {
      if (m.code !== 0x41) continue; // 'A' NotificationResponse
      const message = Buffer.from(reply.subarray(m.start, m.end));
      if (senderPid !== undefined && message.length >= 9) message.writeInt32BE(senderPid, 5);
      const channel = notificationChannel(message);
      const listeners = channel === undefined ? undefined : this.byChannel.get(channel);
      for (const listener of listeners ?? []) if (listener !== sender) listener.notify(Buffer.from(message));
      out ??= [];
      out.push(reply.subarray(copied, m.start));
      if (listeners?.has(sender)) out.push(message);
      copied = m.end;
    }
    if (!out) return reply;
    out.push(reply.subarray(copied));
    return Buffer.concat(out);
  }
}

/** The channel of a NotificationResponse (int32 pid, channel, payload). */
function notificationChannel(message: Uint8Array): string | undefined {
  const buf = Buffer.from(message.buffer, message.byteOffset, message.byteLength);
  const end = buf.indexOf(0, 9);
  return end < 0 ? undefined : buf.toString('utf8', 9, end);
}

const quoteIdent = (name: string) => `"${name.replace(/"/g, '""')}"`;

export type ListenChange = { kind: 'listen' | 'unlisten'; channel: string };

/** LISTEN/UNLISTEN statements in a SQL text, with their channels as Postgres names them. */
export function listenChanges(sql: string): ListenChange[] {
  if (!/listen/i.test(sql)) return [];
  const out: ListenChange[] = [];
  for (const statement of statements(sql)) {
    const [first] = leadingWords(statement, 1);
    if (first !== 'listen' && first !== 'unlisten') continue;
    const channel = channelName(statement[1], statement.slice(2));
    if (channel !== undefined) out.push({ kind: first, channel });
  }
  return out;
}

/** The channel as Postgres names it in the notifications it sends (see identifierName). */
function channelName(token: Token | undefined, next: readonly Token[]): string | undefined {
  if (token?.kind === 'symbol' && token.text === '*') return '*';
  return identifierName(token, next);
}
