# bench/lib.sh: what the sections of make bench share (bench/run sources
# it, then bench/sections/*.sh): messages, nginx's life, its
# configurations, the callgrind runs, and the table's number formats.
#
# The sections read and set global variables (bench/run's knobs, the
# results of the runs): see bench/run for the knobs, each section for
# what it leaves for the table.

say() {
    printf '%s\n' "$*" >&2
}

die() {
    say "bench: $*"
    exit 2
}

# want PART: whether BENCH_ONLY names PART
want() {
    [[ ",$ONLY," == *",$1,"* ]]
}

# want_any PART...: whether BENCH_ONLY names one of the PARTs
want_any() {
    local p

    for p in "$@"; do
        want "$p" && return 0
    done
    return 1
}

# ------------------------------------------------------------- nginx life

PIDS=()
NENV=()

stop_one() {
    local pid=$1 i

    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null || true
        return 0
    fi

    kill -QUIT "$pid" 2>/dev/null || true

    # callgrind writes its profile on the way out: give it time.  QUIT
    # again every second: one nginx caught while starting may have taken
    # the first before blocking in epoll_wait with no timer to wake it.
    for ((i = 1; i <= 600; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
        if [ $((i % 10)) = 0 ]; then
            kill -QUIT "$pid" 2>/dev/null || true
        fi
    done

    if kill -0 "$pid" 2>/dev/null; then
        say "bench: nginx $pid ignored QUIT for 60 s, killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi

    wait "$pid" 2>/dev/null || true
}

forget() {
    local pid=$1 p keep=()

    for p in "${PIDS[@]+"${PIDS[@]}"}"; do
        [ "$p" = "$pid" ] || keep+=("$p")
    done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

# shellcheck disable=SC2317  # a trap
cleanup() {
    local rc=$? pid

    trap - EXIT INT TERM
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
        stop_one "$pid"
    done
    exit "$rc"
}

# wait_port PID PORT DIR: until nginx PID accepts connections on PORT
wait_port() {
    local pid=$1 port=$2 dir=$3 i

    for ((i = 0; i < 600; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null || true
            forget "$pid"
            say "bench: nginx exited at start-up ($dir/error.log):"
            tail -5 "$dir/error.log" >&2 || true
            [ -f "$dir/valgrind.log" ] && tail -5 "$dir/valgrind.log" >&2
            exit 2
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done

    die "nginx did not listen on 127.0.0.1:$port within 60 s"
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# start DIR PORT [valgrind args...]: nginx in the background, pid in $NPID,
# with the environment words of NENV, on cpu START_CPU (default 0)
start() {
    local dir=$1 port=$2

    shift 2
    port_free "$port" || die "127.0.0.1:$port is in use (set BENCH_PORT)"

    if [ $# -gt 0 ]; then
        env "${NENV[@]+"${NENV[@]}"}" taskset -c "${START_CPU:-0}" \
            valgrind "$@" \
            --log-file="$dir/valgrind.log" \
            "$NGINX" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" \
            > "$dir/stdout.log" 2>&1 &
    else
        env "${NENV[@]+"${NENV[@]}"}" taskset -c "${START_CPU:-0}" \
            "$NGINX" -p "$dir/" \
            -c "$dir/nginx.conf" -e "$dir/error.log" \
            > "$dir/stdout.log" 2>&1 &
    fi

    NPID=$!
    PIDS+=("$NPID")
    wait_port "$NPID" "$port" "$dir"
}

# start_free DIR PORT: nginx with its own cpu affinity, pid in $NPID
start_free() {
    local dir=$1 port=$2

    port_free "$port" || die "127.0.0.1:$port is in use (set BENCH_PORT)"
    "$NGINX" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" \
        > "$dir/stdout.log" 2>&1 &
    NPID=$!
    PIDS+=("$NPID")
    wait_port "$NPID" "$port" "$dir"
}

stop() {
    stop_one "$1"
    forget "$1"
}

# worker_of PID: the worker of the nginx master PID
worker_of() {
    ps -o pid= --ppid "$1" | tr -d ' ' | head -1
}

# run_ns PID: nanoseconds PID has spent on a cpu (the scheduler's count:
# time the process waited for a cpu, taken by anything else, is not in it)
run_ns() {
    cut -d' ' -f1 "/proc/$1/schedstat"
}

# ------------------------------------------------------------------ peers

# is_peer MODE: whether MODE is a peer's configuration
is_peer() {
    case $1 in
    vts|lua_prometheus|lua_prometheus_noflush) return 0 ;;
    esac
    return 1
}

# peer_of MODE: the peer of a configuration (lua_prometheus_noflush is
# lua-prometheus with its once-a-second flush out of the way, for callgrind)
peer_of() {
    case $1 in
    lua_prometheus*) echo lua_prometheus ;;
    *) echo "$1" ;;
    esac
}

# measured MODE: whether MODE's peer is set up and still counts right
measured() {
    [ "${PEER[$(peer_of "$1")]:-}" = ok ]
}

# peer_var NAME: NAME's value in the file bench/peers setup wrote
peer_var() {
    # shellcheck disable=SC1090  # written by bench/peers setup
    (. "$PEERS_ENV" && eval "echo \"\${$1:-}\"")
}

# peer_version PEER: what bench/peers says PEER is
peer_version() {
    peer_var "VERSION_$1"
}

# peer_conf MODE PART: the lines of MODE's peer for PART of nginx.conf
# (bench/peers)
peer_conf() {
    local sync=1

    [ "$1" = lua_prometheus_noflush ] && sync=3600
    BENCH_LUA_SYNC_INTERVAL=$sync "${PEERS[@]}" conf "$(peer_of "$1")" "$2" \
        "$PEERS_ENV" || die "bench/peers conf $1 $2 failed"
}

# nginx_env MODE: sets NENV, the VAR=value words nginx needs for MODE
# (LD_LIBRARY_PATH for lua-prometheus' luajit), for start
nginx_env() {
    NENV=()
    if is_peer "$1"; then
        mapfile -t NENV < <("${PEERS[@]}" env "$(peer_of "$1")" \
                                "$PEERS_ENV")
    fi
}

# ---------------------------------------------------------------- configs

# is_module MODE: whether MODE loads the module
is_module() {
    case $1 in
    module|module_off|module_route_user|module_jwt) return 0 ;;
    esac
    return 1
}

# temp_paths DIR: nginx's temporary directories under DIR/tmp, for the
# http block of every configuration the bench writes
temp_paths() {
    local t

    for t in client_body proxy fastcgi uwsgi scgi; do
        [ "$t" = client_body ] || printf '    '
        printf '%s_temp_path %s/tmp/%s;\n' "$t" "$1" "$t"
    done
}

# conf MODE PORT DIR MASTER ROUTES: writes DIR/nginx.conf
#   MODE    bare | access_log | module (the user from X-Playarr-User) |
#           module_off (loaded, configured, and "playarr_metrics off;") |
#           module_route_user (no playarr_metrics_username: the session's
#           user, else the route's, else anonymous) | module_jwt (the same
#           with playarr_metrics_jwt_secret_file) | vts | lua_prometheus |
#           lua_prometheus_noflush (a peer, configured by bench/peers);
#           with "_proxy" after it, the mix goes to the upstream on
#           PROXY_UP (keep-alive) rather than to "return 200"
#   MASTER  on (master + 1 worker) | off (one process, for valgrind)
#   ROUTES  the file of playarr_metrics_route lines (module only)
conf() {
    local mode=$1 port=$2 dir=$3 master=$4 routes=${5:-} level=warn
    local answer='return 200;' metrics='return 404;'

    if [ "${mode%_proxy}" != "$mode" ]; then
        mode=${mode%_proxy}
        answer="proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";"
    fi
    is_module "$mode" || is_peer "$mode" || [ "$mode" = bare ] \
        || [ "$mode" = access_log ] || die "conf: no mode $mode"

    mkdir -p "$dir/tmp"

    # lua-prometheus warns at each ngx.sleep(0) its scrapes yield with
    # (stock nginx lacks OpenResty's "delayed events" patch): Debian's
    # default level, error, as a deployment would have it
    [ "$(peer_of "$mode")" = lua_prometheus ] && level=error

    {
        if is_module "$mode"; then
            echo "load_module $SO;"
            echo
        elif is_peer "$mode"; then
            peer_conf "$mode" main
            echo
        fi

        cat <<EOF
daemon off;
master_process $master;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log $level;

events {
    worker_connections 1024;
}

http {
    $(temp_paths "$dir")

    keepalive_requests 1000000;
    keepalive_timeout 300s;

EOF

        if [ "$mode" = access_log ]; then
            echo "    access_log $dir/access.log combined buffer=64k;"
        else
            echo "    access_log off;"
        fi

        [ "$mode" = module_off ] && echo "    playarr_metrics off;"

        if is_module "$mode"; then
            cat <<EOF

    playarr_metrics_zone playarr:16m;
    playarr_metrics_max_series 50000;
    include $routes;
EOF
            # the same locations in every configuration: only the module
            # differs, not the location lookup
            metrics='playarr_metrics_export; playarr_metrics_auth off;'
        fi

        case $mode in
        module|module_off)
            echo "    playarr_metrics_username \$http_x_playarr_user;"
            ;;
        module_jwt)
            # the user is the session's (the client signs with this)
            printf '%s\n' bench-jwt-secret > "$dir/jwt.secret"
            echo "    playarr_metrics_jwt_secret_file $dir/jwt.secret;"
            ;;
        esac

        if is_peer "$mode"; then
            echo
            peer_conf "$mode" http
            metrics=$(peer_conf "$mode" metrics)
        fi

        if [ "$answer" != 'return 200;' ]; then
            cat <<EOF

    upstream bench_upstream {
        server 127.0.0.1:$PROXY_UP;
        keepalive 32;
    }
EOF
        fi

        cat <<EOF

    server {
        listen 127.0.0.1:$port;
EOF
        if is_peer "$mode"; then
            echo
            peer_conf "$mode" server
        fi

        cat <<EOF

        location / {
            $answer
        }

        location = /__bench/metrics {
            $metrics
        }
    }
}
EOF
    } > "$dir/nginx.conf"
}

# render_conf PORT DIR ZONE: the module with the bench schema, a push and
# an export location without token, 2 workers on cpus 0 and 1, and a
# location that answers the pid of the worker serving the connection
render_conf() {
    local port=$1 dir=$2 zone=$3 affinity

    mkdir -p "$dir/tmp"
    "${RENDER[@]}" schema "$dir/schema.json"

    affinity=auto
    [ "$CPU1" = 0 ] && affinity=1

    cat > "$dir/nginx.conf" <<EOF
load_module $SO;

daemon off;
master_process on;
worker_processes 2;
worker_cpu_affinity $affinity;
pid $dir/nginx.pid;
error_log $dir/error.log warn;

events {
    worker_connections 1024;
}

http {
    $(temp_paths "$dir")

    keepalive_requests 1000000;
    keepalive_timeout 300s;
    access_log off;

    log_format bench_scrape '\$request_time \$body_bytes_sent';

    playarr_metrics_zone playarr:$zone;
    playarr_metrics_max_series 200000;
    playarr_metrics_schema $dir/schema.json;
    include $ROUTES82;
    playarr_metrics_username \$http_x_playarr_user;

    server {
        listen 127.0.0.1:$port reuseport;

        location / {
            return 200;
        }

        location = /__bench/pid {
            playarr_metrics off;
            return 200 "\$pid\n";
        }

        location = /__bench/metrics {
            playarr_metrics_export;
            playarr_metrics_auth off;
            access_log $dir/scrape.log bench_scrape;
        }

        location = /__bench/push {
            playarr_metrics_push;
            playarr_metrics_auth off;
            client_max_body_size 2m;
            client_body_buffer_size 2m;
        }
    }
}
EOF
}

# fill PORT COUNTERS HISTOGRAMS [args]: series created by push
# (bench/render.py fill) in the nginx of render_conf on PORT
fill() {
    local port=$1 c=$2 h=$3

    shift 3
    "${RENDER[@]}" fill --port "$port" --path /__bench/push \
        --counters "$c" --histograms "$h" "$@" \
        || die "render.py fill failed"
}

# -------------------------------------------------------------- callgrind

VG=(--tool=callgrind --dump-instr=no --cache-sim=no --branch-sim=no)

declare -A IR PER CG_N

# collected LOG: the instructions valgrind's LOG says it collected
collected() {
    local ir

    ir=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$1")
    [ -n "$ir" ] || die "no \"Collected\" line in $1"
    echo "$ir"
}

# cg_run TAG MODE PORT ROUTES N [client.py args...]: nginx in MODE as one
# process under callgrind, twice: exactly N, then 3N requests of the
# client; sets IR[TAG,N], IR[TAG,3N], CG_N[TAG] and PER[TAG], the cost of
# one request, (Ir(3N) - Ir(N)) / 2N.  NENV is nginx's environment.
cg_run() {
    local tag=$1 mode=$2 port=$3 routes=$4 n0=$5 n dir

    shift 5
    for n in "$n0" "$((3 * n0))"; do
        dir=$OUT/callgrind/$tag/$n
        say "bench: callgrind: $tag, $n requests"

        conf "$mode" "$port" "$dir" off "$routes"
        start "$dir" "$port" "${VG[@]}" \
            --callgrind-out-file="$dir/callgrind.out"
        taskset -c "$CPU1" "${CLIENT[@]}" --port "$port" -n "$n" \
            --conns "$CONNS" "$@" > "$dir/client.log" 2>&1 \
            || { cat "$dir/client.log" >&2; die "$tag: client failed"; }
        stop "$NPID"

        IR[$tag,$n]=$(collected "$dir/valgrind.log")
    done

    CG_N[$tag]=$n0
    PER[$tag]=$(( (IR[$tag,$((3 * n0))] - IR[$tag,$n0]) / (2 * n0) ))
}

# cg_out TAG N: the profile of TAG's run of N requests
cg_out() {
    echo "$OUT/callgrind/$1/$2/callgrind.out"
}

# cgdiff CONFIG BASE [args]: Ir per request by function (bench/cgdiff.py);
# BASE "-": CONFIG alone
cgdiff() {
    local cfg=$1 base=$2 n=${CG_N[$1]}
    local -a b=()

    shift 2
    if [ "$base" != - ]; then
        [ "${CG_N[$base]}" = "$n" ] || die "cgdiff: $cfg and $base differ in N"
        b=(--base "$(cg_out "$base" "$n")" "$(cg_out "$base" $((3 * n)))"
           --base-name "$base")
    fi
    python3 "$HERE/cgdiff.py" "$n" "$(cg_out "$cfg" "$n")" \
        "$(cg_out "$cfg" $((3 * n)))" "${b[@]+"${b[@]}"}" \
        --object "$(basename "$SO")" "$@"
}

# ---------------------------------------------------------------- numbers

# kv KEY TEXT: the value of KEY=value in TEXT
kv() {
    sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<< "$2" | head -1
}

# stats "v1 v2 ..." [DECIMALS]: median min max
stats() {
    tr ' ' '\n' <<< "$1" | sed '/^$/d' | sort -g | awk -v d="${2:-0}" '
        { v[NR] = $1 }
        END {
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            f = "%." d "f"
            printf f " " f " " f "\n", m, v[1], v[NR]
        }'
}

# fmt NUMBER: with thousands separators
fmt() {
    sed -e ':a' -e 's/\([0-9]\)\([0-9]\{3\}\)\($\|,\)/\1,\2\3/' -e 'ta' \
        <<< "$1"
}

# verdict VALUE TARGET: PASS when VALUE <= TARGET (integers)
verdict() {
    if [ "$1" -le "$2" ]; then echo PASS; else echo FAIL; fi
}

# verdict_f VALUE TARGET [MISS]: the same for decimals; MISS, default
# FAIL, is the word for a miss
verdict_f() {
    awk -v a="$1" -v t="$2" -v m="${3:-FAIL}" \
        'BEGIN { print (a <= t) ? "PASS" : m }'
}

# check VERDICT...: a target missed makes the exit status 1
check() {
    local v

    for v in "$@"; do
        [ "$v" = PASS ] || FAILED=1
    done
}
