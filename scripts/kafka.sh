#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft) broker on 127.0.0.1 for kp's tests and benchmarks.
#
#   scripts/kafka.sh start    fetch Kafka through Maven (once), format the log dir (once), start, wait until it answers
#   scripts/kafka.sh stop     stop the broker this script started (and wait for it to exit)
#   scripts/kafka.sh status   exit 0 if the broker answers
#   scripts/kafka.sh reset    stop, then delete the log dir (topics and offsets), keep the jars
#
# Idempotent: `start` on a running broker returns at once; the jars are fetched once into .kafka/libs.
# Environment: KP_KAFKA_PORT (default 9092), KP_KAFKA_DIR (default <repo>/.kafka).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
dir=${KP_KAFKA_DIR:-$root/.kafka}
port=${KP_KAFKA_PORT:-9092}
controller_port=$((port + 1))
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

configure() {
  mkdir -p "$data"
  cat > "$props" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
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
PROPS
  if [ ! -f "$data/meta.properties" ]; then
    local id; id=$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    if ! java -cp "$libs/*" kafka.tools.StorageTool format -t "$id" -c "$props" > "$dir/format.log" 2>&1; then
      echo "kafka.sh: formatting $data failed:" >&2; tail -20 "$dir/format.log" >&2; exit 1
    fi
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
  reset) stop; rm -rf "$data" ;;
  *) echo "usage: $0 start|stop|status|reset" >&2; exit 2 ;;
esac
