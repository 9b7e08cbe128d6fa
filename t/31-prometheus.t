#!/usr/bin/perl

# A real Prometheus: Debian's prometheus server scrapes the module
# every second, one job with the token from a credentials_file, one with a
# wrong token.  After known traffic its HTTP API shows up 1 and 0, the exact
# number of requests sent, a latency quantile and the gauges pushed.  The
# same Prometheus loads docs/prometheus/alerts.yml (every rule evaluates
# without error, the provider expiry alert fires, Playarr's "no expiration
# date" value does not) and runs every query of
# docs/grafana/playarr-dashboard.json, Grafana variables substituted: none
# may fail.  Prometheus is killed at the end, also on failure.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Copy qw(copy);
use JSON::PP;
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);
use PlayarrTest;

my $PROMETHEUS = $ENV{PROMETHEUS_BIN} || '/usr/bin/prometheus';
my $REPO = PlayarrTest::repo();
my $SCHEMA = "$REPO/docs/playarr/metrics.json";
my $ROUTES = "$REPO/docs/playarr-routes.conf";
my $RULES = "$REPO/docs/prometheus/alerts.yml";
my $DASHBOARD = "$REPO/docs/grafana/playarr-dashboard.json";

PlayarrTest::need_module();
plan skip_all => "no $PROMETHEUS (apt-get install prometheus)"
    unless -x $PROMETHEUS;

my $started = time;

my $t = PlayarrTest->new(http => <<"EOF");
    playarr_metrics_zone playarr:1m;
    playarr_metrics_token_file %%DIR%%/metrics.token;
    playarr_metrics_schema $SCHEMA;
    include $ROUTES;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        # the user from a request header: enough for a test
        playarr_metrics_username \$http_x_user;

        location = /metrics { playarr_metrics_export; }
        location = /push { playarr_metrics_push; }

        location = /api/auth/login { return 401; }
        location = /api/healthcheck { return 503; }
        location / { return 200 "ok\\n"; }
    }
EOF

$t->start;

my $TOKEN = $t->read_token('metrics.token');
$t->scrape_setup(token => $TOKEN);
my $PPORT = $t->port(3);
my $PROM_DIR = $t->path('prometheus');
my $prom_pid;

mkdir $PROM_DIR or die "mkdir $PROM_DIR: $!";


# --- Prometheus --------------------------------------------------------------

# nginx's token file is 0600 for the worker user: root reads it; anyone
# else gets a copy, as docs/prometheus.md tells users to make.
my $cred = $t->path('metrics.token');

unless (-r $cred) {
    $cred = "$PROM_DIR/playarr.token";
    copy($t->path('metrics.token'), $cred) or die "copy: $!";
}

my $wrong = "$PROM_DIR/wrong.token";
open my $wfh, '>', $wrong or die "$wrong: $!";
print {$wfh} ('0' x 64), "\n";
close $wfh;
chmod 0600, $wrong;

my $target = '127.0.0.1:' . $t->port;

open my $cfh, '>', "$PROM_DIR/prometheus.yml" or die $!;
print {$cfh} <<"EOF";
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s

rule_files:
  - $RULES

scrape_configs:
  - job_name: right
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials_file: $cred
    static_configs:
      - targets: ['$target']

  - job_name: wrong
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials_file: $wrong
    static_configs:
      - targets: ['$target']
EOF
close $cfh;

sub prom_log {
    open my $fh, '<', "$PROM_DIR/prometheus.log" or return '';
    local $/;
    my $log = <$fh>;
    return $log;
}

sub stop_prometheus {
    return unless $prom_pid;

    kill 'TERM', $prom_pid;
    my $deadline = time + 10;
    while (time < $deadline) {
        last if waitpid($prom_pid, WNOHANG) == $prom_pid;
        sleep 0.1;
    }
    if (kill 0, $prom_pid) {
        kill 'KILL', $prom_pid;
        waitpid $prom_pid, 0;
    }
    undef $prom_pid;
}

END {
    stop_prometheus();
}

$prom_pid = fork // die "fork: $!";

if ($prom_pid == 0) {
    open STDIN, '<', '/dev/null';
    open STDOUT, '>', "$PROM_DIR/prometheus.log";
    open STDERR, '>&', \*STDOUT;
    exec $PROMETHEUS, "--config.file=$PROM_DIR/prometheus.yml",
        "--storage.tsdb.path=$PROM_DIR/data",
        "--web.listen-address=127.0.0.1:$PPORT",
        "--web.console.templates=$PROM_DIR/consoles",
        "--web.console.libraries=$PROM_DIR/console_libraries"
        or POSIX::_exit(127);
}

sub prom_get {
    my ($path) = @_;
    my $r = $t->request('GET', $path, port => $PPORT);

    return ($r, PlayarrTest::json_body($r));
}

# polls $code until it returns true, or the deadline; the last value
sub poll {
    my ($code, $timeout) = @_;
    my $deadline = time + ($timeout || 30);
    my $v;

    while (1) {
        $v = $code->();
        return $v if $v;
        return $v if time > $deadline;
        die "prometheus exited:\n" . prom_log()
            if waitpid($prom_pid, WNOHANG) == $prom_pid;
        sleep 0.2;
    }
}

sub uri_escape {
    my ($s) = @_;
    $s =~ s/([^A-Za-z0-9\-._~])/sprintf('%%%02X', ord $1)/ge;
    return $s;
}

# an instant query: (status, error, [ [labels, value], ... ])
sub query {
    my ($expr, $path) = @_;
    my ($r, $j) = prom_get(($path || '/api/v1/query') . '?query='
                           . uri_escape($expr));

    return ('http ' . $r->{status}, $r->{body}, [])
        unless $j && $j->{status};
    return ($j->{status}, $j->{error}, [])
        unless $j->{status} eq 'success';

    my $d = $j->{data};
    my @res = $d->{resultType} eq 'scalar'
        ? ([{}, $d->{result}[1]])
        : map { [$_->{metric}, $_->{value}[1]] } @{ $d->{result} };

    return ('success', undef, \@res);
}

# the one value of an instant query, undef when empty
sub value {
    my ($expr) = @_;
    my ($st, $err, $res) = query($expr);

    die "query $expr: $st: " . ($err // '') . "\n" unless $st eq 'success';
    return @$res ? $res->[0][1] : undef;
}

sub value_is {
    my ($expr, $want, $name, $timeout) = @_;
    my $got;

    poll(sub {
        $got = value($expr);
        return defined $got && $got == $want;
    }, $timeout);

    is($got, $want, $name);
}

my $ready = poll(sub {
    my $r = $t->request('GET', '/-/ready', port => $PPORT, timeout => 2);
    return $r->{status} == 200;
}, 30);

ok($ready, "prometheus ready on 127.0.0.1:$PPORT")
    or BAIL_OUT("prometheus did not start:\n" . prom_log());

diag(sprintf 'prometheus ready after %.1fs', time - $started);


# --- the two jobs ------------------------------------------------------------

value_is('up{job="right"}', 1, 'up{job="right"} == 1: token from the'
         . ' credentials_file');
value_is('up{job="wrong"}', 0, 'up{job="wrong"} == 0: wrong token');

my (undef, $targets) = prom_get('/api/v1/targets');
my ($wrong_t) = grep { $_->{labels}{job} eq 'wrong' }
    @{ $targets->{data}{activeTargets} || [] };

like($wrong_t && $wrong_t->{lastError}, qr/401/,
     'the wrong job fails with 401');


# --- known traffic -----------------------------------------------------------

# one batch: 20 requests, 3 of them 401 and 2 of them 503
sub batch {
    my @users = qw(alice bob carol);
    my $n = 0;

    for my $i (1 .. 10) {
        $t->get("/api/titles/tt$i", headers => { 'X-User' => $users[$i % 3] });
        $n++;
    }
    for (1 .. 4) {
        $t->get('/api/titles', headers => { 'X-User' => 'alice' });
        $n++;
    }
    for (1 .. 3) {
        $t->request('POST', '/api/auth/login', body => '{}');
        $n++;
    }
    for (1 .. 2) {
        $t->get('/api/healthcheck');
        $n++;
    }
    $t->get('/no/such/route');
    $n++;

    return $n;
}

my $N = batch();

value_is('sum(playarr_http_requests_total)', $N,
         "first batch: sum(playarr_http_requests_total) == $N");

# the second batch lands between scrapes: rate() sees it
$N += batch();

$t->push_ok([
    { metric => 'provider_active', op => 'set',
      labels => { provider_id => 'p1' }, value => 1 },
    { metric => 'provider_active', op => 'set',
      labels => { provider_id => 'p2' }, value => 1 },
    { metric => 'provider_expiration_days', op => 'set',
      labels => { provider_id => 'p1' }, value => 3 },
    { metric => 'provider_expiration_days', op => 'set',
      labels => { provider_id => 'p2' }, value => -999999 },
    { metric => 'provider_active_connections', op => 'set',
      labels => { provider_id => 'p1' }, value => 2 },
    { metric => 'provider_max_connections', op => 'set',
      labels => { provider_id => 'p1' }, value => 4 },
    { metric => 'main_titles_count', op => 'set',
      labels => { media_type => 'movies' }, value => 1234 },
    { metric => 'active_users', op => 'set', value => 3 },
    { metric => 'job_executions', op => 'inc',
      labels => { job_type => 'sync', status => 'success' } },
    { metric => 'job_duration', op => 'observe',
      labels => { job_type => 'sync' }, value => 42 },
    { metric => 'stream_requests', op => 'inc',
      labels => { user => 'alice' }, value => 5 },
    { metric => 'stream_request_duration', op => 'observe',
      labels => { media_type => 'movies' }, value => 0.3 },
], 'provider health, content, jobs, streams');

value_is('sum(playarr_http_requests_total)', $N,
         "sum(playarr_http_requests_total) == $N requests sent");
value_is('sum(playarr_authentication_failures_total)', 6,
         'sum(playarr_authentication_failures_total) == 6');
value_is('sum(playarr_http_requests_total{status_code="503"})', 4,
         '4 answers 503');
value_is('sum(playarr_http_requests_total{endpoint="/api/titles/:title_key"})',
         20, '20 requests on /api/titles/:title_key');
value_is('playarr_main_titles_count{job="right",media_type="movies"}', 1234,
         'pushed gauge read back: playarr_main_titles_count');
value_is('playarr_provider_expiration_days{job="right",provider_id="p1"}', 3,
         'pushed gauge read back: playarr_provider_expiration_days');

# scrapes and pushes are not requests: two more scrapes, the same count
my $ts0 = value('timestamp(up{job="right"})');
poll(sub { value('timestamp(up{job="right"})') >= $ts0 + 2 }, 10);
is(value('sum(playarr_http_requests_total)'), $N,
   'scrapes and pushes are not counted');

my $q = 'histogram_quantile(0.95, sum by (le) '
        . '(rate(playarr_http_request_duration_seconds_bucket[1m])))';
my $p95 = poll(sub {
    my $v = value($q);
    return defined $v && $v =~ /^[0-9.e+-]+$/i ? $v : undef;
}, 15);

ok(defined $p95, "histogram_quantile over the duration buckets: $q")
    or diag('got ' . ($p95 // 'nothing'));
ok(defined $p95 && $p95 > 0 && $p95 <= 0.005,
   'p95 in the first bucket (answers made by nginx itself)')
    or diag($p95);

my ($st, $err, $res) = query('histogram_quantile(0.95, sum by (endpoint, le) '
    . '(rate(playarr_http_request_duration_seconds_bucket[1m])))');
my %eps = map { $_->[0]{endpoint} => $_->[1] } @$res;

ok(exists $eps{'/api/titles/:title_key'}, 'p95 by endpoint')
    or diag(explain \%eps);


# --- alert rules -------------------------------------------------------------

my $rules = poll(sub {
    my (undef, $j) = prom_get('/api/v1/rules');
    my @rules = map { @{ $_->{rules} } } @{ $j->{data}{groups} || [] };

    # every rule evaluated at least twice since the pushes
    return (@rules && !grep { !$_->{lastEvaluation}
                              || $_->{lastEvaluation} =~ /^0001/ } @rules)
        ? \@rules : undef;
}, 15);

ok($rules && @$rules >= 10, 'alerts.yml loaded: ' . scalar(@{ $rules || [] })
   . ' rules');

for my $r (@{ $rules || [] }) {
    is($r->{health}, 'ok', "rule $r->{name} evaluates")
        or diag($r->{lastError});
}

my $alerts = poll(sub {
    my (undef, $j) = prom_get('/api/v1/alerts');
    my @a = grep { $_->{labels}{alertname} eq 'PlayarrProviderExpiringSoon' }
        @{ $j->{data}{alerts} || [] };
    return @a ? $j->{data}{alerts} : undef;
}, 15) || [];

my %firing;
for my $a (@$alerts) {
    push @{ $firing{ $a->{labels}{alertname} } },
        $a->{labels}{provider_id} // $a->{labels}{job} // '';
}

is_deeply([sort @{ $firing{PlayarrProviderExpiringSoon} || [] }], ['p1'],
          'PlayarrProviderExpiringSoon fires for p1 only, not for -999999');
ok(!$firing{PlayarrProviderExpired}, 'no PlayarrProviderExpired');
ok(!$firing{PlayarrProviderInactive}, 'no PlayarrProviderInactive');


# --- the Grafana dashboard ---------------------------------------------------

open my $dfh, '<', $DASHBOARD or die "$DASHBOARD: $!";
my $dash = eval { JSON::PP->new->decode(do { local $/; <$dfh> }) };
close $dfh;

ok($dash, 'the dashboard is JSON') or diag($@);
$dash ||= {};

my %vars = map { $_->{name} => $_ } @{ $dash->{templating}{list} || [] };

is($vars{DS_PROMETHEUS} && $vars{DS_PROMETHEUS}{type}, 'datasource',
   'datasource variable DS_PROMETHEUS');
is($vars{DS_PROMETHEUS} && $vars{DS_PROMETHEUS}{query}, 'prometheus',
   'of type prometheus');

sub grafana_subst {
    my ($expr) = @_;
    my %builtin = (__rate_interval => '1m', __interval => '15s',
                   __range => '5m', __range_s => '300', __range_ms => '300000',
                   __interval_ms => '15000');

    my $sub = sub {
        my ($name) = @_;
        return $builtin{$name} if exists $builtin{$name};
        return '.*' if $vars{$name};
        return undef;
    };

    $expr =~ s/\$\{(\w+)(?::\w+)?\}/$sub->($1) \/\/ "\${$1}"/ge;
    $expr =~ s/\[\[(\w+)(?::\w+)?\]\]/$sub->($1) \/\/ "[[$1]]"/ge;
    $expr =~ s/\$([A-Za-z_]\w*)/$sub->($1) \/\/ "\$$1"/ge;

    return $expr;
}

my @panels;
my @todo = @{ $dash->{panels} || [] };

while (my $p = shift @todo) {
    push @todo, @{ $p->{panels} || [] };
    push @panels, $p unless $p->{type} eq 'row';
}

cmp_ok(scalar @panels, '>=', 8, scalar(@panels) . ' panels');

my %ids;
my ($queries, $with_data, @empty) = (0, 0);
my $now = time;

for my $p (@panels) {
    ok(!$ids{ $p->{id} }++, "panel id $p->{id} unique");
    is($p->{datasource} && $p->{datasource}{uid}, '${DS_PROMETHEUS}',
       "panel \"$p->{title}\": datasource \${DS_PROMETHEUS}");

    for my $tg (@{ $p->{targets} || [] }) {
        my $expr = grafana_subst($tg->{expr});

        unlike($expr, qr/\$[A-Za-z_]|\[\[/,
               "\"$p->{title}\" $tg->{refId}: every variable known");

        my ($st, $err, $res) = query($expr);
        is($st, 'success', "\"$p->{title}\" $tg->{refId}: query runs")
            or diag("$expr\n" . ($err // ''));
        $queries++;

        if (@$res) {
            $with_data++;
        } else {
            push @empty, "$p->{title} $tg->{refId}";
        }

        next if $tg->{instant};

        my ($r, $j) = prom_get('/api/v1/query_range?query=' . uri_escape($expr)
                               . '&start=' . int($now - 120) . '&end='
                               . int($now) . '&step=5');
        is($j && $j->{status}, 'success',
           "\"$p->{title}\" $tg->{refId}: range query runs")
            or diag("$expr\n$r->{body}");
    }
}

# the variables' own queries: label_values(selector, label)
for my $v (grep { $_->{type} eq 'query' } values %vars) {
    my $def = ref $v->{query} ? $v->{query}{query} : $v->{query};
    my ($sel, $label) = $def =~ /^label_values\((.*),\s*(\w+)\)$/;

    ok($label, "variable $v->{name}: label_values()") or next;

    my ($r, $j) = prom_get("/api/v1/label/$label/values?match[]="
                           . uri_escape(grafana_subst($sel)));
    ok($j && $j->{status} eq 'success' && @{ $j->{data} },
       "variable $v->{name}: values " . join(' ', @{ $j->{data} || [] }))
        or diag($r->{body});
}

diag("dashboard: $queries queries, $with_data with data; empty: "
     . join(', ', @empty));

my %topics = (
    'request rate'          => qr/rate\(playarr_http_requests_total/,
    'error ratio'           => qr/status_code=~"5\.\."/,
    'latency by endpoint'   => qr/histogram_quantile.*by \(endpoint, le\).*playarr_http_request_duration_seconds_bucket/,
    'top users'             => qr/topk\(\d+, sum by \(username\)/,
    'auth failures'         => qr/playarr_authentication_failures_total/,
    'content counts'        => qr/playarr_main_titles_count/,
    'provider health'       => qr/playarr_provider_active\b.*|playarr_provider_expiration_days/,
    'jobs'                  => qr/playarr_job_executions_total/,
    'stream requests'       => qr/playarr_stream_requests_total/,
    'zone usage'            => qr/playarr_metrics_zone_used_bytes/,
);
my $all = join "\n", map { $_->{expr} // '' }
    map { @{ $_->{targets} || [] } } @panels;

for my $topic (sort keys %topics) {
    like($all, $topics{$topic}, "dashboard shows $topic");
}


# --- end ---------------------------------------------------------------------

stop_prometheus();
ok(!$prom_pid, 'prometheus stopped');

$t->stop;

diag(sprintf 'done in %.1fs', time - $started);

done_testing;
