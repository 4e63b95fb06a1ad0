/**
 * Hand-made tar archives, for tarballs the tar package would refuse to write (`../` names, links,
 * junk where a PGDATA should be). Plain ustar; gzip them with `gzipSync` when needed.
 */

export interface TarMember {
  name: string;
  /** '0' file (default), '5' directory, '2' symlink. */
  type?: string;
  body?: Buffer;
  linkname?: string;
}

function header(name: string, type: string, size: number, linkname = ''): Buffer {
  const block = Buffer.alloc(512);
  const octal = (n: number, width: number) => `${n.toString(8).padStart(width - 1, '0')}\0`;
  block.write(name, 0, 100, 'utf8');
  block.write(octal(type === '5' ? 0o755 : 0o644, 8), 100);
  block.write(octal(0, 8), 108);
  block.write(octal(0, 8), 116);
  block.write(octal(size, 12), 124);
  block.write(octal(Math.floor(Date.now() / 1000), 12), 136);
  block.fill(' ', 148, 156);
  block.write(type, 156);
  block.write(linkname, 157, 100, 'utf8');
  block.write('ustar\0', 257);
  block.write('00', 263);
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return block;
}

export function tarball(members: TarMember[]): Buffer {
  const parts: Buffer[] = [];
  for (const m of members) {
    const body = m.body ?? Buffer.alloc(0);
    parts.push(header(m.name, m.type ?? '0', body.length, m.linkname));
    parts.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}
