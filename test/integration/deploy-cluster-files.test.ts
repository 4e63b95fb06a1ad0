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
  type Service,
  staticIp,
  text,
} from '../helpers/deploy-parse.js';

/**
 * The cluster deployments (issue 16), read and cross-checked as deploy-files.test.ts does for the
 * single node: docker-compose.cluster.yml runs 3 nodes, a PostgreSQL catalog, MinIO and CoreDNS
 * answering with all three; fly.cluster.toml runs several machines with no volume, the
 * certificate from the archive, and each machine's own NODE_ID and CLUSTER_ADDRESS.
 */

const root = path.resolve(import.meta.dirname, '../..');
const read = (file: string) => readFile(path.join(root, file), 'utf8');
const SECRET = 'a-test-cluster-secret-0123456789';

let compose: Compose;
let corefile: Directive[];
let fly: Record<string, unknown>;
let singleFly: Record<string, unknown>;
let single: Compose;

beforeAll(async () => {
  // Compose supports YAML merge keys (`<<: *gateway`); so must the parser.
  compose = parseYaml(await read('docker-compose.cluster.yml'), { merge: true }) as Compose;
  single = parseYaml(await read('docker-compose.yml')) as Compose;
  corefile = parseCorefile(await read('coredns-cluster/Corefile'));
  fly = parseToml(await read('fly.cluster.toml'));
  singleFly = parseToml(await read('fly.toml'));
});

/** A gateway's environment as compose would pass it, with CLUSTER_SECRET interpolated. */
function nodeEnv(service: Service): Record<string, string> {
  return Object.fromEntries(
    Object.entries(env(service)).map(([k, v]) => [k, String(v).replace(/\$\{CLUSTER_SECRET[^}]*\}/, SECRET)]),
  );
}

const gateways = () =>
  Object.entries(compose.services)
    .filter(([name]) => name.startsWith('gateway-'))
    .map(([name, service]) => ({ name, service: service as Service & Limits }));

describe('docker-compose.cluster.yml', () => {
  it('runs 3 gateway nodes, a PostgreSQL 15 catalog, MinIO and CoreDNS', () => {
    expect(gateways().map((g) => g.name)).toEqual(['gateway-1', 'gateway-2', 'gateway-3']);
    expect(compose.services.catalog?.image).toMatch(/^postgres:15/);
    expect(Object.keys(compose.services)).toEqual(
      expect.arrayContaining(['minio', 'minio-init', 'coredns', 'psql']),
    );
  });

  it('gives every node a valid cluster configuration, with its own NODE_ID and address', () => {
    const ids = new Set<string>();
    for (const { name, service } of gateways()) {
      const e = nodeEnv(service);
      const config = loadConfig(e, false);
      expect(config.cluster, name).toBeDefined();
      ids.add(config.nodeId);
      // Peers dial CLUSTER_ADDRESS: the node's own static address and its CLUSTER_PORT.
      const [host, port] = (config.cluster?.address ?? '').split(':');
      expect(host).toBe(staticIp(service).ip);
      expect(Number(port)).toBe(config.cluster?.port);
      // The shared catalog and archive are the compose services.
      expect(new URL(config.catalogUrl as string).hostname).toBe('catalog');
      expect(new URL(e.AWS_ENDPOINT_URL_S3 as string).hostname).toBe('minio');
    }
    expect(ids.size).toBe(3);
  });

  it('never commits the cluster secret: compose asks for it', () => {
    for (const { service } of gateways())
      expect(env(service).CLUSTER_SECRET).toMatch(/^\$\{CLUSTER_SECRET:\?/);
  });

  it('answers *.db.example.com with all three nodes, inside the subnet and outside the dynamic pool', () => {
    const zone = corefile.find((d) => d.args.some((a) => a.replace(/\.$/, '') === 'db.example.com'));
    const template = zone?.body.find((d) => d.args.join(' ') === 'template IN A');
    const answered = (template?.body ?? [])
      .filter((d) => d.args[0] === 'answer')
      .map((d) => d.args[1]?.match(/\sIN\s+A\s+(\d+\.\d+\.\d+\.\d+)$/)?.[1]);
    const ips = gateways().map((g) => staticIp(g.service).ip);
    expect(answered.sort()).toEqual([...ips].sort());
    const dns = staticIp(compose.services.coredns);
    const ipam = compose.networks[dns.network]?.ipam?.config?.[0];
    for (const ip of [...ips, dns.ip]) {
      expect(cidrContains(ipam?.subnet as string, ip)).toBe(true);
      if (ipam?.ip_range) expect(cidrContains(ipam.ip_range, ip)).toBe(false);
    }
    const coredns = compose.services.coredns as Service;
    const conf = list(coredns.command)[list(coredns.command).indexOf('-conf') + 1] as string;
    expect(mounts(coredns).find((m) => conf.startsWith(`${m.target}/`))?.source).toBe('./coredns-cluster');
    expect(list(compose.services.psql?.dns)).toEqual([dns.ip]);
    expect(text(compose.services.psql?.command)).toContain('sslmode=verify-full');
  });

  it('sizes each node like the single-node stack', () => {
    const sized = env(single.services.gateway as Service);
    for (const { service } of gateways()) {
      expect(service.deploy?.resources?.limits?.memory).toBe(
        (single.services.gateway as Limits).deploy?.resources?.limits?.memory,
      );
      expect(env(service).MAX_MEMORY).toBe(sized.MAX_MEMORY);
      expect(env(service).MAX_OPEN_DATABASES).toBe(sized.MAX_OPEN_DATABASES);
    }
  });
});

describe('fly.cluster.toml', () => {
  const flyEnv = () => fly.env as Record<string, string>;
  const command = () => (fly.processes as Record<string, string>).app as string;

  it('has no volume: the archive and the catalog hold the data, the certificate comes from the archive', () => {
    expect(fly.mounts).toBeUndefined();
    expect(flyEnv().TLS_SOURCE).toBe('archive');
    expect(flyEnv().TLS_CERT).toBeUndefined();
    expect(flyEnv().DURABILITY).toBe('sync');
  });

  it('gives each machine its own NODE_ID and a CLUSTER_ADDRESS on its private DNS name', () => {
    expect(command()).toMatch(/NODE_ID=\$FLY_MACHINE_ID\b/);
    expect(command()).toMatch(
      new RegExp(
        `CLUSTER_ADDRESS=\\$FLY_MACHINE_ID\\.vm\\.\\$FLY_APP_NAME\\.internal:${flyEnv().CLUSTER_PORT}\\b`,
      ),
    );
    expect(command()).toContain('node dist/src/cli/index.js serve');
    // What a machine would run with, once Fly's variables and the secrets are in place.
    const config = loadConfig(
      {
        ...flyEnv(),
        NODE_ID: '3d8d9e1c2e1089',
        CLUSTER_ADDRESS: `3d8d9e1c2e1089.vm.app.internal:${flyEnv().CLUSTER_PORT}`,
        CLUSTER_SECRET: SECRET,
        CATALOG_URL: 'postgres://u:p@catalog.internal:5432/gateway',
        ARCHIVE_URL: 's3://bucket/dbs',
      },
      false,
    );
    expect(config.cluster?.port).toBe(Number(flyEnv().CLUSTER_PORT));
    expect(config.tls.source).toBe('archive');
    expect(config.production).toBe(true);
  });

  it('runs several machines with raw TCP services, sized like fly.toml', () => {
    type FlyService = { internal_port: number; protocol: string; min_machines_running?: number };
    const services = fly.services as FlyService[];
    for (const port of [5432, 8443]) {
      const service = services.find((s) => s.internal_port === port);
      expect(service?.protocol).toBe('tcp');
      expect(service?.min_machines_running).toBeGreaterThanOrEqual(3);
    }
    expect(fly.vm).toEqual(singleFly.vm);
    expect(flyEnv().MAX_MEMORY).toBe((singleFly.env as Record<string, string>).MAX_MEMORY);
    expect(flyEnv().MAX_OPEN_DATABASES).toBe((singleFly.env as Record<string, string>).MAX_OPEN_DATABASES);
  });
});
