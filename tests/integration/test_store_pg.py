"""The PostgreSQL store on a real server: a throw-away cluster (pg.py) per run, and the store
suite (tests/unit/test_store.c) run against it. Every case of the suite runs on PostgreSQL too
(each in a schema of its own), with the cases of several hosts on one database and of a database
that restarts, stops and starts again under the store (pg.py's pg_ctl commands); the suite must
pass with nothing skipped."""
import os
import re
import subprocess

from harness import BUILD, run_all, scaled
from pg import Postgres

SUITE = os.path.join(BUILD, "tests", "unit", "test_store")


def run_suite(pg, *cases):
    env = dict(os.environ)
    env.update({
        "PX_TEST_PG_URL": pg.url,
        "PX_TEST_PG_STOP": pg.ctl_command("stop"),
        "PX_TEST_PG_START": pg.ctl_command("start"),
        "PX_TEST_PG_RESTART": pg.ctl_command("restart"),
    })
    return subprocess.run([SUITE, *cases], env=env, capture_output=True, text=True,
                          timeout=scaled(600))


def test_store_suite_passes_on_postgres():
    assert os.path.exists(SUITE), f"{SUITE} was not built"
    with Postgres() as pg:
        r = run_suite(pg)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out[-6000:]
        m = re.search(r"^(\d+) passed, (\d+) failed, (\d+) skipped$", r.stdout, re.M)
        assert m, r.stdout[-3000:]
        passed, failed, skipped = map(int, m.groups())
        assert failed == 0 and skipped == 0, r.stdout
        for case in ("test_put_then_persisted_pg", "test_reopen_keeps_everything_pg",
                     "test_pg_two_hosts_pg", "test_pg_adopt_orphans_pg",
                     "test_pg_database_restarts_pg"):
            assert f"ok   {case}\n" in r.stdout, f"{case} did not pass:\n{r.stdout}"
        # the password never reaches the log lines
        assert pg.password not in out
        # the server is still there for the next run: the suite left it started
        assert pg.psql("SELECT 1", db=pg.db).strip() == "1"


if __name__ == "__main__":
    run_all(globals())
