# (f) exposition side by side, when a peer is measured: the module and
# each peer, one worker on cpu 0 each, after the same HALF requests of
# HALF distinct users (one counter and one histogram series per user for
# the module and lua-prometheus, one user filter node for vts), checked
# counted; then SCRAPES scrapes on one connection.
#
# Leaves, for the table, XS[name]: the client's line (scrape times, size,
# shared memory), XM[name]: its check line, XB[name]: shared memory
# before the requests, XCPU[name]: the worker's cpu time per scrape (ms);
# XS_NAMES, the ones measured.

XS_ALL=(module vts lua_prometheus)
declare -A XS XM XB XCPU
XS_NAMES=()

expo_measure() {
    local c name port dir format worker ok line ns0 ns1

    measured vts || measured lua_prometheus || return 0

    for ((c = 0; c < ${#XS_ALL[@]}; c++)); do
        name=${XS_ALL[c]}
        if is_peer "$name" && ! measured "$name"; then
            continue
        fi
        port=$((RPORT + 3 + c))
        dir=$OUT/exposition/$name
        if [ "$name" = module ]; then
            format=playarr
        else
            format=${PEER_LABEL[$name]}
        fi

        say "bench: exposition: $name, $HALF requests of as many users," \
            "$SCRAPES scrapes"
        conf "$name" "$port" "$dir" on "$ROUTES82"
        nginx_env "$name"
        start "$dir" "$port"
        NENV=()
        worker=$(worker_of "$NPID")
        [ -n "$worker" ] || die "$name: no worker process"

        # shared memory before, then the users, counted, then the scrapes
        ok=1
        line=$(taskset -c "$CPU1" "${CLIENT[@]}" --port "$port" -n 0 \
                   --scrape /__bench/metrics --scrapes 1 \
                   2> "$dir/client.log") || ok=0
        XB[$name]=$(kv shm_used "$line")
        if [ "$ok" = 1 ]; then
            XM[$name]=$(taskset -c "$CPU1" "${CLIENT[@]}" --port "$port" \
                            -n 0 --warm "$HALF" --conns 4 \
                            --check-metrics /__bench/metrics \
                            --format "$format" 2>> "$dir/client.log") || ok=0
        fi
        if [ "$ok" = 1 ]; then
            ns0=$(run_ns "$worker")
            XS[$name]=$(taskset -c "$CPU1" "${CLIENT[@]}" --port "$port" \
                            -n 0 --scrape /__bench/metrics \
                            --scrapes "$SCRAPES" 2>> "$dir/client.log") \
                || ok=0
            ns1=$(run_ns "$worker")
            XCPU[$name]=$(awk -v d=$((ns1 - ns0)) -v n="$SCRAPES" \
                              'BEGIN { printf "%.2f", d / n / 1e6 }')
        fi
        stop "$NPID"

        if [ "$ok" = 0 ]; then
            cat "$dir/client.log" >&2
            [ "$name" = module ] && die "exposition: module: see above"
            PEER[$name]="not measured (it does not count the requests sent:"
            PEER[$name]+=" $dir/client.log)"
            say "bench:   $name: ${PEER[$name]}"
            continue
        fi
        XS_NAMES+=("$name")
        say "bench:   ${XM[$name]}"
        say "bench:   ${XS[$name]} worker_cpu_ms=${XCPU[$name]}"
    done
}

expo_print() {
    if [ ${#XS_NAMES[@]} -eq 0 ]; then
        echo "(f) exposition side by side: no peer measured (see" \
             "BENCH_VTS_SRC and"
        echo "    BENCH_LUA_PROMETHEUS_SRC in bench/run)"
        echo
        return
    fi
    expo_table
}

expo_table() {
    local name line sh

    cat <<EOF
(f) exposition side by side: the module and the peers after the same
    $(fmt "$HALF") requests of as many users, then $SCRAPES scrapes on one
    keep-alive connection; nginx: 1 worker on cpu 0, the client on cpu $CPU1
    series: the module and lua-prometheus, a counter and a histogram series
      per user; vts, a users:: filter node per user (request counters by
      status class, bytes, times, cache counters and the 13-bucket histogram)
    first byte: vts and lua-prometheus render the whole body before
      sending it (lua-prometheus yields to the event loop every 200 keys
      meanwhile); the module sends its header, then streams the body
    shm: the growth of the shared memory each one reports, per user
      (the module's and vts's zone; lua-prometheus' dict, in whole pages)

EOF
    printf '    %-15s %12s %8s %11s %17s %17s %10s %9s\n' exporter series \
        lines "body bytes" "first byte ms" "last byte ms" "worker cpu" \
        "shm bytes"
    printf '    %-15s %12s %8s %11s %17s %17s %10s %9s\n' "" "" "" "" \
        "median / max" "median / max" "ms/scrape" "per user"
    for name in "${XS_ALL[@]}"; do
        if [ -z "${XS[$name]:-}" ]; then
            printf '    %-15s %s\n' "${PEER_LABEL[$name]}" "${PEER[$name]}"
            continue
        fi
        line=${XS[$name]}
        if [ "$name" = vts ]; then
            series="$(fmt "$(kv user_nodes "${XM[$name]}")") nodes"
        else
            series="$(fmt "$(kv counter_series "${XM[$name]}")")"
            series+="+$(fmt "$(kv histogram_series "${XM[$name]}")")"
        fi
        sh=-
        if [ "$(kv shm_used "$line")" != - ] && [ "${XB[$name]:--}" != - ]
        then
            sh=$(( ($(kv shm_used "$line") - XB[$name]) / HALF ))
        fi
        printf '    %-15s %12s %8s %11s %17s %17s %10s %9s\n' \
            "${PEER_LABEL[$name]:-$name}" "$series" \
            "$(fmt "$(kv lines "$line")")" "$(fmt "$(kv bytes "$line")")" \
            "$(kv ttfb_med_ms "$line") / $(kv ttfb_max_ms "$line")" \
            "$(kv total_med_ms "$line") / $(kv total_max_ms "$line")" \
            "${XCPU[$name]}" "$(fmt "$sh")"
    done
    echo
}
