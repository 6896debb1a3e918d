#!/usr/bin/env bash
# Fetch the Apache Kafka broker (KRaft) jars from Maven Central into a cache folder keyed by version,
# for the integration tests (tests/harness/kafka_broker.py) and local services mode.
#
#   scripts/fetch-kafka.sh            -> prints <cache>/kafka-<version>/libs
#
# The version is the <kafka.version> pinned in build/kafka/pom.xml (override: DREAMBOT_KAFKA_VERSION).
# The cache is ${DREAMBOT_CACHE:-$HOME/.cache/dreambot}. Idempotent: once a download completed (marker
# file .complete beside libs/) nothing is fetched again. Needs java 17+ and mvn; only Maven Central.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pom="$root/build/kafka/pom.xml"
pinned="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom" | head -n1)"
version="${DREAMBOT_KAFKA_VERSION:-$pinned}"
if [[ -z "$version" ]]; then
  echo "fetch-kafka: no <kafka.version> in $pom" >&2
  exit 2
fi
cache="${DREAMBOT_CACHE:-$HOME/.cache/dreambot}"
dest="$cache/kafka-$version"
libs="$dest/libs"
marker="$dest/.complete"

if [[ -f "$marker" ]]; then
  echo "$libs"
  exit 0
fi

for tool in java mvn; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "fetch-kafka: '$tool' not found; install it (scripts/install-system-deps.sh)" >&2
    exit 2
  fi
done

mkdir -p "$dest"
# One fetch at a time per version (parallel test sessions may race here).
exec 9>"$dest/.lock"
flock 9
if [[ -f "$marker" ]]; then
  echo "$libs"
  exit 0
fi

started=$SECONDS
staging="$dest/libs.partial"
rm -rf "$staging"
echo "fetch-kafka: resolving org.apache.kafka:kafka_2.13:$version from Maven Central into $libs" >&2
# Maven's own output goes to stderr: stdout carries only the libs path.
mvn -q -B -Dstyle.color=never -f "$pom" -Dkafka.version="$version" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$staging" >&2

if [[ ! -f "$staging/kafka_2.13-$version.jar" ]]; then
  echo "fetch-kafka: kafka_2.13-$version.jar missing after mvn; is $version served by Maven Central?" >&2
  exit 1
fi
rm -rf "$libs"
mv "$staging" "$libs"
printf 'kafka %s\nfetched %s\n' "$version" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$marker"
echo "fetch-kafka: $(ls "$libs" | wc -l) jars in $((SECONDS - started))s" >&2
echo "$libs"
