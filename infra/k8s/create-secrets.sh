#!/usr/bin/env bash
# Creates the Secrets of infra/k8s that are not in the repository (run once per cluster, before
# `kubectl apply -k infra/k8s`; re-running keeps existing passwords):
#
#   rtml-redis-users  admin-password, writer-password, serving-password: random, generated here, never
#                     printed (Redis ACL users of redis/start-redis.sh; the pods read them via secretKeyRef)
#   rtml-api-keys     api_keys.json: the API key hashes the prediction service checks, from the file that
#                     `rtml keys create` writes (salted hashes only; the keys themselves never leave it)
#   rtml-metrics-key  token: Prometheus's key for the prediction service's /metrics (a key of scope
#                     `metrics` in that file), from the environment variable METRICS_API_KEY
#
# Usage: METRICS_API_KEY=... infra/k8s/create-secrets.sh API_KEYS_JSON [NAMESPACE]   (namespace default: rtml)
#   e.g. export METRICS_API_KEY=$(rtml keys create --name prometheus --scope metrics)
# Kafka users' passwords are not made here: Strimzi's user operator writes a Secret per KafkaUser.
# To rotate the API keys, run it again with the new file: the pods see the change within a minute.
set -euo pipefail

keys_file=${1:?usage: create-secrets.sh API_KEYS_JSON [NAMESPACE] (the file of rtml keys create)}
namespace=${2:-rtml}
[ -r "$keys_file" ] || { echo "create-secrets.sh: cannot read $keys_file" >&2; exit 66; }
[ -n "${METRICS_API_KEY:-}" ] || { echo "create-secrets.sh: set METRICS_API_KEY (rtml keys create --name prometheus --scope metrics)" >&2; exit 64; }
umask 077  # secret values go through private temporary files, never a command line
tmp_dir=$(mktemp -d)
trap 'rm -rf "$tmp_dir"' EXIT

password() { openssl rand -hex 24; }

if kubectl -n "$namespace" get secret rtml-redis-users >/dev/null 2>&1; then
  echo "secret rtml-redis-users exists: kept"
else
  env_file="$tmp_dir/redis-users.env"
  printf 'admin-password=%s\nwriter-password=%s\nserving-password=%s\n' "$(password)" "$(password)" "$(password)" > "$env_file"
  kubectl -n "$namespace" create secret generic rtml-redis-users --from-env-file="$env_file" >/dev/null
  echo "secret rtml-redis-users created"
fi

kubectl -n "$namespace" create secret generic rtml-api-keys --from-file=api_keys.json="$keys_file" \
  --dry-run=client -o yaml | kubectl -n "$namespace" apply -f - >/dev/null
echo "secret rtml-api-keys applied from $keys_file"

printf '%s' "$METRICS_API_KEY" > "$tmp_dir/token"
kubectl -n "$namespace" create secret generic rtml-metrics-key --from-file=token="$tmp_dir/token" \
  --dry-run=client -o yaml | kubectl -n "$namespace" apply -f - >/dev/null
echo "secret rtml-metrics-key applied"
