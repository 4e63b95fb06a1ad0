"""asyncpg with a large statement cache: 300 distinct statements on one connection, then all of
them again. Prints a JSON summary; exits non-zero on any error. Usage: asyncpg_statements.py DSN CA"""
import asyncio
import json
import ssl
import sys

import asyncpg


async def main(dsn: str, ca: str) -> None:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    conn = await asyncpg.connect(dsn, ssl=ctx, server_settings={}, statement_cache_size=1000)
    errors = []
    total = 0
    try:
        for rounds in range(2):
            for i in range(300):
                try:
                    value = await conn.fetchval(f"select $1::int + {i}", rounds)
                    assert value == rounds + i, value
                    total += 1
                except Exception as exc:  # noqa: BLE001 - every failure is reported
                    errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        await conn.close()
    print(json.dumps({"ok": total, "errors": errors[:5], "error_count": len(errors)}))
    sys.exit(1 if errors else 0)


asyncio.run(main(sys.argv[1], sys.argv[2]))
