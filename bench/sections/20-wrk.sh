# (b) throughput with wrk (bench/mix.lua rotates through the Playarr mix):
# nginx with one worker pinned to CPU 0, wrk on CPU 1, interleaved rounds
# of bare, the module, access_log and the peers; then each side by side
# with bare (their workers sharing CPU 0, the ratio of their worker cpu
# per request); then bare and the module proxying the mix to an nginx
# that answers 200.  Never fatal.
#
# Leaves WRK_NAMES, RPS, NS, RATIO, PAIR, PAIR_ADD, PPAIR, PPAIR_NS, the
# cpu counters around the runs and b_med for the table.

# every configuration has its port, measured or not
WRK_ALL=(bare module access_log vts lua_prometheus)
WRK_NAMES=()
declare -A WRK_PORT WRK_PID WORKER RPS NS round RATIO PAIR PAIR_ADD PPAIR_NS
PPAIR=

# after those of (c) and (f): the proxied pair and their upstream
WRK_PORT[bare_proxy]=$((PORT0 + 22))
WRK_PORT[module_proxy]=$((PORT0 + 23))
PROXY_UP=$((PORT0 + 24))
for ((c = 0; c < ${#WRK_ALL[@]}; c++)); do
    WRK_PORT[${WRK_ALL[c]}]=$((PORT0 + 11 + c))
done

# wrk_start: each configuration's nginx, one worker
wrk_start() {
    local name dir

    for name in "${WRK_ALL[@]}"; do
        if is_peer "$name" && ! measured "$name"; then
            continue
        fi
        WRK_NAMES+=("$name")

        dir=$OUT/wrk/$name
        conf "$name" "${WRK_PORT[$name]}" "$dir" on "$ROUTES82"
        nginx_env "$name"
        start "$dir" "${WRK_PORT[$name]}"
        NENV=()
        WRK_PID[$name]=$NPID
        WORKER[$name]=$(worker_of "$NPID")
        [ -n "${WORKER[$name]}" ] || die "$name: no worker process"
    done
}

# wrk_run NAME SECONDS LOG: wrk with the mix against NAME, on cpu 1
wrk_run() {
    taskset -c "$CPU1" wrk -t1 -c"$WRK_CONNS" -d"$2s" -s "$HERE/mix.lua" \
        "http://127.0.0.1:${WRK_PORT[$1]}/" -- "$OUT/mix.txt" > "$3" 2>&1
}

# wrk_once NAME SECONDS: prints "req/s worker-cpu-ns/request"; wrk's
# errors against a peer are its status 3, not fatal.  A round whose only
# errors are timeouts (wrk's 2 s: a worker kept off its cpu that long by
# other work on the machine) is run again, once.
wrk_once() {
    local name=$1 secs=$2 log rps reqs ns0 ns1 worker try

    log=$OUT/wrk/$name/wrk.log
    worker=${WORKER[$name]}

    for try in 1 2; do
        ns0=$(run_ns "$worker")
        wrk_run "$name" "$secs" "$log.last" \
            || { cat "$log.last" >&2; die "wrk failed against $name"; }
        cat "$log.last" >> "$log"

        grep -q -E 'Non-2xx|Socket errors' "$log.last" || break

        cat "$log.last" >&2
        if [ "$try" = 1 ] && ! grep -q 'Non-2xx' "$log.last" \
           && grep -q 'Socket errors: connect 0, read 0, write 0,' \
                   "$log.last"
        then
            say "bench: wrk: timeouts against $name, once more"
            continue
        fi
        is_peer "$name" && return 3
        die "wrk: errors against $name"
    done

    ns1=$(run_ns "$worker")
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$log.last")
    reqs=$(awk '/ requests in / { print $1 }' "$log.last")
    if [ -z "$rps" ] || [ "${reqs:-0}" -le 0 ]; then
        cat "$log.last" >&2
        die "wrk: no Requests/sec"
    fi

    # the access log must not fill the disk
    : > "$OUT/wrk/$name/access.log" 2>/dev/null || true

    echo "$rps $(( (ns1 - ns0) / reqs ))"
}

# cpu_stat: "busy steal total" jiffies since boot, all CPUs
cpu_stat() {
    awk '$1 == "cpu" {
             t = 0; for (i = 2; i <= NF; i++) t += $i
             print t - $5 - $6, $9, t }' /proc/stat
}

# wrk_dropped NAME: wrk had errors against the peer NAME: no longer
# measured
wrk_dropped() {
    local name=$1 n keep=()

    PEER[$name]="not measured (wrk: errors against it, see"
    PEER[$name]+=" $OUT/wrk/$name/wrk.log)"
    say "bench: $name: ${PEER[$name]}"
    stop "${WRK_PID[$name]}"
    for n in "${WRK_NAMES[@]}"; do
        [ "$n" = "$name" ] || keep+=("$n")
    done
    WRK_NAMES=("${keep[@]}")
    unset 'RPS[$name]' 'NS[$name]' 'RATIO[$name]' 'PAIR[$name]' \
          'PAIR_ADD[$name]'
}

# wrk_in NAME: whether NAME is still measured
wrk_in() {
    [[ " ${WRK_NAMES[*]} " == *" $1 "* ]]
}

# wrk_rounds: ROUNDS interleaved rounds, each starting with another
# configuration
wrk_rounds() {
    local r i name rc line rps ns
    local -a order

    say "bench: wrk warm-up"
    for name in "${WRK_NAMES[@]}"; do
        rc=0
        wrk_once "$name" 1 > /dev/null || rc=$?
        [ "$rc" = 3 ] && { wrk_dropped "$name"; continue; }
        [ "$rc" = 0 ] || exit 2
    done

    for ((r = 0; r < ROUNDS; r++)); do
        order=()
        for ((i = 0; i < ${#WRK_NAMES[@]}; i++)); do
            order+=("${WRK_NAMES[(r + i) % ${#WRK_NAMES[@]}]}")
        done
        for name in "${order[@]}"; do
            wrk_in "$name" || continue
            rc=0
            line=$(wrk_once "$name" "$SECS") || rc=$?
            [ "$rc" = 3 ] && { wrk_dropped "$name"; continue; }
            [ "$rc" = 0 ] || exit 2
            read -r rps ns <<< "$line"
            RPS[$name]="${RPS[$name]:-} $rps"
            NS[$name]="${NS[$name]:-} $ns"
            round[$name]=$rps
            say "bench: wrk round $((r + 1))/$ROUNDS: $name $rps req/s," \
                "worker cpu $ns ns/request"
        done
        # each configuration and bare measured a few seconds apart: their
        # ratio is less exposed to the machine's slow swings than the
        # medians
        for name in "${WRK_NAMES[@]}"; do
            [ "$name" = bare ] && continue
            RATIO[$name]="${RATIO[$name]:-} $(awk -v a="${round[$name]}" \
                -v b="${round[bare]}" 'BEGIN { printf "%.4f", a / b }')"
        done
    done
}

# wrk_pair NAME SECONDS ROUND [BASE]: wrk against BASE (default bare) and
# NAME at the same time, their two workers sharing cpu 0 and the two wrk
# cpu 1: what slows the machine slows both alike.  The wrk started second
# gets a slightly better share of cpu 1, so which one starts first changes
# with ROUND.  Prints "ratio base-ns NAME-ns": BASE's worker cpu per
# request over NAME's, and each one's; errors against a peer are status 3
wrk_pair() {
    local name=$1 secs=$2 base=${4:-bare} n p rc
    local -a w order
    local -A ns0 ns1 reqs

    order=("$base" "$name")
    [ $(($3 % 2)) = 1 ] && order=("$name" "$base")

    for n in "${order[@]}"; do
        ns0[$n]=$(run_ns "${WORKER[$n]}")
    done
    w=()
    for n in "${order[@]}"; do
        wrk_run "$n" "$secs" "$OUT/wrk/$n/pair.log.last" &
        w+=($!)
    done
    rc=0
    for p in "${w[@]}"; do
        wait "$p" || rc=1
    done
    for n in "${order[@]}"; do
        ns1[$n]=$(run_ns "${WORKER[$n]}")
        cat "$OUT/wrk/$n/pair.log.last" >> "$OUT/wrk/$n/pair.log"
        : > "$OUT/wrk/$n/access.log" 2>/dev/null || true
    done
    [ "$rc" = 0 ] || die "wrk failed against $base and $name at once"

    for n in "${order[@]}"; do
        if grep -q -E 'Non-2xx|Socket errors' "$OUT/wrk/$n/pair.log.last"
        then
            cat "$OUT/wrk/$n/pair.log.last" >&2
            [ "$n" != "$base" ] && is_peer "$n" && return 3
            die "wrk: errors against $n (side by side with $name)"
        fi
        reqs[$n]=$(awk '/ requests in / { print $1 }' \
                       "$OUT/wrk/$n/pair.log.last")
        [ "${reqs[$n]:-0}" -gt 0 ] || die "wrk: no requests against $n"
    done

    awk -v b=$((ns1[$base] - ns0[$base])) -v rb="${reqs[$base]}" \
        -v x=$((ns1[$name] - ns0[$name])) -v rx="${reqs[$name]}" 'BEGIN {
        printf "%.4f %d %d\n", (b / rb) / (x / rx), b / rb, x / rx
    }'
}


# wrk_pairs: PAIR_ROUNDS rounds of each configuration side by side with
# bare
wrk_pairs() {
    local r name rc line ratio b_ns x_ns

    for ((r = 0; r < PAIR_ROUNDS; r++)); do
        for name in "${WRK_NAMES[@]}"; do
            [ "$name" = bare ] && continue
            wrk_in "$name" || continue
            rc=0
            line=$(wrk_pair "$name" "$SECS" "$r") || rc=$?
            [ "$rc" = 3 ] && { wrk_dropped "$name"; continue; }
            [ "$rc" = 0 ] || exit 2
            read -r ratio b_ns x_ns <<< "$line"
            PAIR[$name]="${PAIR[$name]:-} $ratio"
            PAIR_ADD[$name]="${PAIR_ADD[$name]:-} $((x_ns - b_ns))"
            say "bench: side by side $((r + 1))/$PAIR_ROUNDS: bare $b_ns," \
                "$name $x_ns ns/request of worker cpu ($ratio)"
        done
    done
}

# wrk_proxied: as Playarr runs behind it, bare and the module each pass
# the mix to one upstream nginx answering 200 (keep-alive connections to
# it; its worker on cpu 1, with wrk), side by side as above.  PPAIR: the
# capacity of each round, PPAIR_NS: bare's and the module's worker cpu
# per request
wrk_proxied() {
    local dir name r line ratio b_ns x_ns up

    dir=$OUT/wrk/upstream
    conf bare "$PROXY_UP" "$dir" on
    START_CPU=$CPU1 start "$dir" "$PROXY_UP"
    up=$NPID

    for name in bare_proxy module_proxy; do
        dir=$OUT/wrk/$name
        conf "$name" "${WRK_PORT[$name]}" "$dir" on "$ROUTES82"
        start "$dir" "${WRK_PORT[$name]}"
        WRK_PID[$name]=$NPID
        WORKER[$name]=$(worker_of "$NPID")
        [ -n "${WORKER[$name]}" ] || die "$name: no worker process"
        wrk_once "$name" 1 > /dev/null || die "wrk failed against $name"
    done

    for ((r = 0; r < PAIR_ROUNDS; r++)); do
        line=$(wrk_pair module_proxy "$SECS" "$r" bare_proxy) || exit 2
        read -r ratio b_ns x_ns <<< "$line"
        PPAIR="$PPAIR $ratio"
        PPAIR_NS[bare]="${PPAIR_NS[bare]:-} $b_ns"
        PPAIR_NS[module]="${PPAIR_NS[module]:-} $x_ns"
        say "bench: proxied, side by side $((r + 1))/$PAIR_ROUNDS:" \
            "bare $b_ns, module $x_ns ns/request of worker cpu ($ratio)"
    done

    for name in bare_proxy module_proxy; do
        stop "${WRK_PID[$name]}"
    done
    stop "$up"
}

wrk_measure() {
    local name

    wrk_start
    LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
    read -r busy0 steal0 total0 <<< "$(cpu_stat)"
    wrk_rounds
    wrk_pairs
    read -r busy1 steal1 total1 <<< "$(cpu_stat)"
    for name in "${WRK_NAMES[@]}"; do
        stop "${WRK_PID[$name]}"
    done
    wrk_proxied
}

wrk_verdicts() {
    read -r b_med _ _ <<< "$(stats "${RPS[bare]}")"
}

wrk_print() {
    local add

    echo "(b) throughput, wrk -t1 -c$WRK_CONNS, $ROUNDS interleaved rounds x" \
         "$SECS s, nginx: 1 worker on cpu 0, wrk on cpu $CPU1"
    echo "    worker cpu: the nginx worker's own time on a cpu (schedstat)" \
         "per request"
    echo "    capacity: side by side with bare, $PAIR_ROUNDS rounds x" \
         "$SECS s:" \
         "both loaded at once,"
    echo "      their workers sharing cpu 0; bare's worker cpu per request /" \
         "this one's, the"
    echo "      req/s ratio of a saturated worker, median (min - max)"
    echo
    printf '    %-14s %12s %20s %8s %15s %22s\n' config "median req/s" \
        "min - max" "vs bare" "worker cpu/req" "capacity"
    for name in "${WRK_NAMES[@]}"; do
        read -r med min max <<< "$(stats "${RPS[$name]}")"
        read -r ns _ _ <<< "$(stats "${NS[$name]}")"
        ratio=$(awk -v a="$med" -v b="$b_med" 'BEGIN { printf "%.3f", a / b }')
        if [ "$name" = bare ]; then
            cap=1.000
        else
            read -r cap c_min c_max <<< "$(stats "${PAIR[$name]}" 3)"
            cap="$cap ($c_min - $c_max)"
        fi
        printf '    %-14s %12s %20s %8s %12s ns %22s\n' \
            "${PEER_LABEL[$name]:-$name}" \
            "$(fmt "$med")" "$(fmt "$min") - $(fmt "$max")" "$ratio" \
            "$(fmt "$ns")" "$cap"
    done
    for p in "${PEER_NAMES[@]}"; do
        [ -n "${RPS[$p]:-}" ] && continue
        printf '    %-14s %s\n' "${PEER_LABEL[$p]}" "${PEER[$p]}"
    done
    read -r m_cap _ _ <<< "$(stats "${PAIR[module]}" 3)"
    read -r add _ _ <<< "$(stats "${PAIR_ADD[module]}")"
    ok=$(awk -v r="$m_cap" -v t="$RATIO_TARGET" 'BEGIN {
             print (r >= t) ? "PASS" : "MISSED"
         }')
    echo
    echo "    module / bare: capacity $m_cap, +$(fmt "$add") ns of worker" \
         "cpu a request (target"
    echo "      >= $RATIO_TARGET: $ok); req/s median $(awk \
         -v a="$(stats "${RPS[module]}" | cut -d' ' -f1)" -v b="$b_med" \
         'BEGIN { printf "%.3f", a / b }')"
    if [ -n "$PPAIR" ]; then
        read -r p_cap p_min p_max <<< "$(stats "$PPAIR" 3)"
        read -r p_bare _ _ <<< "$(stats "${PPAIR_NS[bare]}")"
        read -r p_mod _ _ <<< "$(stats "${PPAIR_NS[module]}")"
        echo "    proxied (proxy_pass to an nginx answering 200, keep-alive," \
             "on cpu $CPU1), side by"
        echo "      side, $PAIR_ROUNDS rounds: module / bare: capacity" \
             "$p_cap ($p_min - $p_max); worker cpu a"
        echo "      request, median: bare $(fmt "$p_bare") ns, module" \
             "$(fmt "$p_mod") ns"
    fi
    echo "    req/s / bare's in the same round (measured a few seconds" \
         "apart), median"
    echo "    (min - max) of the $ROUNDS rounds:"
    for name in "${WRK_NAMES[@]}"; do
        [ "$name" = bare ] && continue
        read -r ratio r_min r_max <<< "$(stats "${RATIO[$name]}" 3)"
        printf '      %-16s %s (%s - %s)\n' "${PEER_LABEL[$name]:-$name}" \
            "$ratio" "$r_min" "$r_max"
    done
    awk -v b="$((busy1 - busy0))" -v s="$((steal1 - steal0))" \
        -v t="$((total1 - total0))" -v l="$LOAD_BEFORE" -v n="$NCPU" 'BEGIN {
        printf "    during wrk: cpus %.0f%% busy, %.0f%% stolen by the" \
               " hypervisor; load average before: %s\n",
               t ? 100 * b / t : 0, t ? 100 * s / t : 0, l
    }'
    echo
}
