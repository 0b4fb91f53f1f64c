#!/usr/bin/env bash
# ezzing throughput: N messages (default 20000) pre-loaded in the fauxqs SQS emulator, drained
# through the host (ezzing -> testsink, persisted in the spool, deleted after persist). The
# reference is plain receive + DeleteMessageBatch loops (Node.js, keep-alive) against the same
# emulator in the same run: the emulator's own ceiling. It runs 2 x POLLERS loops, as many
# requests in flight as the host may have (each poller can have a receive and a delete going).
# The host is timed from its start until the queue is empty and the sink holds every event.
# Prints messages/s for both and their ratio.
#
#   bench/ezzing.sh [BUILD_DIR]     (default: build; N, POLLERS, REF_LOOPS from the environment)
set -euo pipefail
cd "$(dirname "$0")/.."
export PX_BUILD_DIR=${1:-${PX_BUILD_DIR:-build}}
export PX_SOURCE_DIR=.
export N=${N:-20000} POLLERS=${POLLERS:-2}
export REF_LOOPS=${REF_LOOPS:-$((2 * POLLERS))}
[ -x "$PX_BUILD_DIR/host/plexus" ] || { echo "no $PX_BUILD_DIR/host/plexus: build first" >&2; exit 1; }

exec python3 - <<'EOF'
import os, subprocess, sys, time
sys.path.insert(0, "tests/integration")
from fauxqs import Fauxqs
from harness import Host, read_jsonl, wait_for

N, POLLERS, REF_LOOPS = (int(os.environ[k]) for k in ("N", "POLLERS", "REF_LOOPS"))

REFERENCE = r"""
const [endpoint, url, total, loops] = [process.argv[1], process.argv[2], +process.argv[3], +process.argv[4]];
async function call(action, body) {
  const r = await fetch(endpoint + "/", { method: "POST", body: JSON.stringify(body), headers: {
    "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS." + action } });
  if (r.status !== 200) throw new Error(action + " " + r.status + " " + await r.text());
  return r.json();
}
let done = 0;
async function loop() {
  while (done < total) {
    const r = await call("ReceiveMessage", { QueueUrl: url, MaxNumberOfMessages: 10,
      WaitTimeSeconds: 1, MessageSystemAttributeNames: ["All"], MessageAttributeNames: ["All"] });
    const msgs = r.Messages || [];
    if (!msgs.length) continue;
    await call("DeleteMessageBatch", { QueueUrl: url,
      Entries: msgs.map((m, i) => ({ Id: "e" + i, ReceiptHandle: m.ReceiptHandle })) });
    done += msgs.length;
  }
}
const t0 = process.hrtime.bigint();
Promise.all(Array.from({ length: loops }, loop)).then(() => {
  console.log(Number(process.hrtime.bigint() - t0) / 1e9);
});
"""

def body(i):
    return ('{"uuid":"00000000-0000-4000-8000-%012d","displayName":"lead_has_been_registered",'
            '"job":"lead_has_been_registered","maxTries":5,"maxExceptions":null,"failOnTimeout":true,'
            '"backoff":null,"timeout":60,"data":{"name":"maria","surname":"lopez","address":"calle '
            'juan gris 1","zipcode":"28100","city":"madrid","province":"madrid","phone":"123456",'
            '"email":"m.lopez@hm.com","latitude":20.284494,"longitude":9.027065,"updated_at":'
            '"2021-03-24 15:44:38","created_at":"2021-03-24 15:44:38","id":%d}}' % (i, i))

def preload(sqs, name):
    url = sqs.create_queue(name)
    bodies = [body(i) for i in range(N)]
    sqs.send_many(url, bodies)
    assert sqs.counts(url) == (N, 0), sqs.counts(url)
    return url

sqs = Fauxqs(logger=False).start()
try:
    # Reference: plain receive + delete loops.
    url = preload(sqs, "bench-reference")
    out = subprocess.run(["node", "-e", REFERENCE, sqs.endpoint, url, str(N), str(REF_LOOPS)],
                         capture_output=True, text=True, check=True)
    ref_s = float(out.stdout.strip())
    assert sqs.counts(url) == (0, 0), sqs.counts(url)

    # The host: ezzing -> testsink, through the spool.
    url = preload(sqs, "bench-host")
    cfg = f"""version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@, @PLUGINS@]
plugins:
  ez:
    plugin: ezzing
    config: {{ queue_url: "{url}", region: us-east-1, endpoint: "{sqs.endpoint}",
              access_key_id: bench-key-id, secret_access_key: bench-secret, pollers: {POLLERS}, wait_time: 1s }}
  out: {{ plugin: testsink, config: {{ file: "@TMP@/out.jsonl" }} }}
pipelines:
  - {{ name: all, from: ez, to: {{ sink: out }} }}
"""
    def lines(path):
        try:
            with open(path, "rb") as f:
                return f.read().count(b"\n")
        except FileNotFoundError:
            return 0

    with Host(cfg) as h:
        t0 = time.time()
        h.start()
        wait_for(lambda: sqs.counts(url) == (0, 0), timeout=600, interval=0.05,
                 what="queue drained")
        drained_s = time.time() - t0
        wait_for(lambda: lines(h.path("out.jsonl")) >= N, timeout=600, interval=0.05,
                 what="every event delivered")
        host_s = time.time() - t0
        h.stop()
    delivered = len(read_jsonl(h.path("out.jsonl")))
    assert delivered == N, delivered
finally:
    sqs.stop()

ref_rate, host_rate = N / ref_s, N / host_s
print(f"messages: {N}, host pollers: {POLLERS}, reference loops: {REF_LOOPS}")
print(f"reference receive+delete loop: {ref_rate:9.0f} msg/s ({ref_s:.2f} s)")
print(f"plexus ezzing -> spool -> sink: {host_rate:9.0f} msg/s ({host_s:.2f} s)")
print(f"  (queue empty after {drained_s:.2f} s, last delivery to the sink after {host_s:.2f} s)")
print(f"ratio: {host_rate / ref_rate:.2f} (target >= 0.70)")
EOF
