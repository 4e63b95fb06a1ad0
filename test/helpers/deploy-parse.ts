/**
 * Parsers for the deploy files (docker compose, CoreDNS, Dockerfile): no Docker engine or flyctl
 * runs in CI, so the deploy tests read the files and cross-check the values that must agree.
 */

export type Service = {
  image?: string;
  build?: unknown;
  command?: string | string[];
  entrypoint?: string | string[];
  environment?: Record<string, string> | string[];
  ports?: (string | { target: number; published?: number | string })[];
  volumes?: (string | { source?: string; target: string })[];
  dns?: string | string[];
  profiles?: string[];
  depends_on?: string[] | Record<string, unknown>;
  networks?: string[] | Record<string, { ipv4_address?: string } | null>;
};
export type Limits = { deploy?: { resources?: { limits?: { memory?: string } } } };
export type Compose = {
  services: Record<string, Service & Limits>;
  networks: Record<string, { ipam?: { config?: { subnet: string; ip_range?: string }[] } }>;
};

export const list = (v: string | string[] | undefined): string[] =>
  v === undefined ? [] : Array.isArray(v) ? v : [v];
export const text = (v: string | string[] | undefined) => list(v).join(' ');

export function env(service: Service): Record<string, string> {
  const e = service.environment ?? {};
  if (!Array.isArray(e)) return e;
  return Object.fromEntries(e.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
}

/** Container paths of a service's mounts, with their sources. */
export function mounts(service: Service): { source: string; target: string }[] {
  return (service.volumes ?? []).map((v) => {
    if (typeof v !== 'string') return { source: v.source ?? '', target: v.target };
    const [source = '', target = ''] = v.split(':');
    return { source, target };
  });
}

export function staticIp(service: Service | undefined): { network: string; ip: string } {
  const nets = service?.networks;
  if (!nets || Array.isArray(nets)) throw new Error('service has no static address');
  const [network, cfg] = Object.entries(nets).find(([, c]) => c?.ipv4_address) ?? [];
  if (!network || !cfg?.ipv4_address) throw new Error('service has no static address');
  return { network, ip: cfg.ipv4_address };
}

export function ipv4ToInt(ip: string): number {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new Error(`not an IPv4 address: ${ip}`);
  }
  return parts.reduce((acc, p) => acc * 256 + p, 0);
}

export function cidrContains(cidr: string, ip: string): boolean {
  const [base = '', bits = ''] = cidr.split('/');
  const size = 2 ** (32 - Number(bits));
  const start = Math.floor(ipv4ToInt(base) / size) * size;
  const n = ipv4ToInt(ip);
  return n >= start && n < start + size;
}

/** Corefile as nested blocks: `keys... { directive args... { ... } }`; quotes and comments handled. */
export type Directive = { args: string[]; body: Directive[] };
export function parseCorefile(source: string): Directive[] {
  // Per line: quoted strings, braces, bare words; a comment (#...) ends the line's tokens.
  const tokens = source.split('\n').flatMap((line) => {
    const words = [...line.matchAll(/"((?:[^"\\]|\\.)*)"|([{}])|([^\s{}"#]+)|(#.*)/g)];
    return [...words.flatMap((m) => m[1] ?? m[2] ?? m[3] ?? []), '\n'];
  });
  let i = 0;
  const block = (): Directive[] => {
    const out: Directive[] = [];
    let args: string[] = [];
    while (i < tokens.length) {
      const t = tokens[i++] as string;
      if (t === '}') break;
      if (t === '{') {
        out.push({ args, body: block() });
        args = [];
      } else if (t === '\n') {
        if (args.length) out.push({ args, body: [] });
        args = [];
      } else {
        args.push(t);
      }
    }
    if (args.length) out.push({ args, body: [] });
    return out;
  };
  return block();
}

/** Dockerfile instructions with line continuations joined and comments dropped. */
export function parseDockerfile(source: string): { op: string; args: string }[] {
  return source
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const [op = '', ...rest] = l.split(/\s+/);
      return { op: op.toUpperCase(), args: rest.join(' ') };
    });
}
