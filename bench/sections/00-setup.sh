# Before anything runs: the tools and knobs checked, the peers set up
# (bench/peers, when their knobs are set), the route files (Playarr's
# templates, and 1,000 with synthetic ones) and the mix for wrk written.
#
# Leaves CPU1, PEER[peer], ROUTES82, ROUTES1K, ROUTES_FROM, NROUTES,
# MIXLEN and $OUT/mix.txt.

setup_checks() {
    local tool part

    [ -x "$NGINX" ] || die "$NGINX: not found"
    [ -f "$SO" ] || die "$SO: not found (make build)"
    for tool in valgrind wrk taskset python3; do
        command -v "$tool" > /dev/null \
            || die "$tool: not found (make bench-deps)"
    done
    if want wrk; then
        { wrk 2>&1 || true; } | grep -q -- '--script' \
            || die "this wrk has no Lua scripting (-s)"
    fi
    [ "$N" -ge 1 ] 2>/dev/null || die "BENCH_N must be a number"
    [ "$SECS" -ge 1 ] 2>/dev/null \
        || die "BENCH_SECONDS must be a number >= 1"
    [ "$ROUNDS" -ge 1 ] 2>/dev/null \
        || die "BENCH_ROUNDS must be a number >= 1"
    [ "$SCRAPES" -ge 1 ] 2>/dev/null \
        || die "BENCH_SCRAPES must be a number >= 1"
    [ "$LUA_REPEAT" -ge 1 ] 2>/dev/null \
        || die "BENCH_LUA_REPEAT must be a number >= 1"
    [ "$LAT_SECS" -ge 1 ] 2>/dev/null \
        || die "BENCH_LAT_SECONDS must be a number >= 1"
    [ "$SAVE_SECS" -ge 1 ] 2>/dev/null \
        || die "BENCH_SAVE_SECONDS must be a number >= 1"
    [ "$SAVE_RATE" -ge 1 ] 2>/dev/null \
        || die "BENCH_SAVE_RATE must be a number >= 1"
    [ "$SAVE_ROUNDS" -ge 1 ] 2>/dev/null \
        || die "BENCH_SAVE_ROUNDS must be a number >= 1"
    for part in ${ONLY//,/ }; do
        case $part in
        callgrind|gates|wrk|render|peer-render|save|merge) ;;
        *) die "BENCH_ONLY: $part is none of callgrind, gates, wrk," \
               "render, peer-render, save, merge"
        esac
    done
    [ "$MIX_USERS" -ge 1 ] 2>/dev/null \
        || die "BENCH_MIX_USERS must be a number >= 1"

    CPU1=1
    if [ "$(nproc)" -lt 2 ]; then
        say "bench: one CPU only: nginx and the clients share it"
        CPU1=0
    fi
}

# setup_peers: built, fetched or found by bench/peers, when their knobs
# are set; never fatal
setup_peers() {
    local p

    for p in "${PEER_NAMES[@]}"; do
        PEER[$p]="not measured (BENCH_ONLY=$ONLY)"
    done
    if want callgrind || want wrk || want peer-render; then
        if "${PEERS[@]}" setup "$PEERS_ENV"; then
            for p in "${PEER_NAMES[@]}"; do
                PEER[$p]=$(peer_var "PEER_$p")
            done
        else
            for p in "${PEER_NAMES[@]}"; do
                PEER[$p]="not measured (bench/peers setup failed)"
            done
        fi
    fi
}

# setup_routes: the route templates, Playarr's and 1,000 with synthetic
# ones; the mix wrk sends
setup_routes() {
    local i

    ROUTES82=$OUT/routes-playarr.conf
    ROUTES1K=$OUT/routes-1000.conf

    if [ -f "$ROUTES_CONF" ] && ! grep -q PLACEHOLDER "$ROUTES_CONF"; then
        cp "$ROUTES_CONF" "$ROUTES82"
        ROUTES_FROM=docs/playarr-routes.conf
    elif [ -f "$ROUTES_TXT" ]; then
        # docs/playarr-routes.conf is not written yet: Playarr's list itself
        awk '$1 ~ /^[A-Z]+$/ && $2 ~ /^\// && !seen[$2]++ {
                 print "playarr_metrics_route " $2 ";" }' \
            "$ROUTES_TXT" > "$ROUTES82"
        ROUTES_FROM=$ROUTES_TXT
    else
        die "no routes: $ROUTES_CONF is a placeholder, $ROUTES_TXT is missing"
    fi

    NROUTES=$(grep -c '^[[:space:]]*playarr_metrics_route[[:space:]]' \
                  "$ROUTES82")
    [ "$NROUTES" -gt 0 ] || die "no playarr_metrics_route in $ROUTES82"
    [ "$NROUTES" -lt "$TEMPLATES" ] \
        || die "$NROUTES routes: more than $TEMPLATES"

    {
        cat "$ROUTES82"
        # three shapes, widening the root, /api/ and a deep node
        for ((i = 0; i < TEMPLATES - NROUTES; i++)); do
            case $((i % 3)) in
            0) printf 'playarr_metrics_route /api/synthetic/%03d/:id;\n' "$i" ;;
            1) printf 'playarr_metrics_route /api/ext%03d/:id/items;\n' "$i" ;;
            2) printf 'playarr_metrics_route /v%03d/:key/catalog/:type/%s;\n' \
                   "$i" ':id.json' ;;
            esac
        done
    } > "$ROUTES1K"

    "${CLIENT[@]}" --print-mix > "$OUT/mix.txt"
    MIXLEN=$(wc -l < "$OUT/mix.txt")

    # the N run must create every series the 3N run does, or their creation
    # does not cancel out
    [ "$N" -ge "$MIXLEN" ] \
        || die "BENCH_N must be at least $MIXLEN (one pass of the mix)"

}
