"""psycopg 3 with its defaults (prepare_threshold 5, prepared_max 100): 150 distinct queries run
6 times each are all prepared on the server, and past 100 psycopg evicts the oldest with
`DEALLOCATE _pg3_<n>` (libpq < 17), inside the transaction it keeps open. Each must work as on
Postgres. Prints a JSON summary; exits non-zero on any error. Usage: psycopg_evict.py DSN CA"""
import json
import sys

import psycopg

errors = []


def run_all(conn, offset):
    for i in range(150):
        for k in range(6):
            row = conn.execute(f"select %s::int + {i + offset}", (k,)).fetchone()
            if row[0] != k + i + offset:
                errors.append(f"query {i} run {k}: got {row[0]}")


def main(dsn, ca):
    ok = 0
    with psycopg.connect(dsn, sslmode="verify-ca", sslrootcert=ca) as conn:
        try:
            run_all(conn, 0)  # inside the transaction psycopg opened
            conn.commit()
            conn.autocommit = True
            run_all(conn, 1000)  # and one statement per transaction
            # The first ones were evicted (deallocated): they are prepared again.
            run_all(conn, 0)
            ok = conn.execute("select 1").fetchone()[0]
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            errors.append(f"{type(exc).__name__}: {exc}")
    print(json.dumps({"errors": errors, "ok": ok}))
    sys.exit(1 if errors else 0)


main(sys.argv[1], sys.argv[2])
