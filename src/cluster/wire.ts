import type { Socket } from 'node:net';
import { HelloError, takeFrame } from './hello.js';

/** The peer sent no (whole) frame in time: it may be paused, or the link between us cut. */
export class FrameTimeoutError extends HelloError {}

/**
 * Reads one length-prefixed frame from a socket (the hello, or its reply), then stops reading:
 * whatever followed it is returned as `rest` and the socket is left paused for the relay.
 */
export function readFrame(socket: Socket, timeoutMs: number): Promise<{ frame: Buffer; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let buffer: Buffer = Buffer.alloc(0);
    const cleanup = () => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.off('error', onError);
      socket.pause();
    };
    const onData = (chunk: Buffer) => {
      buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
      try {
        const got = takeFrame(buffer);
        if (!got) return;
        cleanup();
        resolve(got);
      } catch (err) {
        cleanup();
        reject(err);
      }
    };
    const onClose = () => {
      cleanup();
      reject(new HelloError('peer closed the connection during the hello'));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new FrameTimeoutError(`no hello within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.once('error', onError);
    socket.resume();
  });
}
