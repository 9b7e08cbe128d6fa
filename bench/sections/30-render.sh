# (c) render: /metrics with 10,000 series (5,000 counter and 5,000
# histogram series, created by playarr_metrics_push, bench/render.py) and
# with 100,000, nginx with 2 workers: time to the last byte, $request_time,
# the worker's cpu time and memory; (d) the latency of requests under a
# steady load with and without a 10,000-series scrape every second; (e)
# zone bytes per series.  The callgrind count of one scrape is
# render_cg_measure's (bench/sections/15-gates.sh).
#
# Leaves R10, R10ANY, R100, M100, LAT0, LAT1 (render.py's key=value
# lines), the zone's sizes and B_COUNTER, B_HIST for the table.

# selfm PORT: the module's self metrics, key=value lines
selfm() {
    "${RENDER[@]}" self --port "$1" --path /__bench/metrics \
        || die "render.py self failed"
}

# scrape PORT N LOG: prints render.py's line and the median and max of
# $request_time (ms) of the scrapes in LOG
scrape() {
    local port=$1 n=$2 log=$3 line

    : > "$log"
    line=$("${RENDER[@]}" scrape --port "$port" --path /__bench/metrics \
               -n "$n" --pid-path /__bench/pid) \
        || die "render.py scrape failed"
    # the access log is written when each request ends: all of them are
    # in it once the client has read the last response
    echo "$line $(sort -g "$log" | awk '{ v[NR] = $1 * 1000 } END {
            n = NR
            m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
            printf "rt_med_ms=%.0f rt_max_ms=%.0f", m, v[n]
        }')"
}

render_measure() {
    local dir

    # 10,000 series in a 10m zone: bytes per series, then the scrapes

    dir=$OUT/render/10k
    say "bench: render: $SERIES series, 10m zone"
    render_conf "$RPORT" "$dir" 10m
    start_free "$dir" "$RPORT"
    RPID=$NPID

    M0=$(selfm "$RPORT")
    fill "$RPORT" "$HALF" 0
    M1=$(selfm "$RPORT")
    fill "$RPORT" 0 "$HALF"
    M2=$(selfm "$RPORT")

    Z_SIZE=$(kv zone_size_bytes "$M0")
    Z_USED0=$(kv zone_used_bytes "$M0")
    Z_FREE0=$(kv zone_free_bytes "$M0")
    B_COUNTER=$(( ($(kv zone_used_bytes "$M1") - Z_USED0) / HALF ))
    B_HIST=$(( ($(kv zone_used_bytes "$M2") - $(kv zone_used_bytes "$M1")) \
               / HALF ))
    [ "$B_COUNTER" -gt 0 ] && [ "$B_HIST" -gt 0 ] \
        || die "render: no zone growth measured"

    say "bench: render: $SERIES series, $SCRAPES scrapes"
    R10=$(scrape "$RPORT" "$SCRAPES" "$dir/scrape.log")
    say "bench:   $R10"

    say "bench: latency: ${LAT_SECS} s without scrapes"
    LAT0=$("${RENDER[@]}" latency --port "$RPORT" --metrics /__bench/metrics \
               --seconds "$LAT_SECS" --rate 500 --conns 4 \
               --pid-path /__bench/pid --same-worker) \
        || die "render.py latency failed"
    say "bench: latency: ${LAT_SECS} s with a scrape every second"
    LAT1=$("${RENDER[@]}" latency --port "$RPORT" --metrics /__bench/metrics \
               --seconds "$LAT_SECS" --rate 500 --conns 4 \
               --pid-path /__bench/pid --scrape-every 1) \
        || die "render.py latency failed"

    # the histogram sums again, as doubles that need 16 or 17 digits
    say "bench: render: $SERIES series, sums of 16-17 digits"
    "${RENDER[@]}" reset --port "$RPORT" --path /__bench/push \
        --family bench_duration || die "render.py reset failed"
    fill "$RPORT" 0 "$HALF" --values any
    R10ANY=$(scrape "$RPORT" "$SCRAPES" "$dir/scrape.log")
    say "bench:   $R10ANY"

    stop "$RPID"

    # 100,000 series in a 256m zone

    # (each nginx on a port of its own: with reuseport, a listener that has
    # not quite gone yet must not share the next one's connections)

    dir=$OUT/render/100k
    say "bench: render: $BIG series, 256m zone"
    render_conf $((RPORT + 1)) "$dir" 256m
    start_free "$dir" $((RPORT + 1))
    RPID=$NPID
    fill $((RPORT + 1)) $((BIG / 2)) $((BIG / 2))
    # the self metrics after the scrapes: they are a scrape of it all too
    R100=$(scrape $((RPORT + 1)) 5 "$dir/scrape.log")
    M100=$(selfm $((RPORT + 1)))
    say "bench:   $R100"
    stop "$RPID"
}

render_verdicts() {
    v_r10=$(verdict_f "$(kv total_med_ms "$R10")" "$RENDER_10K_MS")
    v_r100=$(verdict_f "$(kv total_med_ms "$R100")" "$RENDER_100K_MS")
    check "$v_r10" "$v_r100"
}

render_print() {
    echo "(c) render: GET /metrics, nginx with 2 workers (cpus 0 and 1)," \
         "series created by push"
    echo "    last byte: client-side time to the last byte of the" \
         "response, the client reading"
    echo "      as fast as it can; the header goes out first and the body" \
         "is rendered about"
    echo "      256 KiB at a time as the socket takes it; the target" \
         "applies to its median"
    echo "    \$request_time: access log, until the last byte is written" \
         "to the socket"
    echo "      (includes sending the body to a Python client reading it)"
    echo "    worker cpu: the serving worker's time on a cpu per scrape" \
         "(schedstat),"
    echo "      render and send"
    echo
    printf '    %-22s %11s %8s %15s %15s %11s %s\n' series "body bytes" \
        lines "last byte ms" "\$request_time" "worker cpu" target
    printf '    %-22s %11s %8s %15s %15s %11s\n' "" "" "" "median / max" \
        "median / max" "ms/scrape"
    # rline LABEL LINE TARGET
    rline() {
        printf '    %-22s %11s %8s %15s %15s %11s %s\n' "$1" \
            "$(fmt "$(kv bytes "$2")")" "$(fmt "$(kv lines "$2")")" \
            "$(kv total_med_ms "$2") / $(kv total_max_ms "$2")" \
            "$(kv rt_med_ms "$2") / $(kv rt_max_ms "$2")" \
            "$(kv cpu_ms "$2")" "$3"
    }
    rline "$(fmt "$SERIES") ($SCRAPES scrapes)" "$R10" \
        "<= $RENDER_10K_MS ms: $v_r10"
    rline "  sums of 16-17 digits" "$R10ANY" "(the same, harder sums)"
    rline "$(fmt "$BIG") (5 scrapes)" "$R100" \
        "<= $RENDER_100K_MS ms: $v_r100"
    echo "    ($(fmt "$HALF") counter series, 3 labels; $(fmt "$HALF")" \
         "histogram series, 2 labels, 12 buckets;"
    echo "     sums of millisecond durations, then of doubles that need" \
         "16-17 digits)"
    echo
    rss0=$(kv rss_before_kb "$R100")
    hwm=$(kv hwm_first_kb "$R100")
    echo "    memory, $(fmt "$BIG") series: body $(fmt "$(kv bytes "$R100")")" \
         "bytes, rendered in ~256 KiB steps into"
    echo "      a few reused ~68 KiB buffers: only the unsent step is" \
         "held;"
    echo "      serving worker VmRSS $(fmt "$rss0") kB before, VmHWM" \
         "$(fmt "$hwm") kB after the first scrape"
    rss1=$(kv rss_after_kb "$R100")
    echo "      (+$(fmt $((hwm - rss0))) kB), VmRSS $(fmt "$rss1") kB after" \
         "all 5: the peak is $(fmt $((hwm - rss1))) kB above what stays"
    echo "      mapped (the zone's pages the worker read)"
    echo "    callgrind, one scrape of $(fmt "$SERIES") series:" \
         "$(fmt "$IR_RENDER") instructions in"
    echo "      $RENDER_FN() (inclusive, every step)," \
         "$(( IR_RENDER / SERIES )) per series;"
    echo "      the whole scrape request $(fmt "$IR_SCRAPE") (Ir(3 scrapes)" \
         "- Ir(1)) / 2"
    echo
    echo "(d) recording during scrapes: request latency, client-side, 4" \
         "keep-alive connections"
    echo "    x 500 req/s for $LAT_SECS s, without scrapes and with a" \
         "$(fmt "$SERIES")-series scrape every second;"
    echo "    \"other\": connections on the worker that does not serve the" \
         "scrape, \"same\": on"
    echo "    the worker that does (it renders a step at a time in its" \
         "event loop)"
    echo
    printf '    %-16s %-6s %7s %9s %9s %9s %9s\n' run conns requests \
        "p50 ms" "p99 ms" "p99.9 ms" "max ms"
    for run in 0 1; do
        if [ "$run" = 0 ]; then
            txt=$LAT0; label="no scrapes"
        else
            txt=$LAT1; label="scrape every 1 s"
        fi
        while read -r line; do
            g=$(kv group "$line")
            [ "$g" = scrapes ] && continue
            printf '    %-16s %-6s %7s %9s %9s %9s %9s\n' "$label" "$g" \
                "$(kv n "$line")" "$(kv p50_ms "$line")" \
                "$(kv p99_ms "$line")" "$(kv p999_ms "$line")" \
                "$(kv max_ms "$line")"
            label=
        done <<< "$txt"
    done
    sl=$(grep 'group=scrapes' <<< "$LAT1" || true)
    echo "    (scrapes during the run: $(kv n "$sl"), median" \
         "$(kv p50_ms "$sl") ms, max $(kv max_ms "$sl") ms each, client-side)"
    echo
    echo "(e) zone memory, playarr_metrics_zone_used_bytes before and after" \
         "$(fmt "$HALF") series of each kind"
    echo
    printf '    counter series, 3 labels (http_requests_total-like) %5d' \
        "$B_COUNTER"
    printf ' bytes   (target <= 256: %s)\n' "$(verdict "$B_COUNTER" 256)"
    printf '    histogram series, 2 labels, 12 buckets             %5d' \
        "$B_HIST"
    printf ' bytes   (target <= 512: %s)\n' "$(verdict "$B_HIST" 512)"
    echo "    10m zone (the recommended default): $(fmt "$Z_SIZE") bytes" \
         "usable, $(fmt "$Z_USED0") used at start,"
    echo "      $(fmt "$Z_FREE0") free: room for" \
         "$(fmt $((Z_FREE0 / B_COUNTER))) counter series, or" \
         "$(fmt $((Z_FREE0 / B_HIST))) histogram series, or"
    echo "      $(fmt $((Z_FREE0 / (B_COUNTER + B_HIST)))) of both" \
         "(a route and user: one requests_total and one duration series)"
    echo "    100,000 series (256m zone):" \
         "$(fmt "$(kv zone_used_bytes "$M100")")" \
         "bytes used"
    echo
}
