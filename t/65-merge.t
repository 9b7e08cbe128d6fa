#!/usr/bin/perl

# playarr_metrics_merge (docs/app-integration.md "Merge"): an
# unmodified Playarr keeps its business metrics in its own prom-client
# registry and serves them at its own /metrics; nginx fetches them by a
# subrequest at each scrape and serves them with its own families.
#
# The app is t/js/app-metrics.js: prom-client (t/js/package-lock.json,
# installed by `npm ci --prefix t/js`, which `make test` runs) with every
# family of docs/playarr/metrics.json, label values holding '"', '\' and
# a newline, its own values for the four HTTP families (nginx's win), and
# a switch for what /metrics answers: 404, 500, an HTML page, OpenMetrics
# ("# EOF"), nothing at all (proxy_read_timeout 2s), 17 MiB; or the app
# is dead.  The app's token reaches the subrequest through an `include`
# of a root-only file (mode 0600), as docs/app-integration.md advises.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::INET;
use JSON::PP;
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);
use PlayarrTest;

PlayarrTest::need_module();

my $REPO = PlayarrTest::repo();
my $SCHEMA = "$REPO/docs/playarr/metrics.json";
my $APP = "$FindBin::Bin/js/app-metrics.js";
my $NODE_MODULES = "$FindBin::Bin/js/node_modules";
my $APP_TOKEN = 'app-token-' . join '', map { int rand 10 } 1 .. 16;
my $TRICKY = qq{quote " backslash \\ newline \n end};

my @BUILTIN = qw(playarr_http_requests_total
                 playarr_http_request_duration_seconds
                 playarr_authentication_failures_total
                 playarr_managed_errors_total);

if (!-e "$NODE_MODULES/prom-client/package.json") {
    my $out = `npm ci --prefix '$FindBin::Bin/js' --no-audit --no-fund \\
               --loglevel=error 2>&1`;
    plan skip_all => "npm ci --prefix t/js failed (no registry?): $out"
        if $? != 0;
}

my $schema = decode_json(do {
    open my $fh, '<', $SCHEMA or die "$SCHEMA: $!";
    local $/;
    <$fh>;
});
my %APP_FAMILY = map { $_->{name} => $_->{type} } values %{ $schema->{metrics} };

# app bodies for the edge cases, served as files
my %FIXTURE = (
    # families named as nginx's samples or self metrics (dropped); a
    # summary, timestamps, NaN, -Inf, an escaped label value (served)
    collide => <<'BODY',
# HELP playarr_metrics_series An app's family named as a self metric
# TYPE playarr_metrics_series gauge
playarr_metrics_series{family="app"} 4242
playarr_http_request_duration_seconds_count 4242
# HELP playarr_app_summary A summary of the app's
# TYPE playarr_app_summary summary
playarr_app_summary{quantile="0.5"} 1.5
playarr_app_summary{quantile="0.99"} NaN
playarr_app_summary_sum 12 1700000000000
playarr_app_summary_count 8
playarr_app_untyped{path="a\\b"} -Inf
BODY
    duplicate => "playarr_app_x 1\nplayarr_app_x 2\n",
    exemplar => "# TYPE playarr_app_c counter\n"
                . "playarr_app_c_total 1 # {trace_id=\"1\"} 1\n",
    escape => "playarr_app_e{a=\"\\q\"} 1\n",
    twice => "# TYPE playarr_app_t gauge\n# TYPE playarr_app_t gauge\n",
    reserved => "playarr_app_r{__name__=\"x\"} 1\n",
);

# the fuzzer's seeds (t/fuzz/corpus/merge/): what the parser accepts must
# pass promtool and prometheus_client once merged
my %SEED_OK = map { $_ => 1 } qw(untyped summary histogram help prom-client);

for my $f (glob "$FindBin::Bin/fuzz/corpus/merge/*") {
    my ($name) = $f =~ m{([^/]+)$};
    open my $fh, '<', $f or die "$f: $!";
    local $/;
    $FIXTURE{"seed-$name"} = <$fh>;
}

my $FIXTURE_LOCATIONS = join '', map { <<"LOC" } sort keys %FIXTURE;
        location = /fixture/$_ {
            playarr_metrics_export;
            playarr_metrics_auth off;
            playarr_metrics_merge /_fixture/$_;
        }

        location = /_fixture/$_ {
            internal;
            proxy_pass http://127.0.0.1:%%PORT3%%/$_;
        }
LOC

my $t = PlayarrTest->new(http => <<"EOF");
    playarr_metrics_zone metrics:4m;
    playarr_metrics_token_file %%DIR%%/metrics.token;
    playarr_metrics_schema $SCHEMA;

    server {
        listen 127.0.0.1:%%PORT%%;

        location = /metrics {
            playarr_metrics_export;
            playarr_metrics_merge /_playarr_app_metrics;
        }

        location = /metrics/json {
            playarr_metrics_export json;
            playarr_metrics_auth off;
            playarr_metrics_merge /_playarr_app_metrics_json;
        }

        location = /_playarr_app_metrics_json {
            internal;
            proxy_pass http://127.0.0.1:%%PORT2%%/metrics/json;
            proxy_read_timeout 2s;
        }

        location = /metrics/alone {
            playarr_metrics_export;
        }

        location = /push {
            playarr_metrics_push;
        }

        location = /_playarr_app_metrics {
            internal;
            proxy_pass http://127.0.0.1:%%PORT2%%/metrics;
            proxy_pass_request_headers off;
            include %%DIR%%/app-token.conf;
            proxy_set_header Accept "text/plain;version=0.0.4";
            proxy_connect_timeout 1s;
            proxy_read_timeout 2s;
        }

        location /api/ {
            return 200 "ok\\n";
        }

        # app bodies written by the test, served as files by PORT3
$FIXTURE_LOCATIONS
    }

    server {
        listen 127.0.0.1:%%PORT3%%;
        default_type text/plain;
        root %%DIR%%/app;
        playarr_metrics off;
    }
EOF

mkdir $t->path('app') or die "mkdir: $!";
$t->write_file("app/$_", $FIXTURE{$_}) for keys %FIXTURE;

$t->write_file('app-token.conf',
               qq{proxy_set_header Authorization "Bearer $APP_TOKEN";\n},
               0600);

my $app_pid;

sub app_start {
    my $port = $t->port(2);

    $app_pid = fork // die "fork: $!";

    if ($app_pid == 0) {
        $ENV{NODE_PATH} = $NODE_MODULES;
        open STDOUT, '>', $t->path('app.log');
        open STDERR, '>&', \*STDOUT;
        exec 'node', $APP, $port, $APP_TOKEN, $SCHEMA or exit 127;
    }

    for (1 .. 100) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                      Timeout => 1);
        return 1 if $s;
        sleep 0.1;
    }

    die "the app did not start: " . ($t->read_file('app.log') // '');
}

sub app_stop {
    return unless $app_pid;
    kill 'TERM', $app_pid;
    waitpid $app_pid, 0;
    undef $app_pid;
}

END { app_stop() }

sub app {
    my ($method, $path) = @_;
    return $t->request($method, $path, port => $t->port(2));
}

sub mode {
    my ($m) = @_;
    is(app('POST', "/mode/$m")->{status}, 200, "app answers $m from now on");
}

$t->start;
app_start();

my $token = $t->read_token('metrics.token');

# nginx's own series: 5 requests, and one schema family pushed to
my $N = 5;
is($t->get('/api/titles')->{status}, 200, 'a request for nginx to count')
    for 1 .. $N;

my $push = $t->request('POST', '/push',
    headers => { Authorization => "Bearer $token",
                 'Content-Type' => 'application/json' },
    body => encode_json({ metric => 'active_users', op => 'set',
                          value => 7 }));
is($push->{status}, 204, 'nginx has a series of playarr_active_users');

sub builtin_ours {
    my ($m, $what) = @_;

    is(PlayarrTest::sample($m, 'playarr_http_requests_total',
                           { endpoint => 'unknown_endpoint',
                             status_code => 200, username => 'anonymous' }),
       $N, "$what: nginx's playarr_http_requests_total");

    for my $f (@BUILTIN) {
        my @v = grep { $_->[1] == 4242 || $_->[1] == 4243 }
                PlayarrTest::samples($m, $f);
        ok(!@v, "$what: no value of the app's in $f");
    }
}

sub once_per_family {
    my ($body, $what) = @_;
    my (%help, %type);

    $help{$1}++ while $body =~ /^# HELP (\S+)/mg;
    $type{$1}++ while $body =~ /^# TYPE (\S+)/mg;

    my @twice = grep { $help{$_} > 1 || ($type{$_} // 0) > 1 }
                keys %help;
    ok(!@twice, "$what: one HELP and TYPE per family") or diag("@twice");
}

# --- a good merge ---

{
    my $body = $t->metrics(token => $token, name => 'merged');
    my $m = PlayarrTest::parse_metrics($body);

    is(PlayarrTest::sample($m, 'playarr_metrics_merge_up', {}), 1,
       'merge_up 1');

    builtin_ours($m, 'merged');
    once_per_family($body, 'merged');

    is(PlayarrTest::sample($m, 'playarr_active_users', {}), 7,
       'a family nginx has series of: nginx\'s value');

    is(PlayarrTest::sample($m, 'playarr_main_titles_count',
                           { media_type => 'app' }),
       4242, "the app's gauge");
    is(PlayarrTest::sample($m, 'playarr_main_titles_count',
                           { media_type => $TRICKY }),
       4243, "the app's gauge, a label value with \", \\ and a newline");
    is(PlayarrTest::sample($m, 'playarr_stream_requests_total',
                           { user => 'app' }),
       4242, "the app's counter");
    is(PlayarrTest::sample($m, 'playarr_job_duration_seconds_count',
                           { job_type => $TRICKY }),
       2, "the app's histogram: _count");
    is(PlayarrTest::sample($m, 'playarr_job_duration_seconds_bucket',
                           { job_type => 'app', le => 10 }),
       2, "the app's histogram: a bucket");
    is(PlayarrTest::sample($m, 'playarr_job_duration_seconds_sum',
                           { job_type => 'app' }),
       3.7, "the app's histogram: _sum");

    my $types = PlayarrTest::metric_types($body);
    my @missing = grep { !defined $types->{$_} } sort keys %APP_FAMILY;
    ok(!@missing, 'every family of metrics.json is served') or diag("@missing");

    my @series_less = grep {
        my $f = $_;
        !grep { /^\Q$f\E(?:_bucket|_sum|_count)?\{|^\Q$f\E(?:_sum|_count)? /
              } split /\n/, $body
    } grep { my $f = $_; !grep { $_ eq $f } @BUILTIN } sort keys %APP_FAMILY;
    ok(!@series_less, "every family has series (the app's or nginx's)")
        or diag("@series_less");

    my @st = stat $t->path('app-token.conf');
    ok(($st[2] & 07777) == 0600 && $st[4] == $<,
       "the app's token: a file of the test's user (root), mode 0600");

    my $state = PlayarrTest::json_body(app('GET', '/state'));
    is($state->{authorization}, "Bearer $APP_TOKEN",
       "the app got its token from the included file");
    is($state->{accept}, 'text/plain;version=0.0.4',
       'the subrequest asks for text 0.0.4');

    my $alone = $t->metrics(token => $token, path => '/metrics/alone',
                            name => 'without merge');
    unlike($alone, qr/4242|playarr_metrics_merge_up/,
           'a location without playarr_metrics_merge: nginx\'s only');

    my $head = $t->head('/metrics',
                        headers => { Authorization => "Bearer $token" });
    is($head->{status}, 200, 'HEAD: 200, no subrequest needed');
}

# --- /metrics/json: prom-client's getMetricsAsJSON(), merged the same way ---

my $COOKIE = { Cookie => 'access_token=session-of-the-ui' };

sub json_merged {
    my ($what, %opt) = @_;
    my $r = $t->get('/metrics/json', headers => $opt{headers} // $COOKIE);

    is($r->{status}, 200, "$what: 200");
    my $doc = eval { JSON::PP->new->utf8->decode($r->{body}) };
    ok(ref $doc eq 'ARRAY', "$what: a JSON array") or return {};

    my (%f, @bad);

    for my $fam (@$doc) {
        push @bad, $fam->{name} // '?'
            unless ref $fam eq 'HASH'
                   && join(',', sort keys %$fam)
                      eq 'aggregator,help,name,type,values'
                   && ref $fam->{values} eq 'ARRAY'
                   && !grep { ref $_ ne 'HASH' || !exists $_->{value}
                              || ref $_->{labels} ne 'HASH' }
                      @{ $fam->{values} };
        push @bad, "$fam->{name} twice" if $f{ $fam->{name} }++;
        $f{ $fam->{name} } = $fam;
    }

    ok(!@bad, "$what: prom-client's shape, each family once") or diag("@bad");

    return \%f;
}

sub json_value {
    my ($fam, $labels, $metric) = @_;
    my $want = JSON::PP->new->canonical->encode($labels);

    for my $v (@{ $fam->{values} // [] }) {
        next if defined $metric && ($v->{metricName} // '') ne $metric;
        return $v->{value}
            if JSON::PP->new->canonical->encode($v->{labels}) eq $want;
    }

    return undef;
}

{
    my $f = json_merged('json merged');
    my $app = decode_json(app_json()->{body});
    my %app = map { $_->{name} => $_ } @$app;

    is(json_value($f->{playarr_metrics_merge_up}, {}), 1, 'json: merge_up 1');
    is(json_value($f->{playarr_http_requests_total},
                  { endpoint => 'unknown_endpoint', status_code => '200',
                    username => 'anonymous' }),
       $N, "json: nginx's playarr_http_requests_total");
    ok(!grep({ $_->{value} == 4242 }
             @{ $f->{playarr_http_requests_total}{values} }),
       "json: no value of the app's in playarr_http_requests_total");
    is(json_value($f->{playarr_active_users}, {}), 7,
       "json: a family nginx has series of: nginx's value");
    is(json_value($f->{playarr_main_titles_count}, { media_type => $TRICKY }),
       4243, "json: the app's gauge, a tricky label value");
    is(json_value($f->{playarr_job_duration_seconds}, { job_type => 'app' },
                  'playarr_job_duration_seconds_count'),
       2, "json: the app's histogram");

    my @differ = grep {
        my $n = $_;
        !grep({ $_ eq $n } @BUILTIN) && $n ne 'playarr_active_users'
        && JSON::PP->new->canonical->encode($f->{$n} // {})
           ne JSON::PP->new->canonical->encode($app{$n})
    } sort keys %app;
    ok(!@differ, "json: the app's families served as the app wrote them")
        or diag("@differ");

    my $state = PlayarrTest::json_body(app('GET', '/state'));

    my $nocookie = json_merged('json without the session cookie',
                               headers => {});
    is(json_value($nocookie->{playarr_metrics_merge_up}, {}), 0,
       'json: the app refuses (401): merge_up 0');
    ok(!$nocookie->{playarr_main_titles_count}
       || !@{ $nocookie->{playarr_main_titles_count}{values} },
       "json: then no series of the app's");
}

sub app_json {
    return $t->request('GET', '/metrics/json', port => $t->port(2),
                       headers => $COOKIE);
}

# --- edge cases, from files ---

{
    my $body = $t->metrics(path => '/fixture/collide', name => 'collide');
    my $m = PlayarrTest::parse_metrics($body);

    is(PlayarrTest::sample($m, 'playarr_metrics_merge_up', {}), 1,
       'collide: merge_up 1');
    unlike($body, qr/ 4242$/m,
           "collide: no family of the app's named as nginx's samples");
    is(PlayarrTest::sample($m, 'playarr_app_summary', { quantile => 0.5 }),
       1.5, "collide: the app's summary");
    like($body, qr/^playarr_app_summary_sum 12 1700000000000$/m,
         'collide: the timestamp kept');
    like($body, qr/^playarr_app_summary\{quantile="0.99"\} NaN$/m,
         'collide: NaN kept');
    like($body, qr/^playarr_app_untyped\{path="a\\\\b"\} -Inf$/m,
         'collide: untyped, -Inf, the escape kept');

    for my $name (qw(duplicate exemplar escape twice reserved)) {
        my $b = $t->metrics(path => "/fixture/$name", name => $name);
        is(PlayarrTest::sample($b, 'playarr_metrics_merge_up', {}), 0,
           "$name: a failed merge");
        unlike($b, qr/playarr_app_/, "$name: nothing of the app's");
    }
}

for my $name (sort grep { s/^seed-// } keys %{{ %FIXTURE }}) {
    my $b = $t->metrics(path => "/fixture/seed-$name", name => "seed $name");
    is(PlayarrTest::sample($b, 'playarr_metrics_merge_up', {}),
       $SEED_OK{$name} ? 1 : 0,
       "seed $name: " . ($SEED_OK{$name} ? 'merged' : 'refused'));
}

# --- failed merges: nginx's families, merge_up 0, nothing of the app ---

sub failed {
    my ($what, %opt) = @_;
    my $hits = ($app_pid ? PlayarrTest::json_body(app('GET', '/state'))->{hits}
                         : 0);
    my $t0 = time;
    my $body = $t->metrics(token => $token, name => $what);
    my $took = time - $t0;
    my $m = PlayarrTest::parse_metrics($body);

    is(PlayarrTest::sample($m, 'playarr_metrics_merge_up', {}), 0,
       "$what: merge_up 0");
    unlike($body, qr/ 424[23]$/m, "$what: no series of the app's");
    unlike($body, qr/playarr_app_/, "$what: no family of the app's");
    builtin_ours($m, $what);
    once_per_family($body, $what);
    like($body, qr/^playarr_metrics_build_info\{/m,
         "$what: the self metrics");
    ok($took < ($opt{max} // 3), "$what: the scrape took ${\ sprintf '%.2f', $took}s");

    if ($app_pid) {
        my $now = PlayarrTest::json_body(app('GET', '/state'))->{hits};
        is($now, $hits + 1, "$what: the app was asked once");
    }
}

$t->allow_log(qr/playarr_metrics_merge/);

my %why = (
    404 => qr/failed: 0, status 404/,
    500 => qr/failed: 0, status 500/,
    html => qr/failed: line 1: invalid metric name/,
    openmetrics => qr/failed: line \d+: OpenMetrics, not text 0\.0\.4/,
    big => qr/failed: body larger than 16 MiB/,
);

for my $m (qw(404 500 html openmetrics big)) {
    my $mark = $t->log_mark;

    mode($m);
    failed("app answers $m");
    like($t->log_since($mark), qr/playarr_metrics_merge.*$why{$m}/,
         "app answers $m: the warning says why")
        or diag($t->log_since($mark));

    next unless $m eq '500';

    my $f = json_merged('json, app answers 500');
    is(json_value($f->{playarr_metrics_merge_up}, {}), 0,
       'json, app answers 500: merge_up 0');
    is(json_value($f->{playarr_http_requests_total},
                  { endpoint => 'unknown_endpoint', status_code => '200',
                    username => 'anonymous' }),
       $N, "json, app answers 500: nginx's families");
}

mode('hang');
failed('app hangs (proxy_read_timeout 2s)', max => 5);
like($t->error_log_text, qr/upstream timed out/, 'the timeout is logged');

mode('ok');
my $back = $t->metrics(token => $token, name => 'app back');
is(PlayarrTest::sample($back, 'playarr_metrics_merge_up', {}), 1,
   'the app back: merge_up 1');

app_stop();
failed('app is dead');

$t->stop;

# --- the directive needs playarr_metrics_export ---

{
    my $bad = PlayarrTest->new(http => <<'EOF');
    playarr_metrics_zone metrics:1m;
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /x {
            playarr_metrics_merge /_app;
        }
    }
EOF
    my ($rc, $out) = $bad->test_config;
    isnt($rc, 0, 'playarr_metrics_merge without playarr_metrics_export: '
                 . 'nginx -t fails');
    my $line = $bad->conf_line(qr/playarr_metrics_merge/);
    like($out, qr/\[emerg\]\ .*"playarr_metrics_merge"\ needs
                  \ "playarr_metrics_export".*\ in\ \S+nginx\.conf:$line\b/x,
         'and says why, and where');
}

done_testing;
