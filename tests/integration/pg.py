"""A throw-away PostgreSQL 15 cluster for tests: initdb and pg_ctl (Debian's
/usr/lib/postgresql/15/bin) into a temporary directory, listening on 127.0.0.1 with a free port and
on a unix socket in that directory, with a password user owning one database, so that URLs carry a
password as they do in production.

    with Postgres() as pg:
        pg.url           # postgresql://plexus:<password>@127.0.0.1:<port>/plexus
        pg.stop_server() # the server goes down (connections dropped), its data kept
        pg.start_server()
        pg.restart()     # both, at once
        pg.ctl_command("restart")  # the same as a shell command, for a program under test

initdb refuses to run as root: as root the cluster belongs to the `postgres` user (runuser).
Every wait is pg_ctl's own (-w) with a deadline stretched by PX_TEST_TIMEOUT_SCALE; a cluster that
does not start is stopped and removed before the error is raised, so none is left running."""
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile

from harness import scaled

BIN = "/usr/lib/postgresql/15/bin"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    def __init__(self, fsync=False):
        if not os.path.exists(os.path.join(BIN, "initdb")):
            raise RuntimeError("PostgreSQL 15 is not installed (scripts/deps.sh test)")
        self.dir = tempfile.mkdtemp(prefix="px-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.port = free_port()
        self.fsync = fsync
        self.password = "pw-" + secrets.token_hex(8)
        self.user = "plexus"
        self.db = "plexus"
        self.url = f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.db}"
        self.as_postgres = os.geteuid() == 0
        self.started = False

    def _cmd(self, *args):
        cmd = [os.path.join(BIN, args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return cmd

    def _run(self, *args, timeout=120):
        r = subprocess.run(self._cmd(*args), capture_output=True, text=True,
                           timeout=scaled(timeout))
        if r.returncode != 0:
            raise AssertionError(f"{' '.join(args[:2])} failed:\n{r.stdout}{r.stderr}\n"
                                 + self.server_log()[-3000:])
        return r.stdout

    def _ctl_args(self, action):
        args = ["pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", str(int(scaled(60)))]
        if action in ("stop", "restart"):
            args += ["-m", "fast"]
        return args + [action]

    def ctl_command(self, action):
        """pg_ctl start / stop / restart as one shell command line."""
        return " ".join(shlex.quote(a) for a in self._cmd(*self._ctl_args(action)))

    def server_log(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def start(self):
        """Creates the cluster, starts it and makes the user and its database; on any failure
        stops and removes everything and raises."""
        try:
            if self.as_postgres:
                shutil.chown(self.dir, "postgres", "postgres")
            self._run("initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                      "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8")
            with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
                f.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                        f"unix_socket_directories = '{self.dir}'\n"
                        f"fsync = {'on' if self.fsync else 'off'}\n"
                        "max_connections = 50\n")
            self.started = True
            self._run(*self._ctl_args("start"))
            self.psql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
            self.psql(f"CREATE DATABASE {self.db} OWNER {self.user}")
            return self
        except BaseException:
            self.stop()
            raise

    def psql(self, sql, db="postgres"):
        """Runs sql as the superuser over the unix socket; returns its unaligned output."""
        return self._run("psql", "-h", self.dir, "-p", str(self.port), "-U", "postgres",
                         "-d", db, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql)

    def stop_server(self):
        self._run(*self._ctl_args("stop"))

    def start_server(self):
        self._run(*self._ctl_args("start"))

    def restart(self):
        self._run(*self._ctl_args("restart"))

    def stop(self):
        """Stops the server (if it runs) and removes the directory. Safe after a failed or
        partial start, and more than once."""
        if self.started and os.path.exists(os.path.join(self.data, "postmaster.pid")):
            try:
                subprocess.run(self._cmd("pg_ctl", "-D", self.data, "-m", "immediate", "-w",
                                         "stop"), capture_output=True, timeout=scaled(60))
            except Exception:
                pass
        self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
