"""asyncpg (binary values, types learned by Describe) while the gateway closes and prepares its
statements again (the server runs with MAX_PREPARED_STATEMENTS=2) and a column changes type under
them. As on Postgres: an insert keeps its int4 parameter; a select whose result became bigint
fails with 0A000, which asyncpg answers by preparing it again itself. Prints a JSON summary;
exits non-zero on any error. Usage: asyncpg_alter_type.py DSN CA"""
import asyncio
import json
import ssl
import sys

import asyncpg


async def main(dsn: str, ca: str) -> None:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    conn = await asyncpg.connect(dsn, ssl=ctx)
    errors = []
    rows = []
    try:
        await conn.execute("create table asy (v int4, n numeric)")
        await conn.execute("insert into asy values ($1, $2)", 7, 2.5)
        assert await conn.fetchval("select v from asy where v = $1", 7) == 7
        for i in range(3):  # push the first statements out of the session
            await conn.fetchval(f"select {i}")
        await conn.execute("alter table asy alter v type int8, alter n type float8")
        await conn.execute("insert into asy values ($1, $2)", 9, 4.5)
        value = await conn.fetchval("select v from asy where v = $1", 9)
        if value != 9:
            errors.append(f"select after the change: {value!r}")
        rows = [list(r) for r in await conn.fetch("select v, n::text from asy order by v")]
    except Exception as exc:  # noqa: BLE001 - every failure is reported
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        await conn.close()
    print(json.dumps({"rows": rows, "errors": errors}))
    sys.exit(1 if errors else 0)


asyncio.run(main(sys.argv[1], sys.argv[2]))
