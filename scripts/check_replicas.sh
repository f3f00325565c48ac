#!/usr/bin/env bash
# Checks README.md's sample nginx configuration ("From one machine to many" / "Serving") on this machine,
# over loopback. It starts a throwaway PostgreSQL cluster, two replicas (`digitrecognizer serve --workers 1`)
# writing to the same database, and nginx with the README's sample config: the same directives, with the
# replicas' loopback addresses as the upstream servers and a free loopback port to listen on. Through nginx,
# with curl, it checks: health; a prediction of a drawn digit; that requests reach both replicas; that the
# upstream connections are kept open; N corrections stored exactly N times; which side answers 413 for a
# body just over 5 MB and for a 6 MB one; and what happens when one replica dies (stopped with requests in
# flight, then killed). One PASS/FAIL line per check; the exit status is non-zero if any check fails.
#
# Needs Debian's nginx and postgresql packages (`apt-get install nginx postgresql`), curl, and the project's
# Python environment: PYTHON (default .venv/bin/python) must have digitrecognizer's dependencies and the
# postgres extra; the code under src/ is used. Run as root, the cluster runs as the `postgres` user.
# A manual check, not part of scripts/test.sh (that does not install nginx).
#
#   bash scripts/check_replicas.sh [N]     # N corrections to post (default 40)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
N=${1:-40}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
DATA=${DIGITRECOGNIZER_DATA:-$REPO/../shared/data/mnist}
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"

die() { echo "check_replicas: $*" >&2; exit 2; }
command -v nginx >/dev/null || die "no nginx: apt-get install nginx"
command -v curl >/dev/null || die "no curl: apt-get install curl"
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$PG_BIN/initdb" ] || die "no PostgreSQL server binaries: apt-get install postgresql"
[ -x "$PYTHON" ] || die "no Python at $PYTHON: set PYTHON to the project's environment"

FAILS=0
pass() { printf 'PASS  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; FAILS=$((FAILS + 1)); }
info() { printf 'INFO  %s\n' "$*"; }
check() { if [ "$1" = 0 ]; then pass "$2"; else fail "$2"; fi; }  # check STATUS DESCRIPTION

# -- everything lives in one temp dir, removed on exit -------------------------------------------------
TMP=$(mktemp -d /tmp/check-replicas.XXXXXX)
chmod 755 "$TMP"  # the cluster's user and nginx's workers must get through it
NGINX_PID="" R1_PID="" R2_PID="" PG_STARTED=""
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
    set +e
    if [ -n "$NGINX_PID" ]; then kill -QUIT "$NGINX_PID" 2>/dev/null; wait "$NGINX_PID" 2>/dev/null; fi
    for pid in $R1_PID $R2_PID; do
        kill -CONT "$pid" 2>/dev/null; kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    done
    [ -n "$PG_STARTED" ] && as_pg "$PG_BIN/pg_ctl" -D "$TMP/pg/data" -m immediate stop >/dev/null 2>&1
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r PG_PORT P1 P2 PORT < <("$PYTHON" -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
NGINX="http://127.0.0.1:$PORT"
info "$(nginx -v 2>&1); $("$PG_BIN/postgres" --version); replicas on 127.0.0.1:$P1 and :$P2, nginx on :$PORT"

# -- PostgreSQL ------------------------------------------------------------------------------------------
mkdir "$TMP/pg"
[ "$(id -u)" = 0 ] && chown postgres: "$TMP/pg"
as_pg "$PG_BIN/initdb" -D "$TMP/pg/data" -U postgres --auth=trust --encoding=UTF8 --locale=C --no-sync >/dev/null
# fsync off, as in tests/conftest.py: this server is never killed, so its own durability is not under test.
as_pg "$PG_BIN/pg_ctl" -D "$TMP/pg/data" -l "$TMP/pg/server.log" -w -t 60 \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $TMP/pg -c fsync=off -c full_page_writes=off" start >/dev/null
PG_STARTED=1
psql_() { psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -tA "$@"; }
psql_ -d postgres -c "CREATE DATABASE digitrecognizer"
DB_URL="postgresql://postgres@127.0.0.1:$PG_PORT/digitrecognizer"
rows() { psql_ -d digitrecognizer -c "SELECT count(*) FROM feedback"; }

# -- two replicas, started together on the new, empty database ---------------------------------------------
# Every correction here comes from one client (curl, through nginx) in bursts: above the default rate limit.
"$PYTHON" -m digitrecognizer.cli serve --host 127.0.0.1 --port "$P1" --workers 1 --db "$DB_URL" --access-log \
    --feedback-rate 1000/minute >"$TMP/replica1.log" 2>&1 &
R1_PID=$!
"$PYTHON" -m digitrecognizer.cli serve --host 127.0.0.1 --port "$P2" --workers 1 --db "$DB_URL" --access-log \
    --feedback-rate 1000/minute >"$TMP/replica2.log" 2>&1 &
R2_PID=$!

# -- a digit to send: an MNIST test digit drawn on a canvas (or, without the MNIST files, a stroke of a 1) --
LABEL=$("$PYTHON" - "$DATA" "$TMP/digit.png" <<'EOF'
import io, sys
from pathlib import Path
import numpy as np
data_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
if (data_dir / "t10k-images-idx3-ubyte.gz").exists():
    from digitrecognizer import data, synth
    test = data.load_split(data_dir, "test")
    out.write_bytes(synth.render_digit(test.images[0], np.random.default_rng(0), "black_on_white"))
    print(int(test.labels[0]))
else:
    from PIL import Image, ImageDraw
    image = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(image).line([(150, 50), (140, 230)], fill=0, width=18)
    buf = io.BytesIO(); image.save(buf, "PNG"); out.write_bytes(buf.getvalue())
    print(1)
EOF
)

# -- nginx, with the README's sample config --------------------------------------------------------------
mkdir "$TMP/nginx"
# The first ```nginx block in README.md, with its two upstream servers and its listen address replaced.
awk -v p1="$P1" -v p2="$P2" -v port="$PORT" '
    /^```nginx/ { inside = 1; next }
    inside && /^```/ { exit }
    inside {
        if ($1 == "server" && $2 ~ /^[0-9.]+:[0-9]+;$/) {
            n++; sub(/server [0-9.]+:[0-9]+;/, "server 127.0.0.1:" (n == 1 ? p1 : p2) ";")
        }
        if ($1 == "listen") sub(/listen [^;]*;/, "listen 127.0.0.1:" port ";")
        print
    }' README.md >"$TMP/nginx/sample.conf"
for directive in "upstream digitrecognizer" "server 127.0.0.1:$P1;" "server 127.0.0.1:$P2;" "keepalive 32;" "keepalive_timeout 4s;" \
        "listen 127.0.0.1:$PORT;" "client_max_body_size 5m;" "proxy_pass http://digitrecognizer;" \
        "proxy_http_version 1.1;" 'proxy_set_header Connection "";' 'proxy_set_header Host $host;' \
        'proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;' \
        'proxy_set_header X-Forwarded-Proto $scheme;'; do
    grep -qF -- "$directive" "$TMP/nginx/sample.conf" || die "README's nginx sample has no '$directive'"
done
[ "$(id -u)" = 0 ] && user_line="user www-data;" || user_line=""
cat >"$TMP/nginx/nginx.conf" <<EOF
# Generated by scripts/check_replicas.sh: everything nginx writes stays in $TMP/nginx.
daemon off;
worker_processes 1;
$user_line
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log info;
events { worker_connections 256; }
http {
    client_body_temp_path $TMP/nginx/client_body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    log_format upstreams '\$request_method \$uri \$status upstream=\$upstream_addr upstream_status=\$upstream_status';
    access_log $TMP/nginx/access.log upstreams;

    # ---- README.md's sample ----
$(cat "$TMP/nginx/sample.conf")
}
EOF
nginx -t -q -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" \
    || { cat "$TMP/nginx/error.log"; die "nginx refused the config"; }
nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" &
NGINX_PID=$!

wait_for() {  # wait_for URL PID NAME: until URL answers 200 (or PID dies, or 120 s pass)
    for _ in $(seq 240); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || { tail -n 20 "$TMP/$3.log" >&2 || true; die "$3 exited"; }
        sleep 0.5
    done
    die "$3 did not answer at $1"
}
wait_for "http://127.0.0.1:$P1/api/health" "$R1_PID" replica1
wait_for "http://127.0.0.1:$P2/api/health" "$R2_PID" replica2
kill -0 "$NGINX_PID" 2>/dev/null || { cat "$TMP/nginx/error.log"; die "nginx exited"; }
: >"$TMP/nginx/access.log"  # count only what this script sends from here on (nginx keeps the file open)

# curl_ FILE CURL-ARGS...: prints "STATUS CONTENT-TYPE", the body goes to FILE
curl_() { local out=$1; shift; curl -sS -o "$out" -w '%{http_code} %{content_type}\n' "$@" || echo "000 -"; }
feedback() { curl_ "$1" -F "image=@$TMP/digit.png;type=image/png" -F "correct=$LABEL" "$NGINX/api/feedback"; }
ok_count() { grep -c "^$1 " "$2" || true; }  # ok_count STATUS FILE: lines starting with STATUS
upstream_count() { grep -c "upstream=127.0.0.1:$1 " "$TMP/nginx/access.log" || true; }

# 1. health
read -r code type < <(curl_ "$TMP/health.json" "$NGINX/api/health")
check $([ "$code" = 200 ] && grep -q '"status":"ok"' "$TMP/health.json"; echo $?) \
    "GET /api/health through nginx: $code $(head -c 80 "$TMP/health.json")"

# 2. a prediction
read -r code type < <(curl_ "$TMP/predict.json" -F "image=@$TMP/digit.png;type=image/png" "$NGINX/api/predict")
digit=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("digit"))' "$TMP/predict.json" \
    2>/dev/null || echo "?")
check $([ "$code" = 200 ] && [[ "$digit" =~ ^[0-9]$ ]]; echo $?) \
    "POST /api/predict through nginx: $code, digit $digit (drawn digit: $LABEL, $(stat -c %s "$TMP/digit.png") bytes)"

# 3. both replicas get requests, and nginx keeps its connections to them open
for _ in $(seq 20); do curl_ /dev/null "$NGINX/api/health"; done >"$TMP/health20.txt"
c1=$(upstream_count "$P1") c2=$(upstream_count "$P2")
check $([ "$(ok_count 200 "$TMP/health20.txt")" = 20 ] && [ "$c1" -gt 0 ] && [ "$c2" -gt 0 ]; echo $?) \
    "requests reach both replicas (nginx's \$upstream_addr so far: :$P1 $c1, :$P2 $c2)"
conns=$(ss -Htn state established "( dport = :$P1 or dport = :$P2 )" | wc -l)
check $([ "$conns" -ge 1 ] && [ "$conns" -le 4 ]; echo $?) \
    "keepalive: after 22 requests one after another, $conns connections from nginx to the replicas stay open"

# 4. N corrections through nginx, each stored exactly once
for _ in $(seq "$N"); do feedback /dev/null; done >"$TMP/feedback.txt"
acked=$(ok_count 201 "$TMP/feedback.txt")
stored=$(rows)
r1=$(grep -c '"POST /api/feedback HTTP/1.1" 201' "$TMP/replica1.log" || true)
r2=$(grep -c '"POST /api/feedback HTTP/1.1" 201' "$TMP/replica2.log" || true)
check $([ "$acked" = "$N" ] && [ "$stored" = "$N" ] && [ "$r1" -gt 0 ] && [ "$r2" -gt 0 ]; echo $?) \
    "$N corrections through nginx: $acked answered 201, $stored rows in PostgreSQL (replica logs: $r1 + $r2)"

# What a replica takes for the client's address: uvicorn believes X-Forwarded-For from 127.0.0.1 (its default
# FORWARDED_ALLOW_IPS), which is where nginx is here. Reported, not checked.
curl -sS -o /dev/null -H "X-Forwarded-For: 203.0.113.9" "$NGINX/api/model"
sleep 0.2
plain=$(grep -ho '[^ ]* - "POST /api/feedback' "$TMP"/replica?.log | head -n 1 | cut -d' ' -f1 || true)
forwarded=$(grep -ho '[^ ]* - "GET /api/model' "$TMP"/replica?.log | head -n 1 | cut -d' ' -f1 || true)
info "client address in the replicas' logs, for curl on loopback through nginx: ${plain:-?}; ${forwarded:-?} when curl sends X-Forwarded-For: 203.0.113.9 (nginx appends 127.0.0.1)"

# 5. 413: 5.1 MB is over the app's 5 MB limit and under nginx's 5m (5 MiB); 6 MB is over both
head -c 5100000 /dev/zero | tr '\0' 'a' >"$TMP/body_5.1MB"
head -c 6000000 /dev/zero | tr '\0' 'a' >"$TMP/body_6MB"
for attempt in 1 2 3; do
    curl_ "$TMP/413_5.1.out" -H "Content-Type: application/json" --data-binary "@$TMP/body_5.1MB" \
        "$NGINX/api/predict"
done >"$TMP/413_5.1.txt"
check $([ "$(grep -c '^413 application/json' "$TMP/413_5.1.txt")" = 3 ] && grep -q '"too_large"' "$TMP/413_5.1.out"; \
        echo $?) "5.1 MB body: the app's JSON 413 through nginx, 3 of 3 ($(sort "$TMP/413_5.1.txt" | uniq -c \
        | xargs); $(head -c 90 "$TMP/413_5.1.out"))"
before=$(wc -l <"$TMP/nginx/access.log")
read -r code type < <(curl_ "$TMP/413_6.out" -H "Content-Type: application/json" --data-binary "@$TMP/body_6MB" \
    "$NGINX/api/predict")
sleep 0.2
line=$(tail -n +"$((before + 1))" "$TMP/nginx/access.log" | head -n 1)
check $([ "$code" = 413 ] && [[ "$type" == text/html* ]] && grep -q "413 Request Entity Too Large" "$TMP/413_6.out" \
        && [[ "$line" == *"upstream=- "* ]]; echo $?) \
    "6 MB body: nginx's own HTML 413 ($code $type, \"$(grep -o '<title>[^<]*' "$TMP/413_6.out" | cut -c8-)\"), not passed to a replica ($line)"

# 6. one replica dies. First stopped (SIGSTOP), so requests that nginx sends it hang in flight; then killed.
log_mark() { wc -l <"$TMP/nginx/access.log"; }
log_since() { tail -n +"$(($1 + 1))" "$TMP/nginx/access.log"; }
statuses() { cut -d' ' -f1 "$@" | sort | uniq -c | xargs; }  # "4 200" or "2 201 2 502"
mark=$(log_mark)
kill -STOP "$R1_PID"
in_flight=()
for i in 1 2 3 4; do
    curl_ "$TMP/inflight_get$i.json" "$NGINX/api/health" >"$TMP/inflight_get$i.txt" &
    in_flight+=($!)
    feedback "$TMP/inflight_post$i.json" >"$TMP/inflight_post$i.txt" &
    in_flight+=($!)
done
sleep 2
kill -KILL "$R1_PID"
{ wait "$R1_PID"; } 2>/dev/null || true  # (keeps bash's "Killed" job notice out of the output)
R1_PID=""
wait "${in_flight[@]}" || true
sleep 0.2
cat "$TMP"/inflight_get?.txt >"$TMP/inflight_get.txt"
cat "$TMP"/inflight_post?.txt >"$TMP/inflight_post.txt"
posts_acked=$(ok_count 201 "$TMP/inflight_post.txt")
gets_retried=$(log_since "$mark" | grep -c "^GET .* upstream=127.0.0.1:$P1, 127.0.0.1:$P2 " || true)
check $([ "$(ok_count 200 "$TMP/inflight_get.txt")" = 4 ]; echo $?) \
    "replica 1 killed with 4 GET /api/health in flight: $(statuses "$TMP/inflight_get.txt") (sent to replica 1 and retried on replica 2: $gets_retried)"
posts_lost=$(log_since "$mark" | grep -c "^POST /api/feedback 502 upstream=127.0.0.1:$P1 " || true)
info "replica 1 killed with 4 POST /api/feedback in flight: $(statuses "$TMP/inflight_post.txt") (sent to replica 1: $posts_lost, which nginx answered with 502 and did not retry on replica 2)"

# Right after the kill (nginx has marked replica 1 failed: max_fails=1, fail_timeout=10s), and 11 s later, when
# nginx tries replica 1 again, is refused, and passes the request on: a refused POST was never sent, so it is
# passed on too. POSTs first in each batch, so that a POST is the one that meets the refusal.
for batch in "right after the kill" "11 s later"; do
    if [ "$batch" = "11 s later" ]; then
        sleep 11
        idle=$(ss -Htn state established "( dport = :$P2 )" | wc -l)
        info "after 11 s idle, $idle connections from nginx to replica 2 are still open (uvicorn closes idle keep-alive connections after 5 s; the sample sets nginx's upstream keepalive_timeout to 4 s, below that)"
    fi
    mark=$(log_mark)
    for _ in $(seq 10); do feedback /dev/null; done >"$TMP/after_post.txt"
    for _ in $(seq 10); do curl_ /dev/null "$NGINX/api/health"; done >"$TMP/after_get.txt"
    sleep 0.2
    g=$(ok_count 200 "$TMP/after_get.txt") p=$(ok_count 201 "$TMP/after_post.txt")
    posts_acked=$((posts_acked + p))
    passed_on=$(log_since "$mark" | grep "upstream=127.0.0.1:$P1, 127.0.0.1:$P2 " | cut -d' ' -f1-3 | sort | uniq -c | xargs || true)
    check $([ "$g" = 10 ] && [ "$p" = 10 ]; echo $?) \
        "one replica dead, $batch: POST /api/feedback $p/10 201, GET /api/health $g/10 200 (tried on replica 1 first, then passed on: ${passed_on:-none})"
done
info "nginx's error log: $(grep -c 'Connection refused' "$TMP/nginx/error.log" || true) 'connection refused'," \
    "$(grep -c 'Connection reset by peer\|prematurely closed' "$TMP/nginx/error.log" || true) reset/closed," \
    "$(grep -c 'no live upstreams' "$TMP/nginx/error.log" || true) 'no live upstreams'"
stored=$(rows)
check $([ "$stored" = "$((N + posts_acked))" ]; echo $?) \
    "every acknowledged correction stored once: $((N + posts_acked)) answered 201 in all, $stored rows"

if [ "$FAILS" = 0 ]; then echo "check_replicas: all checks passed"; else echo "check_replicas: $FAILS checks FAILED"; fi
[ "$FAILS" = 0 ]
