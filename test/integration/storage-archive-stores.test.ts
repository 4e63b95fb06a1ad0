import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ArchiveKeyExistsError, ArchiveNotFoundError, type ArchiveStore } from '../../src/storage/archive.js';
import { openArchive } from '../../src/storage/open-archive.js';
import { startS3, type TestS3 } from '../helpers/s3.js';

/**
 * The archive stores on their own, against real parts: the real AWS SDK talking to s3rver through
 * a fault proxy, and a file:// archive in a temp dir. What Snapshots builds on them is in
 * storage-snapshots.test.ts.
 */

let root: string;

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'storage-stores-test-'));
});

afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

describe('archive stores', () => {
  let s3: TestS3;
  beforeAll(async () => {
    s3 = await startS3();
  });
  afterAll(async () => {
    await s3?.close();
  });

  it('openArchive chooses by scheme and refuses what it does not know', async () => {
    expect(await openArchive(undefined)).toBeUndefined();
    expect(await openArchive('')).toBeUndefined();
    const file = await openArchive(pathToFileURL(path.join(root, 'x')).href);
    expect(file?.describe()).toBe(`file://${path.join(root, 'x')}`);
    const bucket = await openArchive('s3://my-bucket/some/prefix/', {
      s3: { endpoint: 'http://127.0.0.1:9' },
    });
    expect(bucket?.describe()).toBe('s3://my-bucket/some/prefix at http://127.0.0.1:9');
    await bucket?.close();
    await expect(openArchive('gs://bucket')).rejects.toThrow(/not supported/);
    await expect(openArchive('not a url')).rejects.toThrow(/not a URL/);
    await expect(openArchive('s3://key:secret@bucket/x')).rejects.toThrow(/AWS_ACCESS_KEY_ID/);
  });

  it('s3: multipart upload survives a connection dropped mid-part, and objects are never overwritten', async () => {
    const archive = (await openArchive(`s3://${s3.bucket}/mp`, {
      s3: {
        endpoint: s3.endpoint,
        ...s3.credentials,
        partSize: 5 * 1024 * 1024,
        maxAttempts: 1,
        retries: 2,
        retryBaseMs: 10,
      },
    })) as ArchiveStore;
    try {
      const data = randomBytes(12 * 1024 * 1024);
      // With SDK retries off, only the archive's own whole-operation retry can recover.
      s3.proxy.dropUpload(1024 * 1024, { path: /partNumber=2/ });
      await archive.put(
        'db/v1.tar.gz',
        () => Readable.from([data.subarray(0, 6e6), data.subarray(6e6)]),
        data.length,
      );
      expect(s3.proxy.injected.dropUpload).toBe(1);
      expect(s3.proxy.requests.some((r) => r.startsWith('POST') && r.includes('uploads'))).toBe(true);
      expect(await archive.head('db/v1.tar.gz')).toEqual({ key: 'db/v1.tar.gz', size: data.length });
      const chunks: Buffer[] = [];
      for await (const chunk of await archive.get('db/v1.tar.gz')) chunks.push(chunk as Buffer);
      expect(Buffer.concat(chunks).equals(data)).toBe(true);

      await expect(
        archive.put('db/v1.tar.gz', () => Readable.from([Buffer.from('x')])),
      ).rejects.toBeInstanceOf(ArchiveKeyExistsError);
      expect((await archive.head('db/v1.tar.gz'))?.size).toBe(data.length);
      await archive.put('db/v2.tar.gz', Readable.from([Buffer.from('two')]));
      expect(await archive.list('db/')).toEqual([
        { key: 'db/v1.tar.gz', size: data.length },
        { key: 'db/v2.tar.gz', size: 3 },
      ]);
      await archive.delete('db/v1.tar.gz');
      await archive.delete('db/v1.tar.gz');
      expect(await archive.head('db/v1.tar.gz')).toBeUndefined();
      await expect(archive.get('db/v1.tar.gz')).rejects.toBeInstanceOf(ArchiveNotFoundError);
      await expect(archive.put('../escape', Readable.from([]))).rejects.toThrow(/invalid archive key/);
    } finally {
      await archive.close();
    }
  });

  it('file: puts are atomic and never overwrite, listing skips temporary files', async () => {
    const dir = path.join(root, 'file-store');
    const archive = (await openArchive(pathToFileURL(dir).href)) as ArchiveStore;
    await archive.put('db/v1.tar.gz', Readable.from([Buffer.from('one')]), 3);
    await expect(archive.put('db/v1.tar.gz', Readable.from([Buffer.from('other')]))).rejects.toBeInstanceOf(
      ArchiveKeyExistsError,
    );
    // A body that breaks leaves no object and no temporary file.
    const broken = new Readable({
      read() {
        this.destroy(new Error('connection reset'));
      },
    });
    await expect(archive.put('db/v2.tar.gz', broken)).rejects.toThrow(/connection reset/);
    await expect(archive.put('db/v3.tar.gz', Readable.from([Buffer.from('abc')]), 5)).rejects.toThrow(
      /expected 5/,
    );
    expect(await readdir(path.join(dir, 'db'))).toEqual(['v1.tar.gz']);
    await writeFile(path.join(dir, 'db', '.v9.tar.gz.tmp-000000000000'), 'partial');
    expect(await archive.list('db/')).toEqual([{ key: 'db/v1.tar.gz', size: 3 }]);
    expect(await archive.list('')).toEqual([{ key: 'db/v1.tar.gz', size: 3 }]);
    expect(await archive.list('other/')).toEqual([]);
    await expect(archive.get('db/none.tar.gz')).rejects.toBeInstanceOf(ArchiveNotFoundError);
  });
});
