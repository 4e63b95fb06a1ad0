import type { Socket } from 'node:net';
import { errors } from '../errors.js';
import type { Logger } from '../log.js';
import { MessageFramer } from '../wire/framer.js';
import { Backend, Frontend, message } from '../wire/protocol.js';
import { ReplyReader } from '../wire/sql-over-http.js';
import { ResponseTooLarge, settleUnit, type UnitRun } from './session-unit.js';

/**
 * Runs one SQL-over-HTTP unit on a database another node owns (cluster mode), over a forwarded
 * session to that owner: the owner sends its startup answer (ParameterStatus, BackendKeyData,
 * ReadyForQuery), then the unit's messages get their replies until ReadyForQuery, exactly as on
 * a local session. A transaction the unit left open is rolled back; the session then ends.
 */

/** Headroom for one backend message beyond the response limit before it is refused unread. */
const MESSAGE_SLACK = 64 * 1024;

export interface RemoteUnitOptions {
  id: string;
  messages: Buffer[];
  /** As UnitOptions.commit: the batch is committed once its reply proved whole. */
  commit?: boolean | undefined;
  maxResponseBytes: number;
  /** Rows as arrays (Neon-Array-Mode): their JSON has no column names, so more fit the limit. */
  arrayMode?: boolean | undefined;
  logger: Logger;
  /** The forwarded session to the owner (Cluster.dialOwner). */
  dial: () => Promise<{ socket: Socket; rest: Buffer }>;
  /** Sends a CancelRequest for the owner's key (it reaches the owner through the cluster). */
  cancelKey: (processId: number, secretKey: number) => void;
}

export function runRemoteUnit(opts: RemoteUnitOptions): UnitRun {
  let cancelled = false;
  let key: { processId: number; secretKey: number } | undefined;
  const reply = run(opts, {
    keyed: (k) => {
      key = k;
      if (cancelled) opts.cancelKey(k.processId, k.secretKey);
    },
  });
  return {
    reply,
    cancel: () => {
      cancelled = true;
      if (key) opts.cancelKey(key.processId, key.secretKey);
    },
  };
}

async function run(
  opts: RemoteUnitOptions,
  hooks: { keyed: (key: { processId: number; secretKey: number }) => void },
): Promise<ReplyReader> {
  const { socket, rest } = await opts.dial();
  const framer = new MessageFramer(() => opts.maxResponseBytes + MESSAGE_SLACK);
  /** Replies before the owner's first ReadyForQuery belong to the session's start, not the unit. */
  let started = false;
  let reader = new ReplyReader(opts.maxResponseBytes, opts.arrayMode === true);
  let waiter: { resolve: () => void; reject: (err: unknown) => void } | undefined;
  let failure: unknown;
  const fail = (err: unknown) => {
    failure ??= err;
    waiter?.reject(failure);
  };
  const onMessage = (msg: Buffer) => {
    if (!started) {
      if (msg[0] === Backend.BackendKeyData && msg.length >= 13)
        hooks.keyed({ processId: msg.readInt32BE(5), secretKey: msg.readInt32BE(9) });
      if (msg[0] === Backend.ErrorResponse) reader.push(msg);
      if (msg[0] !== Backend.ReadyForQuery) return;
      started = true;
      waiter?.resolve();
      return;
    }
    reader.push(msg);
    if (reader.status !== undefined) waiter?.resolve();
  };
  const onData = (chunk: Buffer) => {
    try {
      for (const msg of framer.push(chunk)) onMessage(msg);
    } catch {
      reader.overflowed = true;
      fail(new ResponseTooLarge());
      socket.destroy();
    }
  };
  socket.on('data', onData);
  socket.on('error', (err) => opts.logger.debug({ err }, 'owner socket error'));
  socket.once('close', () => {
    // A FATAL error from the owner (it no longer serves the database, it shuts down) is the
    // answer; a silent close means the owner went away.
    if (reader.error) waiter?.resolve();
    else fail(errors.databaseUnavailable(opts.id));
  });
  const turn = (messages: Buffer[], into: ReplyReader) =>
    new Promise<ReplyReader>((resolve, reject) => {
      if (failure) return reject(failure);
      reader = into;
      waiter = { resolve: () => resolve(into), reject };
      if (messages.length > 0) socket.write(Buffer.concat(messages));
    });
  try {
    const startup = new Promise<void>((resolve, reject) => {
      waiter = { resolve, reject };
    });
    if (rest.length > 0) onData(rest);
    socket.resume();
    await startup;
    if (reader.error) return reader;
    const result = await turn(opts.messages, reader);
    if (result.error && result.status === undefined) return result;
    return await settleUnit(result, opts.commit === true, turn);
  } finally {
    socket.off('data', onData);
    if (!socket.destroyed) socket.end(message(Frontend.Terminate));
  }
}
