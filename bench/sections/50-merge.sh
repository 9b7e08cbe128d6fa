# (h) a scrape with Playarr's own metrics merged: Playarr's exposition
# (t/js/app-metrics.js: prom-client with every family of
# docs/playarr/metrics.json) merged into nginx's at each scrape
# (playarr_metrics_merge), against the same scrape without the merge:
# nginx with 1 worker, MERGE_SCRAPES scrapes one at a time.
#
# Leaves MERGED, PLAIN (render.py's lines) and MERGE_UP for the table.

MPORT=$((PORT0 + 26))
APORT=$((PORT0 + 27))
MERGE_SCRAPES=${BENCH_MERGE_SCRAPES:-50}

merge_conf() {
    local port=$1 dir=$2

    mkdir -p "$dir/tmp"
    cat > "$dir/nginx.conf" <<CONF
load_module $SO;

daemon off;
master_process on;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;

events {
    worker_connections 1024;
}

http {
    $(temp_paths "$dir")
    access_log off;

    # the N requests on one connection: more than the default 1000
    keepalive_requests 1000000;

    playarr_metrics_zone playarr:16m;
    include $ROUTES82;

    server {
        listen 127.0.0.1:$port;

        location = /__bench/merged {
            playarr_metrics_export;
            playarr_metrics_auth off;
            playarr_metrics_merge /_app;
        }

        location = /__bench/metrics {
            playarr_metrics_export;
            playarr_metrics_auth off;
        }

        location = /_app {
            internal;
            proxy_pass http://127.0.0.1:$APORT/metrics;
            proxy_pass_request_headers off;
            proxy_set_header Authorization "Bearer bench-app-token";
            proxy_set_header Accept "text/plain;version=0.0.4";
            proxy_read_timeout 5s;
        }

        location / {
            return 200;
        }
    }
}
CONF
}

merge_measure() {
    local dir i app mnpid

    dir=$OUT/merge
    mkdir -p "$dir"
    say "bench: merge: Playarr's families by prom-client, merged"
    port_free "$APORT" || die "127.0.0.1:$APORT is in use (set BENCH_PORT)"
    : > "$dir/app.log"
    node "$TOP/t/js/app-metrics.js" "$APORT" bench-app-token \
        "$TOP/docs/playarr/metrics.json" > "$dir/app.log" 2>&1 &
    app=$!
    PIDS+=("$app")
    for ((i = 0; i < 100; i++)); do
        grep -q listening "$dir/app.log" && break
        sleep 0.1
    done
    grep -q listening "$dir/app.log" \
        || die "the app did not start: $dir/app.log"

    merge_conf "$MPORT" "$dir"
    start_free "$dir" "$MPORT"
    mnpid=$NPID

    "${CLIENT[@]}" --port "$MPORT" -n "$N" --conns "$CONNS" \
        > "$dir/client.log" 2>&1 || die "merge: see $dir/client.log"

    MERGED=$("${RENDER[@]}" scrape --port "$MPORT" --path /__bench/merged \
                 -n "$MERGE_SCRAPES") || die "render.py scrape failed"
    PLAIN=$("${RENDER[@]}" scrape --port "$MPORT" --path /__bench/metrics \
                -n "$MERGE_SCRAPES") || die "render.py scrape failed"
    MERGE_UP=$(python3 - "$MPORT" <<'PY'
import sys, urllib.request
body = urllib.request.urlopen(
    "http://127.0.0.1:%s/__bench/merged" % sys.argv[1]).read().decode()
up = [l for l in body.splitlines()
      if l.startswith("playarr_metrics_merge_up")]
fams = len([l for l in body.splitlines() if l.startswith("# TYPE ")])
print("merge_up=%s families=%d" % (up[0].split()[-1] if up else "-", fams))
PY
)
    stop "$mnpid"
    kill "$app" 2>/dev/null || true
    wait "$app" 2>/dev/null || true
    forget "$app"
}

merge_print() {
    echo "(h) a scrape with Playarr's own metrics merged"
    echo "    (playarr_metrics_merge):"
    echo "    t/js/app-metrics.js (prom-client, every family of"
    echo "    docs/playarr/metrics.json) as the app, nginx with 1 worker"
    echo "    after $N requests of the mix; $MERGE_SCRAPES scrapes each, one at"
    echo "    a time"
    echo
    printf '    %-22s %9s %7s %12s %12s\n' scrape bytes lines \
        "last byte ms" "max ms"
    printf '    %-22s %9s %7s %12s %12s\n' "nginx's families" \
        "$(kv bytes "$PLAIN")" "$(kv lines "$PLAIN")" \
        "$(kv total_med_ms "$PLAIN")" "$(kv total_max_ms "$PLAIN")"
    printf '    %-22s %9s %7s %12s %12s\n' "merged" \
        "$(kv bytes "$MERGED")" "$(kv lines "$MERGED")" \
        "$(kv total_med_ms "$MERGED")" "$(kv total_max_ms "$MERGED")"
    echo "    ($MERGE_UP: the # TYPE lines of the merged scrape)"
    echo
}

