# The cost gates (docs/performance.md), under callgrind: on each mix of
# requests, the module's own cost (the self cost of the functions of its
# .so) and the whole process's against bare nginx on the same mix; the
# render's instructions per series of a 10,000-series scrape; a known
# session cookie against the same cookie without a secret file.
# BENCH_ONLY=gates runs only what they need.
#
# Leaves, per mix M: PER[bare_M], PER[module_M] (M = playarr: bare and
# module of (a)), OWN[M], WHOLE[M]; IR_RENDER, IR_SCRAPE, RPS; jwt_known.

GATE_MIXES=(playarr users query xtream)
# measured and printed, not gated: every request a path never seen, so
# that the paths cache never finds one
INFO_MIXES=(ids)
ALL_MIXES=("${GATE_MIXES[@]}" "${INFO_MIXES[@]}")
declare -A OWN WHOLE MIX_N MIX_PERIOD MIX_TEXT V_OWN V_WHOLE GATE_ANNOTATE

# gate_cfg KIND MIX: the configuration of KIND (bare or module) on MIX
gate_cfg() {
    if [ "$2" = playarr ]; then echo "$1"; else echo "$1_$2"; fi
}

# mix_period ARGS...: the requests of one period of client.py's mix
mix_period() {
    "${CLIENT[@]}" --print-mix "$@" | wc -l
}

gates_define() {
    local k=0 m args mode n

    MIX_N[playarr]=$N
    MIX_PERIOD[playarr]=$MIXLEN
    MIX_TEXT[playarr]="41 paths (ids, keys, query strings, case, %XX, no"
    MIX_TEXT[playarr]+=" route) x 11 users, in X-Playarr-User"
    MIX_TEXT[users]="the same 41 paths x $MIX_USERS users, in X-Playarr-User"
    MIX_TEXT[query]="every template of docs/playarr/routes.txt but the"
    MIX_TEXT[query]+=" Xtream ones, filled in, each with a query string of"
    MIX_TEXT[query]+=" the label names of docs/playarr/metrics.json, x 11"
    MIX_TEXT[query]+=" users, in X-Playarr-User"
    MIX_TEXT[xtream]="the Xtream templates of routes.txt, the user in the"
    MIX_TEXT[xtream]+=" path (/movie/:username/:password/:streamId) or the"
    MIX_TEXT[xtream]+=" query (/player_api.php?username=...), 13 users, no"
    MIX_TEXT[xtream]+=" header: the route user"
    MIX_TEXT[ids]="an id never seen before in each path (/api/titles/:id"
    MIX_TEXT[ids]+=" and 4 more templates) x 11 users, in X-Playarr-User:"
    MIX_TEXT[ids]+=" the paths cache never hits; not a gate"

    for m in "${ALL_MIXES[@]}"; do
        [ "$m" = playarr ] && continue
        args="--mix $m"
        [ "$m" = users ] && args+=" --users $MIX_USERS"
        mode=module
        [ "$m" = xtream ] && mode=module_route_user
        # shellcheck disable=SC2086  # the mix's words
        n=$(mix_period $args)
        MIX_PERIOD[$m]=$n
        # the N run must create every series the 3N run does; the ids mix
        # never repeats a path within 3N requests
        [ "$n" -ge "$N" ] || n=$N
        [ "$m" != ids ] || n=$N
        [ "$m" != ids ] || [ "${MIX_PERIOD[$m]}" -ge $((3 * N)) ] \
            || die "the ids mix repeats within $((3 * N)) requests"
        MIX_N[$m]=$n
        cg_def "bare_$m" $((PORT0 + 28 + k)) bare - 0 none "$args" "$n" \
            "bare, $m mix"
        cg_def "module_$m" $((PORT0 + 29 + k)) "$mode" 82 0 none "$args" \
            "$n" "module, $m mix"
        k=$((k + 2))
    done
}

gates_measure() {
    local m b c

    say "bench: gates: the module's cost on ${#GATE_MIXES[@]} mixes," \
        "the render, a known session"
    for c in module_jwt_none module_jwt_known; do
        cg_check "$c"
    done
    for m in "${ALL_MIXES[@]}"; do
        cg_check "$(gate_cfg module "$m")"
    done
    for m in "${ALL_MIXES[@]}"; do
        b=$(gate_cfg bare "$m")
        c=$(gate_cfg module "$m")
        cg_measure "$b"
        cg_measure "$c"
        WHOLE[$m]=$((PER[$c] - PER[$b]))
        OWN[$m]=$(kv own "$(cgdiff "$c" - --values)") \
            || die "cgdiff.py failed"
        [ -n "${OWN[$m]}" ] || die "cgdiff.py: no own cost for $c"
        GATE_ANNOTATE[$m]=$(cgdiff "$c" - --top 6) || die "cgdiff.py failed"
    done
    cg_measure module_jwt_none
    cg_measure module_jwt_known
    render_cg_measure
}

# render_cg_measure: one scrape of SERIES series under callgrind, as the
# difference of a run with 3 scrapes and one with 1 (start-up, the push
# of the series and the first scrape's one-off work cancel out): IR_SCRAPE
# the whole process, IR_RENDER ngx_http_playarr_metrics_render() and what
# it calls (every step of the streamed body)
render_cg_measure() {
    local port=$((RPORT + 2)) k dir v
    local -A ir

    [ -z "${IR_RENDER:-}" ] || return 0
    for k in 1 3; do
        dir=$OUT/render/callgrind/$k
        say "bench: render: callgrind, $SERIES series, $k scrape(s)"
        render_conf "$port" "$dir" 10m
        sed -i -e 's/^master_process on;/master_process off;/' \
            -e '/^worker_cpu_affinity/d' -e 's/ reuseport;/;/' \
            "$dir/nginx.conf"
        start "$dir" "$port" "${VG[@]}" \
            --callgrind-out-file="$dir/callgrind.out"
        fill "$port" "$HALF" "$HALF"
        "${RENDER[@]}" scrape --port "$port" --path /__bench/metrics \
            -n "$k" > "$dir/scrape.txt" || die "render.py scrape failed"
        stop "$NPID"
        ir[$k]=$(collected "$dir/valgrind.log")
    done

    IR_SCRAPE=$(( (ir[3] - ir[1]) / 2 ))
    v=$(python3 "$HERE/cgdiff.py" 1 "$OUT/render/callgrind/1/callgrind.out" \
            "$OUT/render/callgrind/3/callgrind.out" \
            --values "$RENDER_FN") \
        || die "cgdiff.py: no $RENDER_FN (renamed? set BENCH_RENDER_FN)"
    IR_RENDER=$(kv "incl:$RENDER_FN" "$v")
    [ "${IR_RENDER:-0}" -gt 0 ] || die "render: $RENDER_FN cost nothing"
    RPS=$((IR_RENDER / SERIES))
}

gates_verdicts() {
    local m

    for m in "${GATE_MIXES[@]}"; do
        V_WHOLE[$m]=$(verdict "${WHOLE[$m]}" "$TARGET")
        V_OWN[$m]=$(verdict "${OWN[$m]}" "$OWN_TARGET")
        check "${V_WHOLE[$m]}" "${V_OWN[$m]}"
    done
    for m in "${INFO_MIXES[@]}"; do
        V_WHOLE[$m]=info
        V_OWN[$m]=info
    done
    v_rps=$(verdict "$RPS" "$RENDER_SERIES_TARGET")
    v_r8m=$(verdict "$IR_RENDER" "$RENDER_SCRAPE_TARGET")
    jwt_known=$((PER[module_jwt_known] - PER[module_jwt_none]))
    v_jwt=$(verdict "$jwt_known" "$JWT_TARGET")
    check "$v_rps" "$v_r8m" "$v_jwt"
}

# wrap INDENT TEXT: TEXT in lines of at most 76 columns, INDENT spaces
# before all but the first
wrap() {
    fold -s -w $((76 - $1)) <<< "$2" | sed -e 's/ *$//' \
        -e "2,\$s/^/$(printf '%*s' "$1" '')/"
}

gates_print() {
    local m b c miss=0 all=0 v

    echo "gates: callgrind, instructions per request, (Ir(3N) - Ir(N)) / 2N"
    echo "    own: the self cost of the module's functions (those of"
    echo "      $(basename "$SO")), per request;"
    echo "    whole: the process against bare nginx on the same mix"
    echo
    printf '    %-8s %8s %6s %9s %10s %6s %16s %14s\n' mix requests N \
        "bare/req" "module/req" series \
        "whole <= +$(fmt "$TARGET")" "own <= $OWN_TARGET"
    for m in "${ALL_MIXES[@]}"; do
        b=$(gate_cfg bare "$m")
        c=$(gate_cfg module "$m")
        printf '    %-8s %8s %6s %9s %10s %6s %11s %-4s %9s %-4s\n' \
            "$m" "$(fmt "${MIX_PERIOD[$m]}")" "$(fmt "${MIX_N[$m]}")" \
            "$(fmt "${PER[$b]}")" "$(fmt "${PER[$c]}")" \
            "$(fmt "${SERIESN[$c]:--}")" \
            "$(fmt "$(printf '%+d' "${WHOLE[$m]}")")" "${V_WHOLE[$m]}" \
            "$(fmt "${OWN[$m]}")" "${V_OWN[$m]}"
    done
    echo "    (requests: one period of the mix, every (path, user) pair"
    echo "     once; N: the short run; series: playarr_http_requests_total"
    echo "     series after the check)"
    for m in "${ALL_MIXES[@]}"; do
        echo "    $(wrap 6 "$m: ${MIX_TEXT[$m]}")"
    done
    echo
    echo "    render, one scrape of $(fmt "$SERIES") series" \
         "($(fmt "$HALF") counter, $(fmt "$HALF") histogram),"
    echo "      (Ir(3 scrapes) - Ir(1)) / 2:"
    echo "      $RENDER_FN() and what it calls"
    printf '      %11s instructions (<= %s: %s)\n' "$(fmt "$IR_RENDER")" \
        "$(fmt "$RENDER_SCRAPE_TARGET")" "$v_r8m"
    printf '      %11s per series   (<= %s: %s)\n' "$(fmt "$RPS")" \
        "$RENDER_SERIES_TARGET" "$v_rps"
    echo "      the whole scrape request, all of nginx:" \
         "$(fmt "$IR_SCRAPE") instructions"
    echo "    a known session cookie: $(printf '%+d' "$jwt_known")" \
         "instructions/request over the same"
    echo "      cookie without a secret file (<= $JWT_TARGET: $v_jwt)"
    echo
    for m in "${ALL_MIXES[@]}"; do
        echo "    $m mix, the module's functions:"
        sed -e '1d' -e '/^    (inclusive/,$d' -e 's/^/  /' \
            <<< "${GATE_ANNOTATE[$m]}"
    done
    for v in "${V_WHOLE[@]}" "${V_OWN[@]}" "$v_r8m" "$v_rps" "$v_jwt"; do
        [ "$v" != info ] || continue
        all=$((all + 1))
        [ "$v" = PASS ] || miss=$((miss + 1))
    done
    echo
    echo "    gates: $miss of $all missed"
    echo
}
