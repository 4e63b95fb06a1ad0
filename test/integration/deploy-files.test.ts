import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { loadConfig } from '../../src/config.js';
import {
  type Compose,
  cidrContains,
  type Directive,
  env,
  type Limits,
  list,
  mounts,
  parseCorefile,
  parseDockerfile,
  type Service,
  staticIp,
  text,
} from '../helpers/deploy-parse.js';

/**
 * No Docker engine or flyctl runs in CI, so the deploy files are checked by parsing them and
 * cross-checking the values that must agree between files (IPs, bucket, paths, ports).
 */

const root = path.resolve(import.meta.dirname, '../..');
const read = (file: string) => readFile(path.join(root, file), 'utf8');

let compose: Compose;
let corefile: Directive[];
let fly: Record<string, unknown>;
let dockerfile: { op: string; args: string }[];

beforeAll(async () => {
  compose = parseYaml(await read('docker-compose.yml')) as Compose;
  corefile = parseCorefile(await read('coredns/Corefile'));
  fly = parseToml(await read('fly.toml'));
  dockerfile = parseDockerfile(await read('Dockerfile'));
});

/** The A-record template for the wildcard zone: its match regex and answered IP. */
function corefileWildcard() {
  const zone = corefile.find((d) => d.args.some((a) => a.replace(/\.$/, '') === 'db.example.com'));
  const template = zone?.body.find((d) => d.args.join(' ') === 'template IN A');
  const match = template?.body.find((d) => d.args[0] === 'match')?.args[1];
  const answer = template?.body.find((d) => d.args[0] === 'answer')?.args[1];
  const ip = answer?.match(/\sIN\s+A\s+(\d+\.\d+\.\d+\.\d+)$/)?.[1];
  return { zone, match, answer, ip };
}

describe('docker-compose.yml', () => {
  it('has the five services', () => {
    expect(Object.keys(compose.services).sort()).toEqual([
      'coredns',
      'gateway',
      'minio',
      'minio-init',
      'psql',
    ]);
  });

  it('publishes the gateway on 5432', () => {
    const published = (compose.services.gateway?.ports ?? []).map((p) =>
      typeof p === 'string' ? p.split(':').slice(-2).join(':') : `${p.published}:${p.target}`,
    );
    expect(published).toContain('5432:5432');
  });

  it('gives CoreDNS and the gateway static addresses inside the network subnet', () => {
    const dns = staticIp(compose.services.coredns);
    const gateway = staticIp(compose.services.gateway);
    expect(gateway.network).toBe(dns.network);
    const ipam = compose.networks[dns.network]?.ipam?.config?.[0];
    expect(ipam?.subnet).toBeDefined();
    for (const ip of [dns.ip, gateway.ip]) {
      expect(cidrContains(ipam?.subnet as string, ip)).toBe(true);
      // Outside the dynamic pool, so another container cannot take the address first.
      if (ipam?.ip_range) expect(cidrContains(ipam.ip_range, ip)).toBe(false);
    }
  });

  it('points psql at CoreDNS and the demo database with full verification', () => {
    const psql = compose.services.psql as Service;
    expect(psql.profiles).toContain('tools');
    expect(list(psql.dns)).toEqual([staticIp(compose.services.coredns).ip]);
    const command = text(psql.command);
    expect(command).toMatch(/host=demo\.db\.example\.com\b/);
    expect(command).toContain('sslmode=verify-full');
    const rootCert = command.match(/sslrootcert=(\S+)/)?.[1];
    expect(mounts(psql).map((m) => m.target)).toContain(rootCert);
  });

  it('matches the gateway address with the Corefile answer', () => {
    expect(corefileWildcard().ip).toBe(staticIp(compose.services.gateway).ip);
  });

  it('mounts the Corefile where CoreDNS is told to read it', () => {
    const coredns = compose.services.coredns as Service;
    const conf = list(coredns.command)[list(coredns.command).indexOf('-conf') + 1] as string;
    const mount = mounts(coredns).find((m) => conf.startsWith(`${m.target}/`));
    expect(mount?.source).toBe('./coredns');
  });

  it('creates the archive bucket the gateway uses, on the endpoint it uses', () => {
    const gatewayEnv = env(compose.services.gateway as Service);
    const archive = new URL(gatewayEnv.ARCHIVE_URL as string);
    expect(archive.protocol).toBe('s3:');
    const init = `${text(compose.services['minio-init']?.entrypoint)} ${text(compose.services['minio-init']?.command)}`;
    expect(init).toMatch(new RegExp(`mc mb\\b[^&;]*\\s\\w+/${archive.hostname}(\\s|$)`));

    const endpoint = new URL(gatewayEnv.AWS_ENDPOINT_URL_S3 as string);
    expect(Object.keys(compose.services)).toContain(endpoint.hostname);
    expect(init).toContain(`http://${endpoint.host}`);
    expect(gatewayEnv.AWS_ACCESS_KEY_ID).toBe(env(compose.services.minio as Service).MINIO_ROOT_USER);
  });

  it('binds the gateway to all interfaces, so the published port reaches it', () => {
    expect(env(compose.services.gateway as Service).HOST).toBe('0.0.0.0');
  });

  it('mounts the TLS files and a data volume into the gateway', () => {
    const gateway = compose.services.gateway as Service;
    const targets = mounts(gateway).map((m) => m.target);
    const e = env(gateway);
    for (const file of [e.TLS_CERT, e.TLS_KEY]) {
      expect(targets).toContain(path.posix.dirname(file as string));
    }
    expect(targets).toContain('/data');
  });
});

describe('coredns/Corefile', () => {
  it('answers the wildcard and the bare domain, and nothing else, with an A record', () => {
    const { zone, match, answer } = corefileWildcard();
    expect(zone).toBeDefined();
    expect(answer).toMatch(/^\{\{ \.Name \}\} \d+ IN A /);
    // Go RE2 and JavaScript agree on this subset; names arrive fully qualified.
    const re = new RegExp(match ?? '.*');
    expect(re.test('demo.db.example.com.')).toBe(true);
    expect(re.test('db.example.com.')).toBe(true);
    expect(re.test('db.example.com.evil.com.')).toBe(false);
  });

  it('forwards everything else and logs', () => {
    const rest = corefile.find((d) => d.args[0] === '.');
    const directives = rest?.body.map((d) => d.args.join(' '));
    expect(directives).toContain('forward . /etc/resolv.conf');
    for (const block of corefile) {
      expect(block.body.map((d) => d.args[0])).toEqual(expect.arrayContaining(['log', 'errors']));
    }
  });
});

describe('fly.toml', () => {
  type Port = { port: number; handlers?: string[] };
  type FlyService = { internal_port: number; protocol: string; ports?: Port[]; tcp_checks?: unknown[] };

  it('exposes 5432 as raw TCP so TLS (and its SNI) reaches the gateway', () => {
    const services = fly.services as FlyService[];
    const pg = services.find((s) => s.internal_port === 5432);
    expect(pg?.protocol).toBe('tcp');
    const port = pg?.ports?.find((p) => p.port === 5432);
    expect(port).toBeDefined();
    expect(port?.handlers ?? []).toEqual([]);
    expect(pg?.tcp_checks?.length).toBeGreaterThan(0);
  });

  it('binds to all interfaces, so the proxy reaches the listener', () => {
    expect((fly.env as Record<string, string>).HOST).toBe('0.0.0.0');
  });

  it('mounts the volume at DATA_DIR and builds the Dockerfile', () => {
    const env = fly.env as Record<string, string>;
    expect(env.NODE_ENV).toBe('production');
    expect(env.WILDCARD_DOMAIN).toBeTruthy();
    const mounts = fly.mounts as { source: string; destination: string }[];
    expect(mounts.map((m) => m.destination)).toContain(env.DATA_DIR);
    expect((fly.build as { dockerfile: string }).dockerfile).toBe('Dockerfile');
  });
});

/**
 * README "Memory at rest" and BENCHMARKS.md: a node with no database open (built JavaScript,
 * WARM_ENGINES=2, embedded catalog), and what one more open idle database adds.
 */
const AT_REST_MIB = 300;
const PER_DATABASE_MIB = 31;
const MiB = 1024 * 1024;

/** A Docker or Fly memory size: a number with b, k, m or g (optionally + "b"), powers of 1024. */
function machineBytes(size: string | undefined): number {
  const match = /^(\d+(?:\.\d+)?)\s*([bkmg])?b?$/i.exec(size ?? '');
  if (!match) throw new Error(`not a memory size: ${size}`);
  const power = 'bkmg'.indexOf((match[2] ?? 'b').toLowerCase());
  return Number(match[1]) * 1024 ** power;
}

/** MAX_MEMORY and MAX_OPEN_DATABASES agree with each other and leave the machine headroom. */
function expectSizedFor(limitBytes: number, environment: Record<string, string>) {
  const config = loadConfig(environment, false);
  expect(config.maxMemoryBytes).toBeGreaterThan(AT_REST_MIB * MiB);
  // Busy databases (sorts, streamed results), Node's heap and the kernel need the rest.
  expect(config.maxMemoryBytes).toBeLessThanOrEqual(limitBytes * 0.8);
  // At rest plus the cap's worth of idle databases reaches MAX_MEMORY, within two databases.
  const idleAtCap = (AT_REST_MIB + config.maxOpenDatabases * PER_DATABASE_MIB) * MiB;
  expect(Math.abs(idleAtCap - config.maxMemoryBytes)).toBeLessThanOrEqual(2 * PER_DATABASE_MIB * MiB);
}

describe('memory sizing', () => {
  it('parses machine sizes', () => {
    expect(machineBytes('1gb')).toBe(1024 * MiB);
    expect(machineBytes('1g')).toBe(1024 * MiB);
    expect(machineBytes('512m')).toBe(512 * MiB);
    expect(() => machineBytes('lots')).toThrow();
  });

  it('gives the Fly VM a memory size the gateway settings fit', () => {
    const vms = fly.vm as { memory?: string; memory_mb?: number }[];
    expect(vms).toHaveLength(1);
    const vm = vms[0] as { memory?: string; memory_mb?: number };
    const limit = vm.memory_mb !== undefined ? vm.memory_mb * MiB : machineBytes(vm.memory);
    expect(limit).toBeGreaterThanOrEqual(1024 * MiB);
    expectSizedFor(limit, fly.env as Record<string, string>);
  });

  it('limits the compose gateway to a memory size the gateway settings fit', () => {
    const gateway = compose.services.gateway as Service & Limits;
    const limit = machineBytes(gateway.deploy?.resources?.limits?.memory);
    expectSizedFor(limit, env(gateway));
  });
});

describe('Dockerfile', () => {
  const all = (op: string) => dockerfile.filter((i) => i.op === op).map((i) => i.args);

  it('builds in one stage and runs from another', () => {
    const froms = all('FROM');
    expect(froms.length).toBeGreaterThanOrEqual(2);
    const buildStage = froms[0]?.match(/\bAS\s+(\S+)/i)?.[1];
    expect(all('COPY').some((c) => c.startsWith(`--from=${buildStage} `))).toBe(true);
    expect(all('RUN')).toEqual(expect.arrayContaining(['npm ci', 'npm run build']));
    expect(all('RUN').some((r) => r.includes('npm ci --omit=dev'))).toBe(true);
  });

  it('runs the compiled CLI as a non-root user', async () => {
    const user = all('USER').at(-1);
    expect(user).toBeDefined();
    expect(['root', '0']).not.toContain(user?.split(':')[0]);
    const cmd = JSON.parse(all('CMD').at(-1) ?? '[]') as string[];
    const pkg = JSON.parse(await read('package.json')) as { bin: Record<string, string> };
    expect(cmd).toEqual(['node', 'dist/src/cli/index.js', 'serve']);
    expect(Object.values(pkg.bin)).toContain(cmd[1]);
  });

  it('exposes 5432 and keeps data on a volume at DATA_DIR', () => {
    expect(all('EXPOSE').join(' ').split(/\s+/)).toContain('5432');
    const envs = all('ENV').join(' ');
    expect(envs).toMatch(/\bNODE_ENV=production\b/);
    expect(envs).toMatch(/\bDATA_DIR=\/data\b/);
    // The default outside production is 127.0.0.1; a container must listen on all interfaces.
    expect(envs).toMatch(/\bHOST=0\.0\.0\.0(\s|$)/);
    expect(all('VOLUME')).toContain('/data');
  });

  it('keeps secrets and local state out of the build context', async () => {
    const ignored = (await read('.dockerignore')).split('\n').map((l) => l.trim());
    expect(ignored).toEqual(expect.arrayContaining(['node_modules', 'dist', 'dbs', 'tls/*.pem', '.git']));
  });
});
