#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft) broker on 127.0.0.1 for kp's tests and benchmarks, with the
# listeners a real cluster has:
#   PLAINTEXT  127.0.0.1:PORT     (default 9092; the tests' own clients use it)
#   SSL        127.0.0.1:PORT+2   TLS, server certificate signed by a CA this script makes
#   SASL_SSL   127.0.0.1:PORT+3   TLS + SASL: SCRAM-SHA-512 (user kp, created at format time),
#                                 PLAIN (user kp-plain), OAUTHBEARER (unsecured JWTs: test only)
#   MTLS       127.0.0.1:PORT+4   TLS with a client certificate required (mutual TLS)
#   PROXIED    127.0.0.1:PORT+6   plaintext, advertised as 127.0.0.1:PORT+5, where a test runs a TCP
#                                 proxy it can cut: a broker outage for one client only
# (PORT+1 is the KRaft controller.) The CA, the server's keystore, a client certificate and a second,
# unrelated CA (for "wrong CA" tests) are written to $KP_KAFKA_DIR/tls; the listeners' addresses and
# the test credentials to $KP_KAFKA_DIR/listeners.env, which the tests read.
#
#   scripts/kafka.sh start    fetch Kafka through Maven (once), format the log dir (once), start, wait until it answers
#   scripts/kafka.sh stop     stop the broker this script started (and wait for it to exit)
#   scripts/kafka.sh status   exit 0 if the broker answers
#   scripts/kafka.sh reset    stop, then delete the log dir (topics and offsets) and the TLS material, keep the jars
#
# Idempotent: `start` on a running broker returns at once; the jars are fetched once into .kafka/libs.
# Environment: KP_KAFKA_PORT (default 9092), KP_KAFKA_DIR (default <repo>/.kafka).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
dir=${KP_KAFKA_DIR:-$root/.kafka}
port=${KP_KAFKA_PORT:-9092}
controller_port=$((port + 1))
ssl_port=$((port + 2))
sasl_port=$((port + 3))
mtls_port=$((port + 4))
proxy_port=$((port + 5))
proxied_port=$((port + 6))
tls=$dir/tls
# Test credentials, nothing else: this broker listens on loopback only.
store_password=kp-test-store
scram_user=kp
scram_password=kp-scram-secret
plain_user=kp-plain
plain_password=kp-plain-secret
libs=$dir/libs
data=$dir/data
pidfile=$dir/broker.pid
log=$dir/broker.log
props=$dir/server.properties

answers() {
  # A TCP connect is not enough (the socket opens before the broker is ready); ask for metadata.
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || return 1
  grep -q "Kafka Server started" "$log" 2>/dev/null || grep -q "Transition from STARTING to STARTED" "$log" 2>/dev/null
}

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

fetch() {
  if [ -f "$libs/.complete" ]; then return; fi
  echo "kafka.sh: fetching Apache Kafka jars through Maven into $libs" >&2
  rm -rf "$libs"
  mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$libs" >&2
  touch "$libs/.complete"
}

# A CA, the broker's certificate (for 127.0.0.1 and localhost) in a PKCS12 keystore, a client
# certificate for mutual TLS, and an unrelated CA. Made once.
make_tls() {
  if [ -f "$tls/.complete" ]; then return; fi
  rm -rf "$tls"; mkdir -p "$tls"
  (
    cd "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kp test CA" -keyout ca.key -out ca.pem
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=some other CA" -keyout other-ca.key -out other-ca.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > server.ext
    openssl x509 -req -days 3650 -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -extfile server.ext -out server.pem
    openssl pkcs12 -export -in server.pem -inkey server.key -certfile ca.pem -name broker -out server.p12 -passout "pass:$store_password"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kp-client" -keyout client.key -out client.csr
    openssl x509 -req -days 3650 -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem
    rm -f ./*.csr server.ext
  ) > "$dir/tls.log" 2>&1 || { echo "kafka.sh: making the TLS material failed:" >&2; tail -20 "$dir/tls.log" >&2; exit 1; }
  touch "$tls/.complete"
}

configure() {
  mkdir -p "$data"
  make_tls
  cat > "$dir/listeners.env" <<ENV
KP_KAFKA_PLAINTEXT=127.0.0.1:$port
KP_KAFKA_SSL=127.0.0.1:$ssl_port
KP_KAFKA_SASL_SSL=127.0.0.1:$sasl_port
KP_KAFKA_MTLS=127.0.0.1:$mtls_port
KP_KAFKA_PROXY=127.0.0.1:$proxy_port
KP_KAFKA_PROXIED=127.0.0.1:$proxied_port
KP_KAFKA_TLS_DIR=$tls
KP_KAFKA_SCRAM_USER=$scram_user
KP_KAFKA_SCRAM_PASSWORD=$scram_password
KP_KAFKA_PLAIN_USER=$plain_user
KP_KAFKA_PLAIN_PASSWORD=$plain_password
ENV
  cat > "$props" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port,SSL://127.0.0.1:$ssl_port,SASL_SSL://127.0.0.1:$sasl_port,MTLS://127.0.0.1:$mtls_port,PROXIED://127.0.0.1:$proxied_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SSL://127.0.0.1:$ssl_port,SASL_SSL://127.0.0.1:$sasl_port,MTLS://127.0.0.1:$mtls_port,PROXIED://127.0.0.1:$proxy_port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,MTLS:SSL,PROXIED:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
ssl.keystore.type=PKCS12
ssl.keystore.location=$tls/server.p12
ssl.keystore.password=$store_password
ssl.key.password=$store_password
ssl.truststore.type=PEM
ssl.truststore.location=$tls/ca.pem
listener.name.mtls.ssl.client.auth=required
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN,OAUTHBEARER
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$plain_user="$plain_password";
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="kp";
log.dirs=$data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.consumer.min.session.timeout.ms=1000
group.consumer.session.timeout.ms=6000
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=1000
group.min.session.timeout.ms=1000
auto.create.topics.enable=false
delete.topic.enable=true
# 1 MiB index files, not 10: the first entry in a new segment's sparse, preallocated index faults
# the whole file in on this kernel (readahead zeroing it), 2.5-3 ms and 10 MB of page cache per
# index, so a 1,000-partition topic cost the broker ~5 s of CPU and 20 GB of cache (measured
# 2026-11-30; host/benches/scale.rs touch_indexes). A segment still holds 512 MiB of log.
log.index.size.max.bytes=1048576
PROPS
  # A log dir formatted by an older version of this script has no SCRAM user: format it again.
  if [ -f "$data/meta.properties" ] && [ ! -f "$data/.kp-scram" ]; then
    echo "kafka.sh: $data predates the SASL listener; formatting it again" >&2
    rm -rf "$data"; mkdir -p "$data"
  fi
  if [ ! -f "$data/meta.properties" ]; then
    local id; id=$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    if ! java -cp "$libs/*" kafka.tools.StorageTool format -t "$id" -c "$props" \
        --add-scram "SCRAM-SHA-512=[name=$scram_user,password=$scram_password]" > "$dir/format.log" 2>&1; then
      echo "kafka.sh: formatting $data failed:" >&2; tail -20 "$dir/format.log" >&2; exit 1
    fi
    touch "$data/.kp-scram"
  fi
}

start() {
  if running && answers; then echo "kafka.sh: broker already running on 127.0.0.1:$port" >&2; return; fi
  fetch
  configure
  : > "$log"
  nohup java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dorg.slf4j.simpleLogger.defaultLogLevel=info \
    -cp "$libs/*" kafka.Kafka "$props" >> "$log" 2>&1 < /dev/null &
  echo $! > "$pidfile"
  for _ in $(seq 1 120); do
    if answers; then echo "kafka.sh: broker up on 127.0.0.1:$port (log: $log)" >&2; return; fi
    if ! running; then echo "kafka.sh: broker exited during start; last lines of $log:" >&2; tail -30 "$log" >&2; exit 1; fi
    sleep 0.5
  done
  echo "kafka.sh: broker did not answer within 60 s; last lines of $log:" >&2; tail -30 "$log" >&2; exit 1
}

stop() {
  if ! running; then rm -f "$pidfile"; return; fi
  local pid; pid=$(cat "$pidfile")
  kill "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return; }; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) running && answers ;;
  reset) stop; rm -rf "$data" "$tls" ;;
  *) echo "usage: $0 start|stop|status|reset" >&2; exit 2 ;;
esac
