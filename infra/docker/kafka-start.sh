#!/usr/bin/env bash
# Starts the docker-compose broker (apache/kafka image) secured, as rtml's local broker (infra/kafka_broker.py):
#
#   1. server.properties from the KAFKA_* environment by the image's own rule (KAFKA_FOO_BAR -> foo.bar,
#      ___ -> -, __ -> _; docker-compose.yml sets SASL listeners, StandardAuthorizer, super users, no ACL = no access)
#   2. the storage formatted once, bootstrapping the admin's SCRAM credential (kafka-storage format --add-scram):
#      KRaft keeps SCRAM credentials in its metadata, so nothing else can let the first super user in. The other
#      users and their ACLs come from the compose `init` service (python -m infra.kafka_broker provision-roles)
#   3. a private client config for the health check (as admin), then the broker (exec)
#
# Why not the image's launcher: it formats the storage without --add-scram. The admin's password comes from
# SCRAM_ADMIN_PASSWORD (KAFKA_ADMIN_PASSWORD in infra/.env), never from the repository; it is passed to the
# storage tool once, on first start, as the local broker does. BROKER_HOME (default /opt/kafka), BROKER_CONFIG
# and BROKER_CLIENT_CONFIG (default under /tmp) say where things are.
set -euo pipefail

home=${BROKER_HOME:-/opt/kafka}
config=${BROKER_CONFIG:-/tmp/kafka/server.properties}
client_config=${BROKER_CLIENT_CONFIG:-/tmp/kafka/admin-client.properties}
: "${CLUSTER_ID:?CLUSTER_ID is not set}"
: "${SCRAM_ADMIN_PASSWORD:?SCRAM_ADMIN_PASSWORD is not set (KAFKA_ADMIN_PASSWORD in infra/.env)}"
mechanism=SCRAM-SHA-512

# Variables the image's launcher reads itself instead of turning them into broker properties.
not_properties=" KAFKA_VERSION KAFKA_HEAP_OPTS KAFKA_LOG4J_OPTS KAFKA_OPTS KAFKA_JMX_OPTS KAFKA_JVM_PERFORMANCE_OPTS
  KAFKA_GC_LOG_OPTS KAFKA_LOG4J_ROOT_LOGLEVEL KAFKA_LOG4J_LOGGERS KAFKA_TOOLS_LOG4J_LOGLEVEL KAFKA_JMX_HOSTNAME "

umask 077
mkdir -p "$(dirname "$config")" "$(dirname "$client_config")"
for name in $(compgen -e | grep '^KAFKA_' | sort); do
  case "$not_properties" in *[[:space:]]"$name"[[:space:]]*) continue ;; esac
  key=${name#KAFKA_}
  key=${key,,}
  key=${key//___/-}
  key=${key//__/@}
  key=${key//_/.}
  printf '%s=%s\n' "${key//@/_}" "${!name}"
done > "$config"

"$home/bin/kafka-storage.sh" format --ignore-formatted --cluster-id "$CLUSTER_ID" --config "$config" \
  --add-scram "$mechanism=[name=admin,password=$SCRAM_ADMIN_PASSWORD]"

printf 'security.protocol=SASL_PLAINTEXT\nsasl.mechanism=%s\nsasl.jaas.config=%s required username="admin" password="%s";\n' \
  "$mechanism" org.apache.kafka.common.security.scram.ScramLoginModule "$SCRAM_ADMIN_PASSWORD" > "$client_config"
unset SCRAM_ADMIN_PASSWORD

if [ -z "${KAFKA_LOG4J_OPTS:-}" ]; then  # log to stdout only (docker logs), no log files in the container
  printf '%s\n' 'status = warn' 'appender.out.type = Console' 'appender.out.name = OUT' \
    'appender.out.layout.type = PatternLayout' 'appender.out.layout.pattern = [%d] %p %m (%c)%n' \
    'rootLogger.level = INFO' 'rootLogger.appenderRef.out.ref = OUT' > "$(dirname "$config")/log4j2.properties"
  export KAFKA_LOG4J_OPTS="-Dlog4j2.configurationFile=$(dirname "$config")/log4j2.properties"
fi
export LOG_DIR=${LOG_DIR:-$(dirname "$config")/logs}
exec "$home/bin/kafka-server-start.sh" "$config"
