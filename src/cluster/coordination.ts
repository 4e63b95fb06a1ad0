import type { SqlClient } from '../catalog/catalog.js';

/**
 * The cluster's state in the shared PostgreSQL catalog (tables `gateway_nodes` and
 * `gateway_placements`, see catalog/migrations.ts). Liveness is judged by the catalog's own
 * clock (`now()`), so nodes' wall clocks never decide who is dead. Every change of owner goes
 * through one compare-and-swap statement and bumps the generation.
 */

export interface NodeRow {
  id: string;
  address: string;
  alive: boolean;
  draining: boolean;
  openDatabases: number;
  heartbeatAgeMs: number;
}

export interface Placement {
  databaseId: string;
  owner: string | null;
  generation: bigint;
  /** The owner's address and whether its heartbeat is fresh (false without an owner). */
  ownerAddress: string | null;
  ownerAlive: boolean;
  releasedBy: string | null;
}

/** A successful claim: the new generation, and whether this node's local copy is still current. */
export interface Claim {
  generation: bigint;
  /** The row named this node as owner (or last releaser): no one else wrote since. */
  localCopyCurrent: boolean;
  /** Another node held it (its lease had run out): a failover. */
  tookOver: boolean;
}

type Sql = Pick<SqlClient, 'query'>;

const alive = (alias: string) => `${alias}.heartbeat_at > now() - $ttl::bigint * interval '1 millisecond'`;
const withTtl = (sql: string, index: number) => sql.replaceAll('$ttl', `$${index}`);

/** A placement with its owner's address and liveness (add a where or an order by). */
const PLACEMENTS = `select p.database_id, p.owner, p.generation::text, n.address, ${alive('n')} as alive,
    p.released_by
  from gateway_placements p left join gateway_nodes n on n.id = p.owner`;

interface PlacementRow {
  database_id: string;
  owner: string | null;
  generation: string;
  address: string | null;
  alive: boolean | null;
  released_by: string | null;
}

const placementOf = (r: PlacementRow): Placement => ({
  databaseId: r.database_id,
  owner: r.owner,
  generation: BigInt(r.generation),
  ownerAddress: r.address,
  ownerAlive: r.owner !== null && r.alive === true,
  releasedBy: r.released_by,
});

export class Coordination {
  constructor(
    private readonly sql: Sql,
    private readonly nodeId: string,
    private readonly ttlMs: number,
  ) {}

  /**
   * Registers or renews this node (one statement per renewal, whatever the number of databases)
   * and returns the placements the catalog says it owns.
   */
  async heartbeat(input: {
    address: string;
    openDatabases: number;
    draining: boolean;
  }): Promise<Map<string, bigint>> {
    const { rows } = await this.sql.query<{ database_id: string; generation: string }>(
      `with hb as (
         insert into gateway_nodes (id, address, heartbeat_at, started_at, open_databases, draining)
         values ($1, $2, now(), now(), $3, $4)
         on conflict (id) do update set address = excluded.address, heartbeat_at = now(),
           open_databases = excluded.open_databases, draining = excluded.draining
         returning id)
       select database_id, generation::text from gateway_placements where owner = (select id from hb)`,
      [this.nodeId, input.address, input.openDatabases, input.draining],
    );
    return new Map(rows.map((r) => [r.database_id, BigInt(r.generation)]));
  }

  async placement(databaseId: string): Promise<Placement | undefined> {
    const { rows } = await this.sql.query<PlacementRow>(
      withTtl(`${PLACEMENTS} where p.database_id = $1`, 2),
      [databaseId, this.ttlMs],
    );
    return rows[0] && placementOf(rows[0]);
  }

  /** The placements of `ids` that have one, by database id (one statement for all). */
  async placementsOf(ids: readonly string[]): Promise<Map<string, Placement>> {
    const { rows } = await this.sql.query<PlacementRow>(
      withTtl(`${PLACEMENTS} where p.database_id = any($1::text[])`, 2),
      [ids, this.ttlMs],
    );
    return new Map(rows.map((r) => [r.database_id, placementOf(r)]));
  }

  /** Live nodes (fresh heartbeat), draining ones included (flagged). */
  async nodes(): Promise<NodeRow[]> {
    const { rows } = await this.sql.query<{
      id: string;
      address: string;
      alive: boolean;
      draining: boolean;
      open_databases: number;
      age_ms: string;
    }>(
      withTtl(
        `select id, address, ${alive('n')} as alive, draining, open_databases,
           (extract(epoch from now() - heartbeat_at) * 1000)::bigint::text as age_ms
         from gateway_nodes n order by id`,
        1,
      ),
      [this.ttlMs],
    );
    return rows.map((r) => ({
      id: r.id,
      address: r.address,
      alive: r.alive,
      draining: r.draining,
      openDatabases: r.open_databases,
      heartbeatAgeMs: Number(r.age_ms),
    }));
  }

  /**
   * Compare-and-swap claim: succeeds only when nobody owns the database, its owner's lease ran out,
   * or this node already owns it (a restarted process), and only while this node's own heartbeat
   * is fresh. The generation goes up by one every time. Concurrent claims serialise on the row:
   * the loser re-evaluates against the winner's fresh heartbeat and gets undefined.
   */
  async claim(databaseId: string): Promise<Claim | undefined> {
    const { rows } = await this.sql.query<{
      generation: string;
      prev_owner: string | null;
      released_by: string | null;
      existed: boolean;
    }>(
      withTtl(
        `with prev as (
           select owner, released_by from gateway_placements where database_id = $1 for update
         ), me as (
           select 1 from gateway_nodes n where n.id = $2 and ${alive('n')}
         )
         insert into gateway_placements as p (database_id, owner, generation, claimed_at)
         -- Reading prev here runs it before the row changes (RETURNING alone would see nothing).
         select $1, $2, 1, now() from (select count(*) from prev) as before_claim
         where exists (select 1 from gateway_databases where id = $1) and exists (select 1 from me)
         on conflict (database_id) do update set owner = $2, generation = p.generation + 1,
           claimed_at = now(), released_by = null
         where exists (select 1 from me) and (p.owner is null or p.owner = $2 or not exists (
           select 1 from gateway_nodes n where n.id = p.owner and ${alive('n')}))
         returning p.generation::text, (select owner from prev) as prev_owner,
           (select released_by from prev) as released_by, exists (select 1 from prev) as existed`,
        3,
      ),
      [databaseId, this.nodeId, this.ttlMs],
    );
    const row = rows[0];
    if (!row) return undefined;
    const prevOwner = row.prev_owner;
    return {
      generation: BigInt(row.generation),
      // Never owned before: a local copy can only be the one its creator archived at once.
      // (A transfer to this node that it never took up leaves released_by set: not current.)
      localCopyCurrent:
        !row.existed ||
        (prevOwner === this.nodeId && row.released_by === null) ||
        (prevOwner === null && row.released_by === this.nodeId),
      tookOver: prevOwner !== null && prevOwner !== this.nodeId,
    };
  }

  /**
   * Hands the database straight to `target` (`db move`), generation + 1, in one compare-and-swap:
   * no other node can claim it in between. `released_by` remembers the former owner until the
   * target claims it, so the target knows its own local copy (if any) is not current.
   */
  async transfer(databaseId: string, generation: bigint, target: string): Promise<bigint | undefined> {
    const { rows } = await this.sql.query<{ generation: string }>(
      `update gateway_placements set owner = $3, generation = generation + 1, released_by = $2, claimed_at = now()
       where database_id = $1 and owner = $2 and generation = $4::bigint returning generation::text`,
      [databaseId, this.nodeId, target, generation.toString()],
    );
    return rows[0] ? BigInt(rows[0].generation) : undefined;
  }

  /** Gives the database up (after its last WAL was shipped); false when this node no longer held it. */
  async release(databaseId: string, generation: bigint): Promise<boolean> {
    const { rows } = await this.sql.query(
      `update gateway_placements set owner = null, released_by = $2, claimed_at = now()
       where database_id = $1 and owner = $2 and generation = $3::bigint returning 1`,
      [databaseId, this.nodeId, generation.toString()],
    );
    return rows.length > 0;
  }

  /** Every placement with its owner's liveness (GET /v1/cluster). */
  async placements(): Promise<Placement[]> {
    const { rows } = await this.sql.query<PlacementRow>(withTtl(`${PLACEMENTS} order by p.database_id`, 1), [
      this.ttlMs,
    ]);
    return rows.map(placementOf);
  }
}
