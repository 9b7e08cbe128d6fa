# (g) state file saves: SAVE_SERIES series (half counters, half
# histograms) in one worker's zone, playarr_metrics_state_file at
# interval=1h (no save during the run), then reloaded to interval=1s: the
# same zone, a save every second by the worker; both times paced requests
# to that worker, their latency client-side, and the saves counted
# (renames of the file seen); SAVE_ROUNDS rounds of the two.
#
# Leaves SAVE_OFF[round], SAVE_ON[round], SAVE_BYTES, SAVE_ADDED, v_save.

SAVE_SERIES=300000
SAVE_MS=10
SPORT=$((PORT0 + 22))
SAVE_OFF=()
SAVE_ON=()

# save_conf PORT DIR INTERVAL: render_conf with one worker (no cpu
# affinity: the save's thread may run on the other cpu, as on a server
# with no worker_cpu_affinity) and a state file
save_conf() {
    local port=$1 dir=$2 every=$3 max state

    max="\1playarr_metrics_max_series $((SAVE_SERIES / 2));"
    state="\1playarr_metrics_state_file $dir/state/metrics.state"
    state+=" interval=$every;"

    render_conf "$port" "$dir" 512m
    mkdir -p "$dir/state"
    # the worker user writes the file when the bench runs as root
    chmod 0777 "$dir/state"
    sed -i -e 's/^worker_processes 2;/worker_processes 1;/' \
        -e '/^worker_cpu_affinity/d' \
        -e "s|^\( *\)playarr_metrics_max_series .*|$max\n$state|" \
        "$dir/nginx.conf"
}

# worker_pid PORT
worker_pid() {
    curl -s "http://127.0.0.1:$1/__bench/pid" || true
}

# save_run PORT DIR NAME: the latency run and the saves seen meanwhile
save_run() {
    local port=$1 dir=$2 name=$3 lat saves

    # the load starts a second after render.py latency does
    { sleep 1; "${RENDER[@]}" watch "$dir/state/metrics.state" \
        --seconds "$SAVE_SECS" > "$dir/watch-$name.txt"; } &
    lat=$("${RENDER[@]}" latency --port "$port" --metrics /__bench/metrics \
              --seconds "$SAVE_SECS" --rate "$SAVE_RATE" --conns 4 \
              --pid-path /__bench/pid) \
        || die "render.py latency failed"
    wait $! || die "render.py watch failed"
    saves=$(kv saves "$(cat "$dir/watch-$name.txt")")
    echo "$(grep 'group=all' <<< "$lat") saves=$saves"
}

# save_switch PORT DIR INTERVAL: reloaded to INTERVAL (the zone kept),
# once the new worker answers
save_switch() {
    local port=$1 dir=$2 w0 w1 i

    w0=$(worker_pid "$port")
    save_conf "$port" "$dir" "$3"
    kill -HUP "$SPID"
    for ((i = 0; i < 300; i++)); do
        w1=$(worker_pid "$port")
        [ -n "$w1" ] && [ "$w1" != "$w0" ] && break
        sleep 0.1
    done
    [ "$w1" != "$w0" ] || die "save: no new worker after the reload"
    # with saves, the first is due a second after the worker started
    sleep 1.5
}
save_measure() {
    local dir r

    dir=$OUT/save
    say "bench: save: $SAVE_SERIES series, one worker"
    save_conf "$SPORT" "$dir" 1h
    start_free "$dir" "$SPORT"
    SPID=$NPID
    fill "$SPORT" $((SAVE_SERIES / 2)) $((SAVE_SERIES / 2))

    for ((r = 1; r <= SAVE_ROUNDS; r++)); do
        [ "$r" = 1 ] || save_switch "$SPORT" "$dir" 1h
        say "bench: save: round $r, ${SAVE_SECS} s of" \
            "$((4 * SAVE_RATE)) req/s, no save"
        SAVE_OFF+=("$(save_run "$SPORT" "$dir" "off-$r")")
        say "bench:   ${SAVE_OFF[-1]}"

        save_switch "$SPORT" "$dir" 1s
        say "bench: save: round $r, ${SAVE_SECS} s of" \
            "$((4 * SAVE_RATE)) req/s, a save every second"
        SAVE_ON+=("$(save_run "$SPORT" "$dir" "on-$r")")
        say "bench:   ${SAVE_ON[-1]}"
    done

    SAVE_BYTES=$(stat -c %s "$dir/state/metrics.state")
    stop "$SPID"
}

save_verdicts() {
    local added='' r

    # what the saves add to the slowest request, round by round (on a
    # shared machine the runs without saves have stalls of their own: the
    # client's, other load), the median of the rounds kept
    for ((r = 0; r < SAVE_ROUNDS; r++)); do
        added+=" $(awk -v a="$(kv max_ms "${SAVE_ON[r]}")" \
                       -v b="$(kv max_ms "${SAVE_OFF[r]}")" \
                       'BEGIN { printf "%.1f", a - b }')"
    done
    read -r SAVE_ADDED _ _ <<< "$(stats "$added" 1)"
    v_save=$(verdict_f "$SAVE_ADDED" "$SAVE_MS" MISSED)
    check "$v_save"
}

save_print() {
    local r txt label

    echo "(g) state file saves: $(fmt "$SAVE_SERIES") series" \
         "($(fmt $((SAVE_SERIES / 2))) counter, $(fmt $((SAVE_SERIES / 2)))" \
         "histogram), nginx with"
    echo "    1 worker, no cpu affinity; 4 keep-alive connections x" \
         "$SAVE_RATE req/s for $SAVE_SECS s,"
    echo "    latency client-side; interval=1h (no save during the run)," \
         "then reloaded to"
    echo "    interval=1s (the same zone), $SAVE_ROUNDS rounds; saves:" \
         "renames of the file seen"
    echo "    during the run; state file $(fmt "${SAVE_BYTES:-0}") bytes"
    echo
    printf '    %-5s %-18s %8s %6s %9s %9s %9s %9s\n' round run requests \
        saves "p50 ms" "p99 ms" "p99.9 ms" "max ms"
    for ((r = 0; r < SAVE_ROUNDS; r++)); do
        for txt in "${SAVE_OFF[r]}" "${SAVE_ON[r]}"; do
            if [ "$txt" = "${SAVE_OFF[r]}" ]; then
                label="no save"
            else
                label="a save every 1 s"
            fi
            printf '    %-5s %-18s %8s %6s %9s %9s %9s %9s\n' \
                "$((r + 1))" "$label" \
                "$(kv n "$txt")" "$(kv saves "$txt")" "$(kv p50_ms "$txt")" \
                "$(kv p99_ms "$txt")" "$(kv p999_ms "$txt")" \
                "$(kv max_ms "$txt")"
        done
    done
    echo "    target: the saves add at most $SAVE_MS ms to the slowest" \
         "request (max with saves"
    echo "    - max without, median of the rounds): $SAVE_ADDED ms, $v_save"
    echo
}
