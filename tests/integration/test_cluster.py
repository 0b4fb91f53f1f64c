"""Several hosts as one: hosts sharing one PostgreSQL store (a private cluster started here, see
pg.py). Webhook load spread over three hosts with one killed -9 mid-run, PostgreSQL restarted
mid-run, dedupe across hosts, members in the status, dead letters from any host."""
import http.client
import json
import os
import re
import threading

from harness import Host, plexus, read_jsonl, run_all, scaled, wait_for
from pg import Postgres

BASE = """version: 1
host:
  data_dir: "${PX_DATA}/var"
  plugin_path: [@TEST_PLUGINS@, @PLUGINS@]
  drain_timeout: 2s
  http: { listen: "127.0.0.1:0" }
  admin: { listen: "127.0.0.1:0" }
  store: { type: postgres, url: "${PX_PG_URL}", host_id: "${PX_HOST_ID}", lease: 2s }
"""

PLUGINS = """plugins:
  hook: { plugin: webhook, config: { path: /hook, dedupe_pointer: /id } }
  out: { plugin: testsink, max_inflight: 2, config: { file: "${PX_DATA}/out.jsonl", delay: @DELAY@ } }
  rej: { plugin: testsink, config: { file: "${PX_DATA}/rej.jsonl", fail: reject } }
pipelines:
  - { name: p, from: hook, to: { sink: out }, when: { type: [t.e] } }
  - { name: r, from: hook, to: { sink: rej }, when: { type: [t.reject] } }
"""


def post(port, body, timeout=10, type="t.e"):
    """(status, headers) of one POST /hook; (None, {}) when the host is unreachable."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", "/hook", body=json.dumps(body),
                  headers={"Content-Type": "application/json", "X-Event-Type": type})
        r = c.getresponse()
        r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}
    except OSError:
        return None, {}
    finally:
        c.close()


def host_env(pg, h, name):
    """Every host runs the same file; what differs between them comes from the environment."""
    return {"PX_PG_URL": pg.url, "PX_HOST_ID": name, "PX_DATA": h.tmp}


def start_hosts(pg, names, delay="1ms"):
    hosts = []
    try:
        for name in names:
            h = Host(BASE + PLUGINS.replace("@DELAY@", delay))
            hosts.append(h)
            h.start(env=host_env(pg, h, name))
    except BaseException:
        for h in hosts:
            h._kill()
        raise
    return hosts


def delivered(hosts):
    """Every seq written by the sinks of hosts, in the order each wrote them, all hosts joined."""
    seqs = []
    for h in hosts:
        seqs += [x["seq"] for x in read_jsonl(h.path("out.jsonl")) if x["outcome"] == "ok"]
    return seqs


def test_three_hosts_kill9_one_mid_run():
    with Postgres() as pg:
        hosts = start_hosts(pg, ["a", "b", "c"], delay="40ms")
        try:
            ports = [h.http_port() for h in hosts]
            acked = set()
            for n in range(240):
                st, _ = post(ports[n % 3], {"seq": n, "id": f"e{n}"})
                assert st == 202 or st == 200, st
                acked.add(n)
            a = hosts[0]
            a.kill9()
            on_a = {n for n in acked if n % 3 == 0}
            done_by_a = set(delivered([a]))
            assert on_a - done_by_a, "host a had delivered everything before the kill"
            # b and c keep taking load while they adopt what a had claimed
            for n in range(240, 300):
                st, _ = post(ports[1 + n % 2], {"seq": n, "id": f"e{n}"})
                assert st in (200, 202), st
                acked.add(n)
            wait_for(lambda: acked <= set(delivered(hosts)), timeout=90,
                     what="every acknowledged event delivered by some host")
            seqs = delivered(hosts[1:])
            assert (on_a - done_by_a) <= set(seqs), "a's deliveries were not adopted"
            assert "adopted deliveries of a host that stopped" in hosts[1].log() + hosts[2].log()
            # at most what a had in flight at the kill (max_inflight 2) comes twice
            dupes = len(delivered(hosts)) - len(set(delivered(hosts)))
            assert dupes <= 2, dupes
        finally:
            for h in hosts:
                h._kill()


def test_postgres_restart_loses_nothing():
    with Postgres() as pg:
        hosts = start_hosts(pg, ["a", "b"])
        try:
            ports = [h.http_port() for h in hosts]
            acked, refused, stop = set(), [], threading.Event()

            def load():
                n = 0
                while not stop.is_set():
                    st, hd = post(ports[n % 2], {"seq": n, "id": f"e{n}"})
                    if st in (200, 202):
                        acked.add(n)
                    elif st == 503:
                        refused.append(hd.get("retry-after"))
                    n += 1

            t = threading.Thread(target=load)
            t.start()
            try:
                wait_for(lambda: len(acked) >= 50, what="load before the restart")
                pg.stop_server()
                wait_for(lambda: len(refused) >= 3, what="503 while PostgreSQL is down")
                pg.start_server()
                before = len(acked)
                wait_for(lambda: len(acked) >= before + 50, timeout=60,
                         what="ingest resumed after PostgreSQL came back")
            finally:
                stop.set()
                t.join()
            assert all(r and r.isdigit() for r in refused), refused[:5]
            wait_for(lambda: acked <= set(delivered(hosts)), timeout=60,
                     what="every acknowledged event delivered")
        finally:
            for h in hosts:
                h._kill()


def test_dedupe_across_hosts():
    with Postgres() as pg:
        hosts = start_hosts(pg, ["a", "b"])
        try:
            pa, pb = hosts[0].http_port(), hosts[1].http_port()
            assert post(pa, {"seq": 1, "id": "same"})[0] in (200, 202)
            assert post(pb, {"seq": 2, "id": "same"})[0] in (200, 202)
            assert post(pb, {"seq": 3, "id": "other"})[0] in (200, 202)
            wait_for(lambda: 3 in delivered(hosts), what="the other event")
            wait_for(lambda: 1 in delivered(hosts), what="the first event")
            assert 2 not in delivered(hosts), "a repeat on another host was delivered"
        finally:
            for h in hosts:
                h._kill()


def status(h):
    import urllib.request
    with urllib.request.urlopen(h.admin_request("GET", "/admin/status"),
                                timeout=scaled(10)) as r:
        return json.loads(r.read())


def test_members_in_status_and_dead_letters_from_any_host():
    with Postgres() as pg:
        hosts = start_hosts(pg, ["a", "b"])
        try:
            st = wait_for(lambda: (lambda s: s if s["cluster"]["alive"] == 2 else None)(
                status(hosts[0])), what="two members alive")
            cl = st["cluster"]
            assert cl["store"] == "postgres" and cl["host_id"] == "a" and cl["leased"], cl
            assert sorted(m["host_id"] for m in cl["members"]) == ["a", "b"], cl
            assert "warning" not in cl, cl
            # a host on another configuration file is pointed out
            text = open(hosts[1].config).read().replace("delay: 1ms", "delay: 2ms")
            hosts[1].write_config(text)
            hosts[1].stop()
            hosts[1].start(env=host_env(pg, hosts[1], "b"))
            wait_for(lambda: "warning" in status(hosts[0])["cluster"], what="config warning")
            r = plexus("status", "-c", hosts[0].config, "--admin",
                       f"http://127.0.0.1:{hosts[0].admin_port()}/",
                       env=host_env(pg, hosts[0], "a"))
            assert r.returncode == 0, r.stderr
            assert "hosts       2 alive of 2" in r.stdout and "WARNING" in r.stdout, r.stdout
            assert pg.password not in r.stdout + hosts[0].log()
            # a delivery dead-lettered on a is listed from b's configuration
            assert post(hosts[0].http_port(), {"seq": 7, "id": "r7"}, type="t.reject")[0] \
                in (200, 202)
            env = host_env(pg, hosts[1], "b")

            def listed():
                r = plexus("dlq", "list", "--json", "-c", hosts[1].config, env=env)
                assert r.returncode == 0, r.stderr
                return json.loads(r.stdout)
            dead = wait_for(listed, what="the dead letter, seen from b")
            assert [d["sink"] for d in dead] == ["rej"], dead
        finally:
            for h in hosts:
                h._kill()


def test_cut_off_host_pauses_and_resumes():
    with Postgres() as pg:
        hosts = start_hosts(pg, ["a"], delay="250ms")
        h = hosts[0]
        try:
            acked = set()
            for n in range(40):
                st, _ = post(h.http_port(), {"seq": n, "id": f"e{n}"})
                assert st in (200, 202), st
                acked.add(n)
            pg.stop_server()
            try:
                wait_for(lambda: "store lease lapsed" in h.log(), what="deliveries paused")
                paused = len(delivered([h]))
                assert not acked <= set(delivered([h])), "everything delivered before the cut"
                assert status(h)["cluster"]["leased"] is False
            finally:
                pg.start_server()
            wait_for(lambda: "store lease renewed" in h.log(), timeout=60,
                     what="deliveries resumed")
            wait_for(lambda: acked <= set(delivered([h])), timeout=60,
                     what="every acknowledged event delivered")
            assert len(delivered([h])) > paused
        finally:
            h._kill()


ORDERED = """plugins:
  hook: { plugin: webhook, config: { path: /hook, dedupe_pointer: /id } }
  out: { plugin: testsink, ordered: true, max_inflight: 1, config: { file: "${PX_DATA}/out.jsonl", delay: 20ms } }
pipelines:
  - { name: p, from: hook, to: { sink: out }, when: { type: [t.e] } }
"""


def leader_of(hosts):
    """The one host whose log says it leads the ordered sink `out`, or None."""
    leads = [h for h in hosts if "leads ordered sink=out" in h.log()]
    return leads[0] if len(leads) == 1 else None


def test_ordered_sink_keeps_arrival_order_across_leader_kill():
    with Postgres() as pg:
        hosts = []
        try:
            for name in ["a", "b", "c"]:
                h = Host(BASE + ORDERED)
                hosts.append(h)
                h.start(env=host_env(pg, h, name))
            ports = [h.http_port() for h in hosts]
            leader = wait_for(lambda: leader_of(hosts), what="one host leads the ordered sink")
            acked = []
            for n in range(90):
                st, _ = post(ports[n % 3], {"seq": n, "id": f"e{n}"})
                assert st in (200, 202), st
                acked.append(n)
            wait_for(lambda: len(delivered([leader])) >= 15, what="the leader delivering")
            others = [h for h in hosts if h is not leader]
            assert delivered(others) == [], "a host that does not lead delivered"
            leader.kill9()
            before = delivered([leader])
            assert len(before) < len(acked), "the leader delivered everything before the kill"
            ports = [h.http_port() for h in others]
            for n in range(90, 120):
                st, _ = post(ports[n % 2], {"seq": n, "id": f"e{n}"})
                assert st in (200, 202), st
                acked.append(n)
            wait_for(lambda: set(acked) <= set(delivered(hosts)), timeout=90,
                     what="every acknowledged event delivered")
            new = leader_of(others)
            assert new is not None, [h.log()[-2000:] for h in others]
            idle = [h for h in others if h is not new][0]
            assert delivered([idle]) == [], "a host that never led delivered"
            seqs = before + delivered([new])
            first = []
            for x in seqs:
                if x not in first:
                    first.append(x)
            # arrival (acknowledgement) order across the three hosts, the kill included
            assert first == acked, seqs
            # at most the delivery in flight at the kill (max_inflight 1) came twice
            assert len(seqs) - len(first) <= 1, seqs
        finally:
            for h in hosts:
                h._kill()


SQS_CONFIG = """version: 1
host:
  data_dir: "${PX_DATA}/var"
  plugin_path: [@TEST_PLUGINS@, @PLUGINS@]
  drain_timeout: 3s
  admin: { listen: "127.0.0.1:0" }
  store: { type: postgres, url: "${PX_PG_URL}", host_id: "${PX_HOST_ID}", lease: 2s }
plugins:
  ez:
    plugin: ezzing
    config: { queue_url: "${PX_QUEUE}", endpoint: "${PX_SQS}", region: us-east-1,
              access_key_id: test-key, secret_access_key: test-secret, wait_time: 1s,
              visibility_timeout: 3s, backoff: 100ms, max_backoff: 1s }
  out: { plugin: testsink, max_inflight: 2, config: { file: "${PX_DATA}/out.jsonl", delay: @DELAY@ } }
pipelines:
  - { name: all, from: ez, to: { sink: out, with: { seq: "{{/seq?}}" } } }
"""


def sqs_seqs(hosts):
    seqs = []
    for h in hosts:
        seqs += [x["params"]["seq"] for x in read_jsonl(h.path("out.jsonl"))
                 if x["outcome"] == "ok"]
    return seqs


def with_sqs(fn):
    """Runs fn(pg, sqs) with a private PostgreSQL and SQS emulator, both stopped afterwards."""
    from fauxqs import Fauxqs
    sqs = Fauxqs()
    try:
        sqs.start()
        with Postgres() as pg:
            fn(pg, sqs)
    finally:
        sqs.stop()


def sqs_host(pg, sqs, queue, name, endpoint, delay="0", args=()):
    h = Host(SQS_CONFIG.replace("@DELAY@", delay))
    env = dict(host_env(pg, h, name), PX_QUEUE=queue, PX_SQS=endpoint)
    return h.start(env=env, args=args)


def test_sqs_message_received_by_two_hosts_delivered_once():
    from test_ezzing import FaultProxy, envelope

    def run(pg, sqs):
        url = sqs.create_queue("cluster-twice")
        proxy = FaultProxy(sqs.endpoint)
        hosts = []
        try:
            # a persists and delivers, but its deletes never reach the queue: after the
            # visibility timeout the same messages go to b
            proxy.hold_deletes = True
            sqs.send_many(url, [envelope("user_created", i) for i in range(5)])
            hosts.append(sqs_host(pg, sqs, url, "a", proxy.endpoint))
            wait_for(lambda: sorted(sqs_seqs(hosts)) == list(range(5)), what="a delivers 5")
            wait_for(lambda: proxy.held >= 1, what="a delete held")
            hosts.append(sqs_host(pg, sqs, url, "b", sqs.endpoint, args=("--log-level", "debug")))
            wait_for(lambda: sqs.counts(url) == (0, 0), timeout=60,
                     what="b received the messages again and deleted them")
            assert len(re.findall(r"duplicate dropped", hosts[1].log())) >= 5, \
                hosts[1].log()[-3000:]
            assert sorted(sqs_seqs(hosts)) == list(range(5)), sqs_seqs(hosts)
        finally:
            proxy.release.set()
            for h in hosts:
                h._kill()
            proxy.close()
    with_sqs(run)


def test_sqs_two_consumers_kill9_one_loses_nothing():
    from test_ezzing import envelope

    def run(pg, sqs):
        url = sqs.create_queue("cluster-kill")
        hosts = []
        try:
            sqs.send_many(url, [envelope("user_created", i) for i in range(200)])
            for name in ("a", "b"):
                hosts.append(sqs_host(pg, sqs, url, name, sqs.endpoint, delay="20ms"))
            wait_for(lambda: len(sqs_seqs(hosts[:1])) >= 20, timeout=60, what="a delivering")
            hosts[0].kill9()
            assert len(set(sqs_seqs(hosts))) < 200, "the kill came too late to test anything"
            wait_for(lambda: set(sqs_seqs(hosts)) == set(range(200)), timeout=120,
                     what="every message delivered by some host")
            wait_for(lambda: sqs.counts(url) == (0, 0), timeout=60, what="queue empty")
            seqs = sqs_seqs(hosts)
            # at most what a had in flight at the kill (max_inflight 2) comes twice
            assert len(seqs) - len(set(seqs)) <= 2, len(seqs) - len(set(seqs))
        finally:
            for h in hosts:
                h._kill()
    with_sqs(run)


if __name__ == "__main__":
    run_all(globals())
