/**
 * Durable storage of databases: an archive store chosen by ARCHIVE_URL (`archive.ts`), PGDATA
 * tarballs (`tarball.ts`) and versioned snapshots recorded in the catalog (`snapshots.ts`).
 */
export {
  ArchiveKeyExistsError,
  ArchiveNotFoundError,
  type ArchiveObject,
  type ArchiveStore,
  type BodySource,
  openArchive,
  type S3Settings,
} from './archive.js';
export { extractTarball } from './extract.js';
export {
  DatabaseGoneError,
  DEFAULT_KEEP_VERSIONS,
  newVersionId,
  type SnapshotOptions,
  Snapshots,
  type SnapshotsOptions,
  type UploadOptions,
  VERSION_PATTERN,
  VerificationError,
  VersionNotFoundError,
  versionKey,
} from './snapshots.js';
export {
  ChecksumMismatchError,
  type PgDataIdentity,
  packDataDir,
  readPgDataIdentity,
  TarballRejectedError,
  validatePgData,
} from './tarball.js';
