#!/usr/bin/env bash
# `make run`: Debian's nginx with the module, in the foreground, in front of
# a demo Playarr served by the same nginx, all on loopback.  Ctrl-C stops it.
#
# Environment: PORT (8080), UPSTREAM_PORT (PORT + 1), NGINX_BIN
# (/usr/sbin/nginx), BUILD (<repo>/build: the module is read from there and
# the runtime files go to BUILD/run), DEMO_TEMPLATE (the config template,
# docs/examples/demo-nginx.conf.in).

set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-$TOP/build}
PORT=${PORT:-8080}
UPSTREAM_PORT=${UPSTREAM_PORT:-}
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
TEMPLATE=${DEMO_TEMPLATE:-$TOP/docs/examples/demo-nginx.conf.in}

mkdir -p "$BUILD"
BUILD=$(cd "$BUILD" && pwd)
RUN=$BUILD/run
SO=$BUILD/ngx_http_playarr_metrics_module.so
CONF=$RUN/nginx.conf
TOKEN=$RUN/metrics.token
ROUTES=$TOP/docs/playarr-routes.conf

die() {
    echo "make run: $*" >&2
    exit 1
}

valid_port() {
    [[ $1 =~ ^[0-9]+$ ]] && (( $1 >= 1 && $1 <= 65535 ))
}

valid_port "$PORT" || die "PORT=$PORT is not a port number"
[ -n "$UPSTREAM_PORT" ] || UPSTREAM_PORT=$((PORT + 1))
valid_port "$UPSTREAM_PORT" \
    || die "UPSTREAM_PORT=$UPSTREAM_PORT is not a port number"
[ "$PORT" != "$UPSTREAM_PORT" ] \
    || die "PORT and UPSTREAM_PORT are both $PORT; they must differ"

[ -x "$NGINX_BIN" ] || die "$NGINX_BIN not found (make deps installs nginx)"
[ -f "$SO" ] || die "$SO not found: run make build first"
[ -f "$TEMPLATE" ] || die "$TEMPLATE not found"
[ -f "$ROUTES" ] || die "$ROUTES not found"


# Who listens on 127.0.0.1:PORT (any address that would stop our bind)?
# Prints a description and succeeds when the port is taken.
port_taken() {
    local port=$1 line

    if command -v ss > /dev/null 2>&1; then
        line=$(ss -Hltnp "sport = :$port" 2>/dev/null | head -n 1)
        if [ -n "$line" ]; then
            if [[ $line =~ users:\(\(\"([^\"]+)\",pid=([0-9]+) ]]; then
                echo "by ${BASH_REMATCH[1]} (pid ${BASH_REMATCH[2]})"
            else
                echo "by another process"
            fi
            return 0
        fi
        return 1
    fi

    if (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then
        echo "by another process"
        return 0
    fi
    return 1
}

for p in "$PORT" "$UPSTREAM_PORT"; do
    if who=$(port_taken "$p"); then
        what="PORT"
        [ "$p" = "$PORT" ] || what="UPSTREAM_PORT"
        die "port $p ($what) is already in use $who.
Stop it, or choose other ports: make run PORT=9080 (the demo upstream
then listens on PORT + 1; UPSTREAM_PORT=... sets it)."
    fi
done


# The config, from the template.

mkdir -p "$RUN"
conf=$(< "$TEMPLATE")
conf=${conf//@SO@/"$SO"}
conf=${conf//@RUN@/"$RUN"}
conf=${conf//@TOP@/"$TOP"}
conf=${conf//@PORT@/"$PORT"}
conf=${conf//@UPSTREAM_PORT@/"$UPSTREAM_PORT"}
printf '%s\n' "$conf" > "$CONF"

nginx_args=(-p "$RUN/" -c "$CONF" -e "$RUN/error.log")

if ! "$NGINX_BIN" -t -q "${nginx_args[@]}"; then
    die "nginx -t failed for $CONF (messages above, and in $RUN/error.log)"
fi


# nginx in the foreground (daemon off; in the config): it is our child, in
# our process group, so Ctrl-C reaches it as well as us.

"$NGINX_BIN" "${nginx_args[@]}" &
nginx_pid=$!

stop() {
    trap - INT TERM
    echo
    echo "stopping nginx (pid $nginx_pid)..."
    kill -QUIT "$nginx_pid" 2> /dev/null || true
    wait "$nginx_pid" 2> /dev/null || true
    echo "nginx stopped."
    exit 0
}

trap stop INT TERM

ready=
for _ in $(seq 100); do
    if ! kill -0 "$nginx_pid" 2> /dev/null; then
        break
    fi
    if [ -s "$TOKEN" ] \
       && curl -fsS -o /dev/null --max-time 1 \
               "http://127.0.0.1:$UPSTREAM_PORT/api/healthcheck" 2> /dev/null
    then
        ready=1
        break
    fi
    sleep 0.1
done

if [ -z "$ready" ]; then
    kill -TERM "$nginx_pid" 2> /dev/null || true
    wait "$nginx_pid" 2> /dev/null || true
    echo "make run: nginx did not come up; the end of $RUN/error.log:" >&2
    tail -n 20 "$RUN/error.log" >&2 || true
    exit 1
fi

front=http://127.0.0.1:$PORT

cat <<EOF

Playarr metrics demo: $("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //') \
(pid $nginx_pid, master + 2 workers)
  front, recorded:       $front
  demo Playarr upstream: http://127.0.0.1:$UPSTREAM_PORT (not recorded)
  config:                $CONF
  logs:                  $RUN/error.log $RUN/access.log

Token file: $TOKEN

Scrape it:
  curl -H "Authorization: Bearer \$(cat $TOKEN)" $front/metrics
  curl -H "Authorization: Bearer \$(cat $TOKEN)" $front/metrics/json

Make some traffic:
  curl $front/api/healthcheck
  curl $front/api/titles/movies-603
  for i in \$(seq 50); do curl -s -o /dev/null $front/api/stats; done
  curl $front/api/auth/verify
  curl -H "Authorization: Bearer demo" $front/api/auth/verify
  curl $front/stremio/MY-API-KEY/manifest.json
  curl $front/api/stream/movies/movies-603
  curl $front/no/such/route

Push a business metric, as Playarr would:
  curl -X POST -H "Authorization: Bearer \$(cat $TOKEN)" \\
       -H 'Content-Type: application/json' \\
       -d '{"metric":"active_users","op":"set","value":3}' $front/metrics/push

Prometheus (prometheus.yml):
  scrape_configs:
    - job_name: playarr
      metrics_path: /metrics
      authorization:
        type: Bearer
        credentials_file: $TOKEN
      static_configs:
        - targets: ['127.0.0.1:$PORT']
  (the token file is mode 0600: Prometheus needs a copy it can read)

Ctrl-C stops nginx.
EOF

status=0
wait "$nginx_pid" || status=$?
trap - INT TERM
if [ "$status" = 0 ]; then
    echo "nginx stopped."
    exit 0
fi
echo "make run: nginx exited with status $status; see $RUN/error.log" >&2
exit "$status"
