# (a) instructions per request under callgrind: bare nginx, a buffered
# access log, the module (Playarr's templates, 1,000 templates, 10,000
# more series, turned off), the session cookie's three cases, and the
# peers when they are set up; all on the Playarr mix.
#
# Leaves PER[name], IR[name,N], SERIESN[name], ANNOTATE, GROWTH_1K,
# GROWTH_10K, PEER_ANNOTATE[peer], CG_RUNS[name] for the table.

declare -A CG_MODE CG_ROUTES CG_WARM CG_COOKIE CG_MIX CG_PORT CG_LABEL
declare -A CG_REQ SERIESN CG_TAG CG_RUNS CG_CHECKED PEER_ANNOTATE
CG_A=()

# cg_def NAME PORT MODE ROUTES WARM COOKIE MIX REQUESTS LABEL: a callgrind
# configuration; ROUTES: 82 (Playarr's), 1k (1,000 templates) or -; MIX:
# client.py's --mix and its options
cg_def() {
    CG_PORT[$1]=$2
    CG_MODE[$1]=$3
    case $4 in
    82) CG_ROUTES[$1]=$ROUTES82 ;;
    1k) CG_ROUTES[$1]=$ROUTES1K ;;
    *) CG_ROUTES[$1]= ;;
    esac
    CG_WARM[$1]=$5
    CG_COOKIE[$1]=$6
    CG_MIX[$1]=$7
    CG_REQ[$1]=$8
    CG_LABEL[$1]=$9
}

# the configurations of (a), in the table's order.  The session ones: the
# same Cookie bytes on every request of the mix but the anonymous ones:
# the user's one session, without a secret file (none: the cookie is not
# looked at) and with one (known: a cache hit); a session never seen
# (new: verified, its HMAC computed, and kept).
#
# lua-prometheus counts into a table of the worker's and adds that into
# its shared dict once a second (sync_interval), every key touched since:
# that flush is out of the way here (sync_interval 3600: it runs once, at
# exit, the same in both runs).  Its share of a request depends on how
# many requests a second there are: (b)'s worker cpu per request has it,
# at wrk's rate; under valgrind, at a few hundred a second, it would flush
# nearly every key of the mix at each second.
callgrind_define() {
    local p=playarr c=0 name

    while read -r name mode routes warm cookie label; do
        cg_def "$name" $((PORT0 + c)) "$mode" "$routes" "$warm" "$cookie" \
            "--mix $p" "$N" "$label"
        CG_A+=("$name")
        c=$((c + 1))
    done <<EOF
bare bare - 0 none bare (no module)
access_log access_log - 0 none access_log (no module)
module module 82 0 none module, $NROUTES routes
module_1k module 1k 0 none module, $TEMPLATES routes
module_10k module 82 $SERIES none module, +$SERIES series
module_off module_off 82 0 none module, playarr_metrics off
vts vts - 0 none vts, 2 filters + histogram
lua_prometheus_noflush lua_prometheus_noflush - 0 none lua-prometheus, ctr + \
hist
module_jwt_none module_route_user 82 0 known module, cookie, no secret
module_jwt_known module_jwt 82 0 known module, jwt, known session
module_jwt_fresh module_jwt 82 0 fresh module, jwt, new session
EOF
}

# series_of LOG: the series (vts: uris:: + users:: nodes) a client.py
# check found
series_of() {
    sed -n -e 's/.*counter_series=\([0-9]*\).*/\1/p' \
        -e 's/.*uri_nodes=\([0-9]*\) user_nodes=\([0-9]*\).*/\1+\2/p' "$1"
}

# cg_client_args NAME: client.py's options for NAME's requests
cg_client_args() {
    # shellcheck disable=SC2086  # the mix's words
    printf '%s\n' --warm "${CG_WARM[$1]}" --cookie "${CG_COOKIE[$1]}" \
        ${CG_MIX[$1]}
}

# cg_check NAME: without valgrind, a module configuration records every
# request exactly once, and into no overflow series; so does a peer (its
# exposition read back), or it is not measured: a peer that records
# nothing would look cheap
cg_check() {
    local name=$1 mode=${CG_MODE[$1]} port=${CG_PORT[$1]} p m dir
    local -a modes args

    [ -z "${CG_CHECKED[$name]:-}" ] || return 0
    CG_CHECKED[$name]=1
    mapfile -t args < <(cg_client_args "$name")

    if is_peer "$mode"; then
        # lua-prometheus also as (b) and (f) run it, with its flush
        p=$(peer_of "$mode")
        modes=("$mode")
        [ "$mode" = lua_prometheus_noflush ] && modes+=(lua_prometheus)
        for m in "${modes[@]}"; do
            measured "$m" || break
            dir=$OUT/check/$m
            conf "$m" "$port" "$dir" off
            nginx_env "$m"
            start "$dir" "$port"
            if "${CLIENT[@]}" --port "$port" -n "$N" --conns "$CONNS" \
                   --check-metrics /__bench/metrics \
                   --format "${PEER_LABEL[$p]}" > "$dir/client.log" 2>&1
            then
                SERIESN[$m]=$(series_of "$dir/client.log")
                say "bench:   $m: $(cat "$dir/client.log")"
            else
                cat "$dir/client.log" >&2
                PEER[$p]="not measured (it does not count the requests"
                PEER[$p]+=" sent: $dir/client.log)"
                say "bench:   $m: ${PEER[$p]}"
            fi
            stop "$NPID"
        done
        NENV=()
        return 0
    fi

    [ "$mode" = module_off ] && return 0
    is_module "$mode" || return 0

    dir=$OUT/check/$name
    conf "$mode" "$port" "$dir" off "${CG_ROUTES[$name]}"
    start "$dir" "$port"
    "${CLIENT[@]}" --port "$port" -n "${CG_REQ[$name]}" --conns "$CONNS" \
        "${args[@]}" --check-metrics /__bench/metrics \
        > "$dir/client.log" || die "$name: see $dir/client.log"
    stop "$NPID"
    SERIESN[$name]=$(sed -n 's/.*counter_series=\([0-9]*\).*/\1/p' \
                     "$dir/client.log")
    say "bench:   $name: $(cat "$dir/client.log")"
}

# cg_measure NAME: PER[NAME] and IR[NAME,N], once; lua-prometheus:
# LUA_REPEAT pairs of runs (name, name.2, ...), the median kept
cg_measure() {
    local name=$1 reps=1 r tag n
    local -a runs args

    [ -z "${PER[$name]:-}" ] || return 0
    if is_peer "$name" && ! measured "$name"; then
        return 0
    fi
    mapfile -t args < <(cg_client_args "$name")
    nginx_env "${CG_MODE[$name]}"

    [ "$(peer_of "$name")" = lua_prometheus ] && reps=$LUA_REPEAT
    runs=()
    for ((r = 1; r <= reps; r++)); do
        tag=$name
        [ "$r" -gt 1 ] && tag=$name.$r
        cg_run "$tag" "${CG_MODE[$name]}" "${CG_PORT[$name]}" \
            "${CG_ROUTES[$name]}" "${CG_REQ[$name]}" "${args[@]}"
        runs+=("${PER[$tag]} $tag")
    done
    NENV=()

    # the median run stands for the configuration
    tag=$(printf '%s\n' "${runs[@]}" | sort -n \
              | sed -n "$(( (reps + 1) / 2 ))p" | cut -d' ' -f2)
    n=${CG_REQ[$name]}
    CG_TAG[$name]=$tag
    CG_N[$name]=$n
    PER[$name]=${PER[$tag]}
    IR[$name,$n]=${IR[$tag,$n]}
    IR[$name,$((3 * n))]=${IR[$tag,$((3 * n))]}
    CG_RUNS[$name]=$(printf '%s\n' "${runs[@]}" | cut -d' ' -f1 | sort -n \
                         | tr '\n' ' ')
}

# the checks of (a): the module's configurations when callgrind runs, the
# peers' when callgrind or wrk does
callgrind_checks() {
    local name

    want callgrind && say "bench: checking that the module records" \
                          "(N=$N, no valgrind)"
    for name in "${CG_A[@]}"; do
        if is_peer "${CG_MODE[$name]}"; then
            measured "$name" && want_any callgrind wrk && cg_check "$name"
        elif want callgrind; then
            cg_check "$name"
        fi
    done
}

callgrind_measure() {
    local name p

    for name in "${CG_A[@]}"; do
        cg_measure "$name"
    done

    say "bench: Ir by function"
    ANNOTATE=$(cgdiff module bare) || die "cgdiff.py failed"
    GROWTH_1K=$(cgdiff module_1k module --diff-only --top 5) \
        || die "cgdiff.py failed"
    GROWTH_10K=$(cgdiff module_10k module --diff-only --top 5) \
        || die "cgdiff.py failed"
    for p in vts lua_prometheus_noflush; do
        [ -n "${PER[$p]:-}" ] || continue
        PEER_ANNOTATE[$p]=$(cgdiff "${CG_TAG[$p]}" bare --diff-only \
                                --top 8) \
            || die "cgdiff.py failed"
    done
}

callgrind_verdicts() {
    bare=${PER[bare]}
    mod=$((PER[module] - bare))
    acc=$((PER[access_log] - bare))
    g1k=$((PER[module_1k] - PER[module]))
    g10k=$((PER[module_10k] - PER[module]))
    v_mod=$(verdict "$mod" "$TARGET")
    v_1k=$(verdict "$g1k" "$TOL")
    v_10k=$(verdict "$g10k" "$TOL")
    jwt_known=$((PER[module_jwt_known] - PER[module_jwt_none]))
    jwt_fresh=$((PER[module_jwt_fresh] - PER[module_jwt_none]))
    v_jwt=$(verdict "$jwt_known" "$JWT_TARGET")
    check "$v_mod" "$v_1k" "$v_10k" "$v_jwt"
}

# callgrind_row NAME: NAME's line of the table
callgrind_row() {
    local name=$1 vs

    if [ -z "${PER[$name]:-}" ]; then
        printf '    %-30s %s\n' "${CG_LABEL[$name]}" \
            "${PEER[$(peer_of "$name")]:--}"
        return
    fi
    vs=-
    [ "$name" = bare ] || vs=$(printf '%+d' $((PER[$name] - bare)))
    printf '    %-30s %14s %14s %9s %9s %8s\n' "${CG_LABEL[$name]}" \
        "$(fmt "${IR[$name,$N]}")" "$(fmt "${IR[$name,$((3 * N))]}")" \
        "$(fmt "${PER[$name]}")" "$vs" "${SERIESN[$name]:--}"
}

callgrind_print() {
    local name p l v

    echo "(a) instructions per request, valgrind --tool=callgrind:"
    echo "    (Ir(3N) - Ir(N)) / 2N, N = $N requests of the Playarr mix"
    echo "    ($MIXLEN paths x users) over $CONNS keep-alive connection(s)"
    echo
    printf '    %-30s %14s %14s %9s %9s %8s\n' \
        config "Ir(N)" "Ir(3N)" "Ir/req" "vs bare" series
    for name in "${CG_A[@]}"; do
        callgrind_row "$name"
    done
    echo "    (series: playarr_http_requests_total series after the run;"
    echo "     playarr_http_request_duration_seconds has as many; vts: its"
    echo "     uris:: + users:: filter nodes)"
    echo
    printf '    the module adds            %6s instructions/request' \
        "$(fmt "$mod")"
    printf '   (target <= %s: %s)\n' "$(fmt "$TARGET")" "$v_mod"
    printf '    access_log adds            %6s instructions/request' \
        "$(fmt "$acc")"
    echo '   (reference)'
    printf '    %4d routes vs %-4d        %+6d instructions/request' \
        "$TEMPLATES" "$NROUTES" "$g1k"
    printf '   (flat within %d: %s)\n' "$TOL" "$v_1k"
    printf '    +%d series vs %-6s  %+6d instructions/request' \
        "$SERIES" "${SERIESN[module]:-mix}" "$g10k"
    printf '   (flat within %d: %s)\n' "$TOL" "$v_10k"
    printf '    loaded, playarr_metrics off %+6d instructions/request\n' \
        "$((PER[module_off] - bare))"
    printf '    a known session cookie     %+6d instructions/request' \
        "$jwt_known"
    printf '   (target <= %s: %s)\n' "$JWT_TARGET" "$v_jwt"
    printf '    a new session cookie       %+6d instructions/request' \
        "$jwt_fresh"
    echo '   (its HMAC)'
    echo '    (both against the same Cookie bytes without a secret file;'
    echo '     the user is then the session'"'"'s, not the route'"'"'s)'

    for p in vts lua_prometheus_noflush; do
        [ -n "${PER[$p]:-}" ] || continue
        printf '    %-26s %6s instructions/request   (%s x the module)\n' \
            "${PEER_LABEL[$(peer_of "$p")]} adds" \
            "$(fmt $((PER[$p] - bare)))" \
            "$(awk -v a=$((PER[$p] - bare)) -v b="$mod" \
                   'BEGIN { printf "%.1f", a / b }')"
    done
    p=lua_prometheus_noflush
    if [ -n "${PER[$p]:-}" ]; then
        if [ "$LUA_REPEAT" -gt 1 ]; then
            l=
            for v in ${CG_RUNS[$p]}; do
                l+=" $(fmt $((v - bare)))"
            done
            echo "      lua-prometheus, the median of $LUA_REPEAT runs, which" \
                 "added:$l"
            echo "      (LuaJIT compiles other traces, and aborts others," \
                 "from one start of"
            echo "       nginx to the next);"
        fi
        echo "      without the flush of its per-worker counters into its" \
             "shared dict, once"
        echo "      a second by default, whose share of a request shrinks" \
             "as the request rate"
        echo "      grows: (b)'s worker cpu per request has it"
    fi
    echo
    echo "    where the module's instructions go (module config):"
    sed 's/^/  /' <<< "$ANNOTATE"
    echo
    echo "    $TEMPLATES routes:"
    sed 's/^/  /' <<< "$GROWTH_1K"
    echo
    echo "    +$SERIES series:"
    sed 's/^/  /' <<< "$GROWTH_10K"
    for p in vts lua_prometheus_noflush; do
        [ -n "${PER[$p]:-}" ] || continue
        echo
        echo "    ${PEER_LABEL[$(peer_of "$p")]}:"
        sed 's/^/  /' <<< "${PEER_ANNOTATE[$p]}"
    done
    if [ -n "${PER[lua_prometheus_noflush]:-}" ]; then
        echo "      (lua-prometheus: LuaJIT's compiled traces have no symbol" \
             "and lie at other"
        echo "       addresses in the N and 3N runs: by function, only the" \
             "named ones mean"
        echo "       anything; the total does)"
    fi
    echo
}
