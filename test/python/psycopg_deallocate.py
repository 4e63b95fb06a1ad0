"""psycopg 3 with its defaults: a query run more than prepare_threshold (5) times is prepared on
the server, and psycopg then sends DEALLOCATE ALL through the extended protocol after a rollback,
after a DROP, and when a transaction block ends with an exception. Each must work as on
Postgres. Prints a JSON summary; exits non-zero on any error. Usage: psycopg_deallocate.py DSN CA"""
import json
import sys

import psycopg

errors = []


def step(name, fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - every failure is reported
        errors.append(f"{name}: {type(exc).__name__}: {exc}")


def warm(conn):
    # More than prepare_threshold runs: psycopg prepares the statement on the server.
    for i in range(8):
        assert conn.execute("select %s::int + 1", (i,)).fetchone()[0] == i + 1


def main(dsn, ca):
    conn = psycopg.connect(dsn, sslmode="verify-ca", sslrootcert=ca)
    with conn:
        conn.execute("create table if not exists psy_t (v int)")
        conn.commit()
        warm(conn)
        step("rollback", conn.rollback)
        warm(conn)
        conn.execute("create table psy_drop (v int)")
        conn.commit()
        warm(conn)
        step("drop in a transaction", lambda: conn.execute("drop table psy_drop"))
        step("commit after drop", conn.commit)
        exists = conn.execute("select to_regclass('psy_drop') is not null").fetchone()[0]
        if exists:
            errors.append("the dropped table is still there after commit")
        conn.commit()
        conn.autocommit = True
        warm(conn)
        step("drop in autocommit", lambda: conn.execute("create table psy_a (v int); drop table psy_a"))
        warm(conn)

        def failing_block():
            try:
                with conn.transaction():
                    conn.execute("insert into psy_t values (1)")
                    raise RuntimeError("rolled back on purpose")
            except RuntimeError:
                pass

        step("transaction block with an exception", failing_block)
        warm(conn)
        count = conn.execute("select count(*) from psy_t").fetchone()[0]
        if count != 0:
            errors.append(f"psy_t has {count} rows after the rolled-back block")
    print(json.dumps({"errors": errors}))
    sys.exit(1 if errors else 0)


main(sys.argv[1], sys.argv[2])
