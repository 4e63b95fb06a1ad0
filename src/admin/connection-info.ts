import path from 'node:path';
import type { Config } from '../config.js';

/**
 * How a client reaches one database, formatted for copy and paste. Pure: shared by the admin API
 * (`POST /v1/databases`) and the CLI so both print the same thing.
 */

export interface ConnectionInfoInput {
  id: string;
  username: string;
  /** Undefined when it is not known (an existing database's credentials): left out of both forms. */
  password: string | undefined;
  /** Wildcard domain; the host is `<id>.<domain>` so TLS SNI routes to the database. */
  domain: string;
  /** Undefined when it is not known (the CLI without a server, PORT unset or 0): left out of both forms. */
  port: number | undefined;
  /** CA file for `sslmode=verify-full`; undefined means the system trust store (`sslrootcert=system`, libpq 16+). */
  caPath?: string | undefined;
  /**
   * Address psql dials instead of resolving `<id>.<domain>` (the name still drives SNI and
   * certificate checks). Default: none; the CLI uses 127.0.0.1 outside production.
   */
  hostaddr?: string | undefined;
}

export interface ConnectionInfo {
  /** `postgres://user:password@<id>.<domain>:<port>/postgres?sslmode=verify-full&sslrootcert=…` */
  connectionString: string;
  /** A shell command line: `psql "host=… sslmode=verify-full …"`. */
  psql: string;
}

/** Query-string encoding that keeps `/` readable (libpq and node-postgres both accept it). */
const encodeQueryValue = (v: string) => encodeURIComponent(v).replaceAll('%2F', '/');

/** libpq conninfo value: bare when safe, else single-quoted with `\` and `'` escaped. */
export function conninfoValue(v: string): string {
  if (v !== '' && /^[A-Za-z0-9_.,:/@+%=-]+$/.test(v)) return v;
  return `'${v.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
}

/** One shell word: double quotes when nothing inside is special to the shell, else single quotes. */
export function shellQuote(v: string): string {
  if (!/[$`"\\!]/.test(v)) return `"${v}"`;
  return `'${v.replaceAll("'", `'\\''`)}'`;
}

export function connectionInfo(input: ConnectionInfoInput): ConnectionInfo {
  const host = `${input.id}.${input.domain}`;
  const rootCert = input.caPath ?? 'system';
  const secret = input.password === undefined ? '' : `:${encodeURIComponent(input.password)}`;
  const connectionString =
    `postgres://${encodeURIComponent(input.username)}${secret}` +
    `@${host}${input.port === undefined ? '' : `:${input.port}`}/postgres` +
    `?sslmode=verify-full&sslrootcert=${encodeQueryValue(rootCert)}`;
  const params: [string, string | undefined][] = [
    ['host', host],
    ['hostaddr', input.hostaddr],
    ['port', input.port === undefined ? undefined : String(input.port)],
    ['user', input.username],
    ['password', input.password],
    ['dbname', 'postgres'],
    ['sslmode', 'verify-full'],
    ['sslrootcert', rootCert],
  ];
  const conninfo = params
    .filter((p): p is [string, string] => p[1] !== undefined)
    .map(([k, v]) => `${k}=${conninfoValue(v)}`)
    .join(' ');
  return { connectionString, psql: `psql ${shellQuote(conninfo)}` };
}

/** Where clients find this node, from config; `port` overrides `config.port` (e.g. when it was 0). */
export function connectionDefaults(
  config: Config,
  port = config.port,
): Pick<ConnectionInfoInput, 'domain' | 'port' | 'caPath' | 'hostaddr'> {
  return {
    domain: config.wildcardDomain,
    port,
    // Dev certificates come with their own CA; real certificates chain to the system store.
    caPath: config.tls.generateIfMissing ? path.join(config.tls.dir, 'ca.pem') : undefined,
    hostaddr: config.production ? undefined : '127.0.0.1',
  };
}

/**
 * Where clients find this node, for the CLI when no server runs: the port only when PORT is set
 * here (and not 0), since the server may run with another environment; `note` says so otherwise.
 */
export function offlineConnectionDefaults(config: Config): {
  defaults: Pick<ConnectionInfoInput, 'domain' | 'port' | 'caPath' | 'hostaddr'>;
  note: string | undefined;
} {
  const known = config.portSet && config.port !== 0;
  const defaults = { ...connectionDefaults(config), port: known ? config.port : undefined };
  if (known) return { defaults, note: undefined };
  const why =
    config.port === 0
      ? 'PORT=0 here: a server picks a free port when it starts (it logs it as "listening")'
      : 'PORT is not set here, so the lines above leave it out (the server and libpq default to 5432)';
  return {
    defaults,
    note: `note: no server is running, so its port is not known: ${why}. If it listens elsewhere, add port=<port> to the psql line and :<port> after the host in the URL.`,
  };
}
