"""`make server`'s check before it starts `mlflow server`: a database URL it cannot use, a missing driver or a port
already taken is one line saying what to do, not MLflow's traceback a few seconds later; then the line to use.

    python -m attnbench.store.tracking.serve DB PORT ARTIFACTS
"""

from __future__ import annotations

import sys

from attnbench.store.credentials import mask
from attnbench.store.tracking.port import HOST, port_number, port_problem


def problem(db: str, port: int) -> str | None:
    """Why `mlflow server` could not serve this database on this port, else None."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        dialect = make_url(db).get_dialect()
    except (ArgumentError, NoSuchModuleError) as e:
        return (f"DB={mask(db)} is not a database URL MLflow can use ({e}): expected sqlite:////absolute/path.db "
                "or postgresql://user@host:port/database")
    try:
        dialect.import_dbapi()
    except ImportError as e:
        return (f"DB={mask(db)} needs the database driver {e.name!r}, which is not installed: "
                "`pip install -e '.[server]'` (psycopg, for PostgreSQL)")
    engine = create_engine(db)
    try:
        with engine.connect():
            pass
    except Exception as e:  # noqa: BLE001 - whatever the driver says, in one line
        reason = " ".join(str(getattr(e, "orig", None) or e).split())
        return f"DB={mask(db)} cannot be opened: {mask(reason)[:300]}"
    finally:
        engine.dispose()
    return port_problem(str(port), "server")


def main(argv: list[str]) -> int:
    db, port_text, artifacts = argv[0], argv[1], argv[2]
    port = port_number(port_text)
    found = port_problem(port_text, "server") if port is None else problem(db, port)
    if found:
        print(f"attnbench: {found}", file=sys.stderr)
        return 1
    print(f"attnbench: MLflow tracking server for {mask(db)}, artifacts uploaded through it into {artifacts}.\n"
          f"  send a sweep there:  python run.py -m ... tracking.uri=http://{HOST}:{port}\n"
          f"  or every command:    export MLFLOW_TRACKING_URI=http://{HOST}:{port}\n"
          f"  browse it:           http://{HOST}:{port}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
