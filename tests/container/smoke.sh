#!/usr/bin/env bash
# Smoke test of the container image (Containerfile, docs/container.md), against the local
# PostgreSQL: build the image, migrate a throwaway database with the one-shot `migrate`,
# run `connector serve` in a container, wait for /readyz, check the process is not root,
# run the image's HEALTHCHECK, create a tenant with the CLI inside the container, make one
# SCIM call (POST /scim/v2/Users → 201), load the admin sign-in page (the templates are in
# the image), then SIGTERM: the container must exit 0 within STOP_SECONDS.
#
# Not part of `make test` (a cold build takes a minute or more): `make image-smoke`, or
# this script. Exits 0 when every step passed, else 1 naming the step, with the
# container's log. Needs podman (or CONTAINER=docker), curl, and PostgreSQL reachable
# from the host network.
#
# Environment (all optional):
#   CONTAINER   podman (default) or docker
#   IMAGE       the tag built and run (localhost/connector:smoke)
#   BASE        base image, passed to `make image` (Makefile's default when empty)
#   CA_BUNDLE   CA file pip trusts during the build (a TLS-inspecting proxy)
#   BUILD       0: run the image IMAGE as it is, without building it
#   RUN_ARGS    extra options for the build and every container run, e.g. on the
#               machines of docs/container.md "Podman on the shared machines":
#               "--runtime runc --ulimit nofile=20000:20000 --ulimit nproc=32768:32768"
#   PG_SERVER   postgresql://postgres@127.0.0.1:5432, a server URL without a database: a
#               database is created (from its `postgres` one) and dropped there, through
#               the image's own psycopg
#   PORT        18080, on the host network
#   STOP_SECONDS 10
set -uo pipefail
cd "$(dirname "$0")/../.."

CONTAINER=${CONTAINER:-podman}
IMAGE=${IMAGE:-localhost/connector:smoke}
BUILD=${BUILD:-1}
RUN_ARGS=${RUN_ARGS:-}
PG_SERVER=${PG_SERVER:-postgresql://postgres@127.0.0.1:5432}
PORT=${PORT:-18080}
STOP_SECONDS=${STOP_SECONDS:-10}
NAME=connector-smoke-$$
DB=connector_image_smoke_$$
URL=http://127.0.0.1:$PORT
LOG=$(mktemp)
# shellcheck disable=SC2206 # RUN_ARGS is a list of options, split on purpose
EXTRA=($RUN_ARGS)
started=$(date +%s)

step() { printf '[%3ss] %s\n' "$(( $(date +%s) - started ))" "$*"; }
fail() {
  step "FAILED: $*"
  echo "--- container log ($NAME) ---"; "$CONTAINER" logs "$NAME" 2>/dev/null | tail -40
  echo "--- $CONTAINER output ---"; tail -40 "$LOG"
  exit 1
}
# The image's own Python and psycopg create and drop the throwaway database: the host
# needs no PostgreSQL client.
admin_sql() {
  "$CONTAINER" run --rm "${EXTRA[@]}" --network host --entrypoint python3 "$IMAGE" -c \
    "import psycopg, sys; psycopg.connect(sys.argv[1], autocommit=True).execute(sys.argv[2])" \
    "$PG_SERVER/postgres" "$1" >>"$LOG" 2>&1
}
cleanup() {
  "$CONTAINER" rm -f "$NAME" >/dev/null 2>&1
  [ -n "${db_made:-}" ] && admin_sql "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
  rm -f "$LOG"
}
trap cleanup EXIT

command -v "$CONTAINER" >/dev/null || { echo "$CONTAINER is not installed"; exit 1; }

if [ "$BUILD" != 0 ]; then
  step "building $IMAGE (make image${BASE:+ BASE=$BASE})"
  make --no-print-directory image CONTAINER="$CONTAINER" IMAGE="$IMAGE" ${BASE:+BASE="$BASE"} \
    ${CA_BUNDLE:+CA_BUNDLE="$CA_BUNDLE"} IMAGE_BUILD_ARGS="$RUN_ARGS" >>"$LOG" 2>&1 \
    || fail "make image"
fi

step "creating database $DB"
admin_sql "CREATE DATABASE $DB" || fail "creating the database at $PG_SERVER"
db_made=1
ENV=(-e "CONNECTOR_DATABASE__URL=postgresql+psycopg://${PG_SERVER#*://}/$DB"
     -e "CONNECTOR_SERVER__PORT=$PORT")

step "one-shot migrate"
"$CONTAINER" run --rm "${EXTRA[@]}" --network host "${ENV[@]}" "$IMAGE" migrate >>"$LOG" 2>&1 \
  || fail "connector migrate"

step "serve"
key=$("$CONTAINER" run --rm "${EXTRA[@]}" "$IMAGE" keygen 2>>"$LOG") || fail "connector keygen"
"$CONTAINER" run -d --name "$NAME" "${EXTRA[@]}" --network host "${ENV[@]}" \
  -e "CONNECTOR_AZURE_SYNC__ENCRYPTION_KEY=$key" "$IMAGE" >>"$LOG" 2>&1 || fail "starting the container"
for _ in $(seq 1 60); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/readyz")" = 200 ] && break
  "$CONTAINER" inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null | grep -q true \
    || fail "the container exited before /readyz answered"
  sleep 1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/readyz")" = 200 ] || fail "/readyz never 200"
step "/readyz 200"

uid=$("$CONTAINER" exec "$NAME" id -u 2>>"$LOG")
[ "$uid" = 10001 ] || fail "serving as uid '$uid', not 10001"
step "serving as uid $uid"
# serve runs the schedulers in its own supervised `connector worker` (server.schedulers).
worker=""
for _ in $(seq 1 30); do
  worker=$("$CONTAINER" exec "$NAME" sh -c \
    'grep -l "worker" /proc/[0-9]*/cmdline 2>/dev/null | while read f; do
       tr "\0" " " < "$f" | grep -q "connector.cli worker --supervised" && echo "$f"; done' \
    2>>"$LOG" | head -1)
  [ -n "$worker" ] && break
  sleep 1
done
[ -n "$worker" ] || fail "no supervised connector worker in the container"
step "connector worker running beside serve (${worker%/cmdline})"

if [ "$CONTAINER" = podman ]; then  # Docker runs HEALTHCHECK on its own schedule only
  "$CONTAINER" healthcheck run "$NAME" >>"$LOG" 2>&1 || fail "HEALTHCHECK"
  step "HEALTHCHECK healthy"
fi

tenant=$("$CONTAINER" exec "$NAME" connector tenant create smoke --json 2>>"$LOG") \
  || fail "connector tenant create"
token=$(printf '%s' "$tenant" | sed -n 's/.*"scim_token": *"\([^"]*\)".*/\1/p')
[ -n "$token" ] || fail "no scim_token in: $tenant"
step "tenant created in the container"

status=$(curl -s -o "$LOG.body" -w '%{http_code}' -X POST "$URL/scim/v2/Users" \
  -H "Authorization: Bearer $token" -H 'Content-Type: application/scim+json' \
  -d '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"smoke@example.com","active":true}')
cat "$LOG.body" >>"$LOG"; rm -f "$LOG.body"
[ "$status" = 201 ] || fail "POST /scim/v2/Users answered $status, not 201"
step "POST /scim/v2/Users 201"

status=$(curl -s -o /dev/null -w '%{http_code}' "$URL/admin/sign-in")
[ "$status" = 200 ] || fail "GET /admin/sign-in answered $status, not 200"
step "GET /admin/sign-in 200"

t0=$(date +%s%N)
"$CONTAINER" kill --signal TERM "$NAME" >>"$LOG" 2>&1 || fail "sending SIGTERM"
code=$(timeout "$STOP_SECONDS" "$CONTAINER" wait "$NAME" 2>>"$LOG") \
  || fail "still running ${STOP_SECONDS}s after SIGTERM"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$code" = 0 ] || fail "exited $code after SIGTERM, not 0"
step "SIGTERM: exited 0 in ${ms} ms"
step "smoke test passed"
