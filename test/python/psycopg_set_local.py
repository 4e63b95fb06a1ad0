"""psycopg 3 with its defaults (autocommit off): it opens each transaction with a BEGIN sent
through the extended protocol, and sends statements without parameters that way too. SET LOCAL,
RESET or SET LOCAL TRANSACTION first, then SET TRANSACTION ISOLATION LEVEL, must work as on
Postgres (no query has taken the snapshot yet), and what was set must be in force. Prints a JSON
summary; exits non-zero on any error. Usage: psycopg_set_local.py DSN CA"""
import json
import sys

import psycopg

ISOLATION = "SHOW transaction_isolation"


def main(dsn, ca):
    errors = []
    seen = {}
    with psycopg.connect(dsn, sslmode="verify-ca", sslrootcert=ca) as conn:
        cases = {
            "set local": ["SET LOCAL statement_timeout = 300", "SET LOCAL app.tenant = 'p'"],
            "reset": ["RESET statement_timeout", "SET LOCAL search_path = public"],
            "set local transaction": ["SET LOCAL TRANSACTION READ ONLY"],
        }
        for name, statements in cases.items():
            try:
                for sql in statements:
                    conn.execute(sql)
                conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                seen[name] = conn.execute(ISOLATION).fetchone()[0]
                if name == "set local":
                    seen["tenant"] = conn.execute("SHOW app.tenant").fetchone()[0]
                    try:
                        conn.execute("select pg_sleep(5)")
                        errors.append("pg_sleep(5) was not cut by SET LOCAL statement_timeout")
                    except psycopg.errors.QueryCanceled:
                        seen["timeout"] = "57014"
                if name == "set local transaction":
                    seen["read_only"] = conn.execute("SHOW transaction_read_only").fetchone()[0]
            except psycopg.Error as exc:
                errors.append(f"{name}: {exc.sqlstate} {exc}")
            conn.rollback()
        seen["after"] = conn.execute("SHOW statement_timeout").fetchone()[0]
        conn.rollback()
    print(json.dumps({"seen": seen, "errors": errors}))
    sys.exit(1 if errors else 0)


main(sys.argv[1], sys.argv[2])
