import { hkdfSync } from 'node:crypto';
import type { ConnectionOptions, TlsOptions } from 'node:tls';

/**
 * Peers talk TLS with a key derived from CLUSTER_SECRET (TLS-PSK): a forwarded session carries a
 * client's queries and rows, which must not cross the network between nodes in clear, and only
 * a node that knows the secret completes the handshake (both ends prove it), with no
 * certificates to issue or rotate. ECDHE-PSK first, for forward secrecy. OpenSSL offers PSK
 * suites in TLS 1.2 only; the authenticated hello (hello.ts) still runs inside.
 */

const CIPHERS = 'ECDHE-PSK-CHACHA20-POLY1305:PSK-AES256-GCM-SHA384';
/** Sent in the clear in the handshake: names the scheme, not the node. */
const IDENTITY = 'pglite-gateway-peer';

/** The PSK: a key of its own, so the TLS key and the hello's HMAC key differ. */
export function peerKey(secret: string): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), 'pglite-gateway peer tls psk', 32));
}

export function peerServerTls(secret: string): TlsOptions {
  const key = peerKey(secret);
  return {
    pskCallback: (_socket, identity) => (identity === IDENTITY ? key : null),
    ciphers: CIPHERS,
    minVersion: 'TLSv1.2',
    maxVersion: 'TLSv1.2',
  };
}

export function peerClientTls(secret: string): ConnectionOptions {
  const key = peerKey(secret);
  return {
    pskCallback: () => ({ psk: key, identity: IDENTITY }),
    ciphers: CIPHERS,
    minVersion: 'TLSv1.2',
    maxVersion: 'TLSv1.2',
    // The PSK authenticates the peer; there is no certificate to check.
    checkServerIdentity: () => undefined,
  };
}
