"""The operators' tools end to end with the real binary: `plexus route` (a dry run of one event
through a configuration's router and mappings, no plugin loaded), `plexus test` (pipeline tests,
every example's among them) and `plexus tap` with GET /admin/tap (the events and delivery outcomes
of a running host, filtered, bounded, masked), and POST /admin/route."""
import glob
import http.client
import json
import os
import socket
import subprocess
import tempfile
import threading
import time

import harness
from harness import Host, plexus, run_all, wait_for

SOURCE = harness.SOURCE
EXAMPLES = os.path.join(SOURCE, "etc", "examples")
TOKEN = "tap-t0ken-8d1e3a"


def example(name):
    return os.path.join(EXAMPLES, name)


def write(tmp, name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


LEAD = {"data": {"id": 42, "name": "Ann", "surname": "Lee", "email": "ann@example.com"}}


def route(*args, payload=None, cwd=None):
    """plexus route with the payload written to a file (or args as given)."""
    tmp = cwd or tempfile.mkdtemp(prefix="px-route-")
    extra = []
    if payload is not None:
        extra = [write(tmp, "event.json", json.dumps(payload))]
    return subprocess.run([harness.PLEXUS, "route", *args, *extra], capture_output=True,
                          text=True, cwd=tmp, timeout=harness.scaled(60))


# --- plexus route ------------------------------------------------------------------------------

def test_route_prints_targets_and_mapped_with():
    r = route("-c", example("ezzing.yaml"), "--source", "ezzing", "--type",
              "ezzing.lead_has_been_registered", payload=LEAD)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "leads-to-crm -> crm (create_lead)" in out, out
    assert '"name": "Ann Lee"' in out and '"ezzing_id": 42' in out, out
    assert "archive -> archive" in out, out
    assert 'opportunities-to-crm         no: type "ezzing.lead_has_been_registered" is not one' \
        in out, out
    assert out.rstrip().endswith("routed to 2 targets"), out

    r = route("-c", example("ezzing.yaml"), "--source", "ezzing", "--type",
              "ezzing.lead_has_been_registered", "--id", "ev-1", "--time", "1700000000000",
              "--json", payload=LEAD)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["routed"] is True and doc["errors"] == 0
    assert doc["event"] == {"source": "ezzing", "type": "ezzing.lead_has_been_registered",
                            "id": "ev-1", "time": 1700000000000}
    crm = doc["targets"][0]
    assert crm["pipeline"] == "leads-to-crm" and crm["sink"] == "crm"
    assert crm["action"] == "create_lead"
    assert crm["with"] == {"name": "Ann Lee",
                           "contact": {"email": "ann@example.com", "phone": None},
                           "address": {"street": None, "zipcode": None, "city": None},
                           "ezzing_id": 42}, crm
    assert [p["name"] for p in doc["pipelines"] if p["matched"]] == ["leads-to-crm", "archive"]


def test_route_mapping_error_names_the_field_and_exits_1():
    r = route("-c", example("ezzing.yaml"), "--source", "ezzing", "--type",
              "ezzing.user_created", "--json", payload={"data": {"name": "Nia"}})
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    bad = [t for t in doc["targets"] if "error" in t]
    assert bad == [{"pipeline": "new-users-notified", "sink": "notify", "action": "user_created",
                    "error": "with.email: missing /data/email", "field": "with.email",
                    "pointer": "/data/email"}], bad
    assert doc["errors"] == 1
    r = route("-c", example("ezzing.yaml"), "--source", "ezzing", "--type",
              "ezzing.user_created", payload={"data": {"name": "Nia"}})
    assert r.returncode == 1
    assert "MAPPING ERROR with.email: missing /data/email" in r.stdout, r.stdout
    assert "1 of 2 targets failed to map" in r.stdout, r.stdout


def test_route_no_route_exits_1_with_reasons():
    r = route("-c", example("ezzing.yaml"), "--source", "notify", "--type", "x.y", payload={})
    assert r.returncode == 1, r.stdout
    assert 'archive                      no: from: "ezzing", the event comes from "notify"' \
        in r.stdout, r.stdout
    assert "no route: no pipeline takes this event" in r.stdout
    r = route("-c", example("ploomes.yaml"), "--source", "ploomes", "--type",
              "ploomes.Deals.Win", "--json", payload={"New": {"Id": 1}})
    doc = json.loads(r.stdout)
    cond = [p for p in doc["pipelines"] if p["name"] == "won-deal-tags-contact"][0]
    assert cond == {"name": "won-deal-tags-contact", "matched": False,
                    "reason": "when.match /New/ContactId exists true: missing"}, cond


def test_route_usage_and_config_errors():
    tmp = tempfile.mkdtemp(prefix="px-route-")
    r = route("-c", example("ezzing.yaml"), "--source", "ezzin", payload={}, cwd=tmp)
    assert r.returncode == 2 and 'did you mean "ezzing"?' in r.stderr, r.stderr
    r = route("-c", example("ezzing.yaml"), cwd=tmp)
    assert r.returncode == 2 and "route needs an EVENT.json" in r.stderr, r.stderr
    bad = write(tmp, "bad.json", "{\"a\": ")
    r = route("-c", example("ezzing.yaml"), bad, cwd=tmp)
    assert r.returncode == 2 and bad + ":1:" in r.stderr, r.stderr
    cfg = write(tmp, "bad.yaml", "version: 1\npipelines:\n  - name: p\n    from: nobody\n"
                "    to: { sink: nowhere }\n")
    r = route("-c", cfg, payload={}, cwd=tmp)
    assert r.returncode == 78 and r.stderr.startswith(cfg + ":4:"), r.stderr


def test_route_loads_no_plugin():
    """Plugins that do not exist on a plugin path that does not exist: routing needs neither."""
    tmp = tempfile.mkdtemp(prefix="px-route-")
    cfg = write(tmp, "p.yaml", f"""version: 1
host: {{ data_dir: {tmp}/var, plugin_path: [{tmp}/no-such-dir] }}
plugins:
  in: {{ plugin: not-a-plugin }}
  out: {{ plugin: not-a-plugin-either }}
pipelines:
  - name: p
    from: in
    to: {{ sink: out, with: {{ v: "{{{{/v}}}}" }} }}
""")
    r = route("-c", cfg, "--source", "in", "--json", payload={"v": [1, 2]}, cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["targets"][0]["with"] == {"v": [1, 2]}
    assert not os.path.exists(os.path.join(tmp, "var")), "a dry run made the data directory"
    r = plexus("check", "-c", cfg)
    assert r.returncode == 78, "check should have refused the missing plugins"


# --- plexus test -------------------------------------------------------------------------------

def test_every_example_has_passing_tests():
    configs = sorted(glob.glob(os.path.join(EXAMPLES, "*.yaml")))
    assert configs
    for cfg in configs:
        tests = os.path.join(EXAMPLES, "tests", os.path.basename(cfg))
        assert os.path.exists(tests), f"{cfg} has no pipeline tests ({tests})"
        tmp = tempfile.mkdtemp(prefix="px-test-")
        r = subprocess.run([harness.PLEXUS, "test", "-c", cfg, tests], capture_output=True,
                           text=True, cwd=tmp, timeout=harness.scaled(60))
        assert r.returncode == 0, f"{cfg}:\n{r.stdout}{r.stderr}"
        last = r.stdout.strip().splitlines()[-1]
        passed = int(last.split()[0])
        assert last == f"{passed} passed, 0 failed" and passed >= 2, r.stdout
        assert "FAIL" not in r.stdout


def test_failing_expectation_shows_the_difference():
    tmp = tempfile.mkdtemp(prefix="px-test-")
    tests = write(tmp, "t.yaml", """tests:
  - name: right
    event: { source: ezzing, type: ezzing.user_created, payload: { data: { email: a@b.c, name: A } } }
    expect: { pipelines: [new-users-notified, archive] }
  - name: wrong email
    event: { source: ezzing, type: ezzing.user_created, payload: { data: { email: a@b.c, name: A } } }
    expect:
      targets:
        - { sink: archive }
        - pipeline: new-users-notified
          with_includes: { email: x@b.c }
  - name: wrong error field
    event: { source: ezzing, type: ezzing.user_created, payload: { data: { name: A } } }
    expect:
      targets:
        - { sink: archive }
        - { sink: notify, error: /data/name }
  - name: not routed at all
    event: { source: ezzing, type: ezzing.nothing }
    expect:
      targets: [{ sink: crm }]
""")
    r = plexus("test", "-c", example("ezzing.yaml"), tests)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"ok   right ({tests}:2:5)", lines
    assert lines[1] == f"FAIL wrong email ({tests}:5:5)", lines
    assert lines[2:5] == [
        "     target new-users-notified -> notify: with does not include the expected value at "
        "/email",
        '       expected: "x@b.c"',
        '       got:      "a@b.c"'], lines
    assert f"FAIL wrong error field ({tests}:12:5)" in lines
    assert "     target new-users-notified -> notify: mapping error" in lines
    assert "       got:      with.email: missing /data/email" in lines
    assert "     expected target * -> crm (line 21) was not routed; routed: archive -> archive" in lines, lines
    assert "     unexpected target archive -> archive (not in expect.targets)" in lines
    assert lines[-1] == "1 passed, 3 failed", lines


def test_tests_section_in_the_config():
    """tests: in the configuration: `plexus test` runs them, check and run accept the file."""
    tmp = tempfile.mkdtemp(prefix="px-test-")
    cfg = write(tmp, "c.yaml", f"""version: 1
host:
  data_dir: {tmp}/var
  plugin_path: [{harness.TEST_PLUGINS}]
  admin: {{ listen: null }}
plugins:
  src: {{ plugin: testsource, config: {{ count: 1 }} }}
  out: {{ plugin: testsink, config: {{ file: {tmp}/out.jsonl }} }}
pipelines:
  - {{ name: p, from: src, to: {{ sink: out, with: {{ n: "{{{{/seq}}}}" }} }} }}
tests:
  - name: seq is mapped
    event: {{ source: src, payload: {{ seq: 5 }} }}
    expect: {{ targets: [{{ sink: out, with: {{ n: 5 }} }}] }}
  - name: seq is needed
    event: {{ source: src }}
    expect: {{ targets: [{{ sink: out, error: /seq }}] }}
""")
    r = plexus("test", "-c", cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "2 passed, 0 failed", r.stdout
    r = plexus("check", "-c", cfg)
    assert r.returncode == 0, r.stderr
    with Host(open(cfg).read(), tmp=tempfile.mkdtemp(prefix="px-it-")) as h:
        h.start()
        wait_for(lambda: harness.read_jsonl(os.path.join(tmp, "out.jsonl")), what="delivery")
        assert h.stop() == 0


def test_malformed_test_file_names_file_line_column():
    tmp = tempfile.mkdtemp(prefix="px-test-")
    tests = write(tmp, "t.yaml", "tests:\n  - name: x\n    event: { source: ezzing }\n"
                  "    expect: { targets: [{ sink: crm, with_include: {} }] }\n")
    r = plexus("test", "-c", example("ezzing.yaml"), tests)
    assert r.returncode == 78, r.stdout + r.stderr
    assert r.stderr.strip() == (f'{tests}:4:38: unknown key "with_include" in a target of '
                                'expect.targets, did you mean "with_includes"?'), r.stderr
    tests = write(tmp, "t2.yaml", "tests:\n  - name: x\n    event: [\n")
    r = plexus("test", "-c", example("ezzing.yaml"), tests)
    assert r.returncode == 78 and r.stderr.startswith(tests + ":"), r.stderr
    r = plexus("test", "-c", example("ezzing.yaml"))
    assert r.returncode == 1 and "no tests" in r.stderr, r.stderr


if __name__ == "__main__":
    run_all(globals())
