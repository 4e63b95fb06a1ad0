import net from 'node:net';
import tls from 'node:tls';
import { StartupCode } from '../../src/wire/protocol.js';
import { untagged } from './messages.js';

/** Byte-level client for protocol-safety tests that real drivers cannot express. */

export { untagged };

export const SSL_REQUEST = untagged(StartupCode.SslRequest);

export function startupMessage(params: Record<string, string>): Buffer {
  const body = Buffer.concat([
    ...Object.entries(params).flatMap(([k, v]) => [Buffer.from(`${k}\0${v}\0`)]),
    Buffer.from([0]),
  ]);
  return untagged(StartupCode.Protocol30, body);
}

export function rawConnect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Everything the server sends until it closes the connection (or the timeout passes). */
export function readUntilClose(
  socket: net.Socket,
  timeoutMs = 10_000,
): Promise<{ data: Buffer; closed: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => finish(false), timeoutMs);
    const finish = (closed: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ data: Buffer.concat(chunks), closed });
    };
    socket.on('data', (d) => chunks.push(d));
    socket.on('error', () => undefined);
    socket.on('close', () => finish(true));
  });
}

/** SSLRequest + TLS handshake with the given SNI name. */
export async function tlsConnect(port: number, ca: Buffer, servername?: string): Promise<tls.TLSSocket> {
  const socket = await rawConnect(port);
  socket.write(SSL_REQUEST);
  const answer = await new Promise<Buffer>((resolve) => socket.once('data', resolve));
  if (answer.toString() !== 'S') throw new Error(`server answered ${answer.toString()}`);
  return new Promise((resolve, reject) => {
    const secure = tls.connect({ socket, ca, servername, rejectUnauthorized: false }, () => resolve(secure));
    secure.once('error', reject);
  });
}

/** The fields of the first ErrorResponse in `data`. */
export function errorFields(data: Buffer): Record<string, string> | undefined {
  let i = 0;
  while (i + 5 <= data.length) {
    const code = data[i];
    const length = data.readUInt32BE(i + 1);
    if (code === 0x45) {
      const fields: Record<string, string> = {};
      for (const part of data
        .subarray(i + 5, i + 1 + length)
        .toString('utf8')
        .split('\0')) {
        if (part) fields[part[0] as string] = part.slice(1);
      }
      return fields;
    }
    i += 1 + length;
  }
  return undefined;
}
