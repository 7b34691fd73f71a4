#!/bin/sh
# Starts redis-server with rtml's ACL users; docker-compose and Kubernetes run this same file.
#
#   default       off: a client that does not authenticate can run nothing (NOAUTH)
#   rtml-admin    every command and key: operators (redis-cli --user rtml-admin)
#   rtml-writer   the stream job, materialize, backfill, `rtml apply`: only keys of the Feast project
#                 (Feast's key = entity key + project name, so they END with it) and only the commands
#                 the writers send (hash writes, TTLs, the write script, Feast's table clean-up)
#   rtml-serving  the prediction service: read-only (%R~) on the same keys, hash reads only
#
# Passwords come from the environment (REDIS_ADMIN_PASSWORD, REDIS_WRITER_PASSWORD, REDIS_SERVING_PASSWORD:
# an env file or Kubernetes Secrets), never from the repository. The ACL file holds only their SHA-256
# hashes, mode 0600, in $REDIS_ACL_DIR (a tmpfs / emptyDir). Arguments are passed on to redis-server.
#
# TLS (optional): with REDIS_TLS_DIR set (a mounted kubernetes.io/tls Secret: tls.crt, tls.key, ca.crt) Redis
# listens with TLS only, on REDIS_TLS_PORT (6379) with no plaintext port; clients authenticate with the ACL
# passwords above, not certificates. Clients then use rediss:// and RTML_REDIS_TLS_CA (docs/operators.md).
set -eu

# Feast project of the feature repo (RTML_FEAST_PROJECT; `rtml up` passes its feature repo's; the default is
# feature_repo/feature_store.yaml's, tests/deploy/test_redis_acl.py keeps them equal).
KEYS="~*${RTML_FEAST_PROJECT:-rtml_fraud}"
# (+command: redis-py's cluster client reads the command table when it connects; +asking: a read or write
# that follows an ASK redirect while a slot migrates)
CONNECT='+ping +select +hello +auth +client|setname +readonly +asking +role +command +cluster|slots +cluster|shards'
# (the online store's upsert script calls TIME and PERSIST; a write on a replicated deployment waits with WAIT)
WRITER="$CONNECT +hset +hget +hmget +hgetall +hdel +hexists +exists +del +unlink +expire +pexpire +pexpireat +pexpiretime +persist +ttl +pttl +time +wait +eval +evalsha +script|load +script|exists +multi +exec +discard +scan +info"
SERVING="$CONNECT +hget +hmget +hgetall +exists"

sha256_of() {
  [ -n "$1" ] || { echo "start-redis.sh: $2 is empty" >&2; exit 64; }
  printf '%s' "$1" | sha256sum | cut -d' ' -f1
}

dir=${REDIS_ACL_DIR:-/run/redis}
umask 077
mkdir -p "$dir"
admin=$(sha256_of "${REDIS_ADMIN_PASSWORD:-}" REDIS_ADMIN_PASSWORD)
writer=$(sha256_of "${REDIS_WRITER_PASSWORD:-}" REDIS_WRITER_PASSWORD)
serving=$(sha256_of "${REDIS_SERVING_PASSWORD:-}" REDIS_SERVING_PASSWORD)
# default: off and without a password, so no connection can log in as it. Its permissions are still those of a
# full user because Redis 7.0 replays the append-only file as the default user and re-checks ACLs at EXEC: with
# -@all every MULTI/EXEC block of the file (each Lua script's writes) is refused with NOPERM at restart, and the
# data written by them is silently lost (redis/redis#14541, valkey-io/valkey#3983; seen in the fault matrix).
cat > "$dir/users.acl" <<ACL
user default off resetpass ~* &* +@all
user rtml-admin on #$admin ~* &* +@all
user rtml-writer on #$writer resetchannels $KEYS -@all $WRITER
user rtml-serving on #$serving resetchannels %R$KEYS -@all $SERVING
ACL
# the server needs only the hashed file: no password stays in its environment
unset REDIS_ADMIN_PASSWORD REDIS_WRITER_PASSWORD REDIS_SERVING_PASSWORD
if [ -n "${REDIS_TLS_DIR:-}" ]; then
  for f in tls.crt tls.key ca.crt; do
    [ -r "$REDIS_TLS_DIR/$f" ] || { echo "start-redis.sh: $REDIS_TLS_DIR/$f is missing" >&2; exit 66; }
  done
  set -- "$@" --port 0 --tls-port "${REDIS_TLS_PORT:-6379}" --tls-cert-file "$REDIS_TLS_DIR/tls.crt" \
    --tls-key-file "$REDIS_TLS_DIR/tls.key" --tls-ca-cert-file "$REDIS_TLS_DIR/ca.crt" --tls-auth-clients no
fi
exec redis-server "$@" --aclfile "$dir/users.acl"
