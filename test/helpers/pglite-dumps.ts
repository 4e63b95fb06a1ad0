import { cp, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';

/** Tarballs made by a real PGlite's dumpDataDir(), as a user would upload them. */
export interface ItemsDumps {
  /** The data directory the dumps were made from (closed; holds the 75 rows). */
  sourceDir: string;
  /** dumpDataDir('gzip') of a database whose table items holds 50 rows. */
  dumpGz: string;
  /** dumpDataDir('none') of the same database after 25 more rows: 75. */
  dumpTar: string;
}

/** Makes a database from the template under `root`, fills its table items and dumps it twice. */
export async function writeItemsDumps(root: string, templateDir: string): Promise<ItemsDumps> {
  const dir = path.join(root, 'dump-source');
  await cp(templateDir, dir, { recursive: true });
  const db = new PGlite({ dataDir: dir });
  await db.exec(
    "create table items (n int primary key, label text); insert into items select g, 'item ' || g from generate_series(1, 50) g",
  );
  const dumpGz = path.join(root, 'dump.tar.gz');
  await writeFile(dumpGz, Buffer.from(await (await db.dumpDataDir('gzip')).arrayBuffer()));
  await db.exec("insert into items select g, 'item ' || g from generate_series(51, 75) g");
  const dumpTar = path.join(root, 'dump.tar');
  await writeFile(dumpTar, Buffer.from(await (await db.dumpDataDir('none')).arrayBuffer()));
  await db.close();
  return { sourceDir: dir, dumpGz, dumpTar };
}
