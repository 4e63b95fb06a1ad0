import type { S3Settings } from '../config.js';
import type { ArchiveStore } from './archive.js';

/**
 * Opens the archive named by `url`; undefined when `url` is unset or empty (local only).
 * Throws on an unknown scheme or a malformed URL.
 */
export async function openArchive(
  url: string | undefined,
  options: { s3?: S3Settings } = {},
): Promise<ArchiveStore | undefined> {
  if (url === undefined || url === '') return undefined;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`ARCHIVE_URL is not a URL: ${JSON.stringify(url)}`);
  }
  switch (parsed.protocol) {
    case 'file:': {
      const { FileArchive } = await import('./file-archive.js');
      return FileArchive.fromUrl(parsed);
    }
    case 's3:': {
      const { S3Archive } = await import('./s3-archive.js');
      return S3Archive.fromUrl(parsed, options.s3 ?? {});
    }
    default:
      throw new Error(`ARCHIVE_URL scheme ${parsed.protocol} is not supported (use file:// or s3://)`);
  }
}
