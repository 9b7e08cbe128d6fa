#!/usr/bin/perl

# Recording (docs/directives.md and docs/metrics.md): the duration histogram
# (default and per-location buckets, $request_time), 499 when the client
# goes away, managed errors, authentication failures for any 401, and what
# is not recorded: "playarr_metrics off" and the module's own handlers
# (/metrics, also when it answers 401).
#
# The upstream is a small Perl HTTP server (a forked child on %%PORT2%%)
# that waits before answering: ?delay=MS, ?status=NNN, ?etype=TYPE (sent
# as X-Error-Type). It logs each request it receives, so that the test
# knows when a request reached it.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Select;
use IO::Socket::INET;
use POSIX qw(_exit);
use Test::More;
use Time::HiRes qw(time sleep);
use PlayarrTest qw(delta requests_key wait_until);

PlayarrTest::need_module();

my $REQS = 'playarr_http_requests_total';
my $DUR = 'playarr_http_request_duration_seconds';
my $AUTH = 'playarr_authentication_failures_total';
my $ERRS = 'playarr_managed_errors_total';

my @DEFAULT_LE = qw(0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 30 +Inf);

my $t = PlayarrTest->new(http => <<'EOF');
    playarr_metrics_zone playarr:2m;
    playarr_metrics_token_file %%DIR%%/metrics.token;

    playarr_metrics_route /metrics;
    playarr_metrics_route /metrics/json;
    playarr_metrics_route /api/stats;
    playarr_metrics_route /api/jobs;
    playarr_metrics_route /api/profile;
    playarr_metrics_route /api/healthcheck;
    playarr_metrics_route /api/titles/:title_key;
    playarr_metrics_route /api/tmdb/verify;
    playarr_metrics_route /api/settings/:key;
    playarr_metrics_route /api/livetv/m3u;
    playarr_metrics_route /api/livetv/epg;

    log_format timing '$playarr_metrics_endpoint $request_time';

    map $status $playarr_error_by_status {
        502      upstream_unavailable;
        default  "";
    }

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location = /scrape { playarr_metrics_export; }
        location = /metrics { playarr_metrics_export; }
        location = /metrics/json { playarr_metrics_export json; }

        # default buckets
        location /api/stats {
            proxy_pass http://127.0.0.1:%%PORT2%%;
        }

        # buckets of its own
        location /api/jobs {
            playarr_metrics_buckets 0.1 0.25 0.5 1;
            proxy_pass http://127.0.0.1:%%PORT2%%;
        }

        # the duration is $request_time
        location /api/profile {
            access_log %%DIR%%/timing.log timing;
            proxy_pass http://127.0.0.1:%%PORT2%%;
        }

        location /api/healthcheck {
            playarr_metrics off;
            return 200 "not recorded";
        }

        location /api/titles/ {
            playarr_metrics_error_type $upstream_http_x_error_type;
            proxy_pass http://127.0.0.1:%%PORT2%%;
        }

        # nothing listens on %%PORT3%%: 502
        location /api/tmdb/ {
            playarr_metrics_error_type $playarr_error_by_status;
            proxy_pass http://127.0.0.1:%%PORT3%%;
        }

        location /api/settings/ {
            return 401;
        }

        location /api/livetv/ {
            root %%DIR%%/www;
        }
    }

    # off for a whole server, on again in one location
    server {
        listen 127.0.0.1:%%PORT%%;
        server_name offsrv;
        playarr_metrics off;

        location / {
            return 200 "off";
        }
        location /api/livetv/epg {
            playarr_metrics on;
            return 200 "on again";
        }
    }
EOF

mkdir $t->path('www') or die "mkdir: $!";

# --- the slow upstream -------------------------------------------------------

my $UPS_LOG = $t->path('upstream.log');

# one connection: answers after ?delay= ms (unless nginx gives up first)
# with ?status= and ?etype= (X-Error-Type), and logs the path
sub upstream_answer {
    my ($c) = @_;

    my $req = '';
    while ($req !~ /\r\n\r\n/) {
        my $n = sysread $c, $req, 4096, length $req;
        return unless $n;
    }

    my ($path) = $req =~ m{^\S+ (\S+)};
    my %q = $path =~ /[?&]([a-z]+)=([^&]*)/g;

    if (open my $log, '>>', $UPS_LOG) {
        syswrite $log, "$path\n";
        close $log;
    }

    # waits, unless nginx gives up on the request meanwhile
    if ($q{delay}) {
        my $end = time + $q{delay} / 1000;
        while ((my $left = $end - time) > 0) {
            if (IO::Select->new($c)->can_read($left)) {
                my $n = sysread $c, my $buf, 4096;
                return unless $n;
            }
        }
    }

    my $status = $q{status} || 200;
    my $body = "upstream $path";
    my $extra = defined $q{etype} ? "X-Error-Type: $q{etype}\r\n" : '';

    syswrite $c, "HTTP/1.1 $status Whatever\r\n"
                 . "Content-Type: text/plain\r\n"
                 . "Content-Length: " . length($body) . "\r\n"
                 . "Connection: close\r\n$extra\r\n$body";
}

# PlayarrTest->start checks that every %%PORTn%% of the configuration is
# nginx's own (and picks new ports otherwise): the upstream binds its port
# once nginx runs.
$t->start;

PlayarrTest::upstream($t->port(2), \&upstream_answer);

my $token = $t->read_token('metrics.token');
my %auth = (Authorization => "Bearer $token");

# --- helpers -----------------------------------------------------------------

my $cl = PlayarrTest::Client->new($t, $t->port);

$t->scrape_setup(token => $token, path => '/scrape');

# what record() reports changed: the module's HTTP families (not the self
# metrics)
my $HTTP_FAMILIES = qr/^playarr_(?:http|authentication|managed)_/;

sub record {
    my ($method, $path, %opt) = @_;
    my $before = $t->quiet_series(client => $cl);
    my $r = $cl->req($method, $path, %opt);
    my $after = $t->quiet_series(client => $cl);

    return ($r, delta($before, $after, $HTTP_FAMILIES), $after);
}

sub K { PlayarrTest::series_key(@_) }

sub dur_key {
    my ($suffix, $ep, $le) = @_;
    my %l = (endpoint => $ep, username => 'anonymous');
    $l{le} = $le if defined $le;
    return K("${DUR}_$suffix", \%l);
}

# the le values of the buckets of one duration series, in output order
sub le_values {
    my ($body, $ep) = @_;
    return map { $_->[0]{le} }
           grep { ($_->[0]{endpoint} // '') eq $ep }
           PlayarrTest::samples($body, "${DUR}_bucket");
}

# --- a slow upstream: the buckets --------------------------------------------

{
    my ($r, $d) = record('GET', '/api/stats?delay=300');
    is($r->{status}, 200, 'slow upstream (300 ms): 200');
    is($r->{body}, 'upstream /api/stats?delay=300', 'slow upstream answered');

    is($d->{ requests_key('/api/stats', 200) }, 1, 'slow request counted once');
    is($d->{ dur_key('count', '/api/stats') }, 1, 'one observation');
    ok(!$d->{ dur_key('bucket', '/api/stats', '0.25') },
       '300 ms: not in le="0.25"');
    is($d->{ dur_key('bucket', '/api/stats', '0.5') }, 1,
       '300 ms: in le="0.5"');
    is($d->{ dur_key('bucket', '/api/stats', '+Inf') }, 1,
       '300 ms: in le="+Inf"');

    my $sum = $d->{ dur_key('sum', '/api/stats') } // 0;
    ok($sum >= 0.3 && $sum <= 0.5, "300 ms: _sum is 0.3 .. 0.5 ($sum)");

    my $body = $t->scrape('default buckets');
    is_deeply([le_values($body, '/api/stats')], \@DEFAULT_LE,
              'default buckets: the 12 documented bounds and +Inf');
}

{
    my ($r, $d) = record('GET', '/api/jobs?delay=300');
    is($r->{status}, 200, 'custom buckets, 300 ms: 200');
    ok(!$d->{ dur_key('bucket', '/api/jobs', '0.25') },
       'custom buckets, 300 ms: not in le="0.25"');
    is($d->{ dur_key('bucket', '/api/jobs', '0.5') }, 1,
       'custom buckets, 300 ms: in le="0.5"');

    ($r, $d) = record('GET', '/api/jobs');
    is($r->{status}, 200, 'custom buckets, fast: 200');
    is($d->{ dur_key('bucket', '/api/jobs', '0.1') }, 1,
       'custom buckets, fast: in le="0.1"');

    my $body = $t->scrape('custom buckets');
    is_deeply([le_values($body, '/api/jobs')], [qw(0.1 0.25 0.5 1 +Inf)],
              'playarr_metrics_buckets 0.1 0.25 0.5 1: exactly those le');

    my $m = PlayarrTest::parse_metrics($body);
    is_deeply([map { $m->{ dur_key('bucket', '/api/jobs', $_) } }
               qw(0.1 0.25 0.5 1 +Inf)],
              [1, 1, 2, 2, 2], 'custom buckets: cumulative counts');
    is($m->{ dur_key('count', '/api/jobs') }, 2, 'custom buckets: _count 2');
    is_deeply([le_values($body, '/api/stats')], \@DEFAULT_LE,
              'the other location keeps the default buckets');
}

# --- the duration is $request_time -------------------------------------------

{
    my ($r, $d) = record('GET', '/api/profile?delay=120');
    is($r->{status}, 200, '$request_time: 200');

    my $log = $t->read_file('timing.log') // '';
    my ($ep, $rt) = $log =~ /^(\S+) (\d+\.\d+)$/m;
    is($ep, '/api/profile', 'the access log has the request');

    my $sum = $d->{ dur_key('sum', '/api/profile') };
    ok(defined $sum && defined $rt && abs($sum - $rt) < 0.0015,
       '_sum equals $request_time (' . ($sum // 'none') . ' vs '
       . ($rt // 'none') . ')');
    ok(defined $rt && $rt >= 0.12, "\$request_time covers the upstream"
                                   . " wait ($rt)");
}

# --- 499: the client goes away -----------------------------------------------

{
    my $before = $t->quiet_series(client => $cl);
    my $mark = -s $UPS_LOG || 0;

    my $c = $t->connect;
    $c->write("GET /api/stats?delay=5000&abort=1 HTTP/1.1\r\n"
              . "Host: localhost\r\n\r\n");

    # the request has reached the upstream: nginx waits for it
    my $reached = wait_until(sub {
        my $s = $t->read_file('upstream.log') // '';
        index(substr($s, $mark), 'abort=1') >= 0;
    }, 10);
    ok($reached, '499: the request reached the slow upstream');

    my $t0 = time;
    $c->close;

    my $k499 = requests_key('/api/stats', 499);
    my $after;
    my $seen = wait_until(sub {
        $after = $t->quiet_series(client => $cl);
        ($after->{$k499} // 0) > ($before->{$k499} // 0);
    }, 4);

    ok($seen, '499: recorded after the client closed');
    ok(time - $t0 < 4, '499: recorded without waiting for the upstream');

    my $d = delta($before, $after, $HTTP_FAMILIES);
    is($d->{$k499}, 1, '499: status_code="499" counted once');
    is($d->{ dur_key('count', '/api/stats') }, 1, '499: one observation');
    is(scalar(grep { /^\Q$REQS\E\{/ } keys %$d), 1,
       '499: no other requests_total series changed')
        or diag(explain($d));
}

# --- managed errors ----------------------------------------------------------

{
    my ($r, $d) = record('GET', '/api/titles/tt1?status=404&etype=not_found');
    is($r->{status}, 404, 'error type from the upstream: 404');
    is($d->{ K($ERRS, { endpoint => '/api/titles/:title_key',
                        error_type => 'not_found',
                        username => 'anonymous' }) }, 1,
       'managed_errors_total{error_type="not_found"} +1');
    is($d->{ requests_key('/api/titles/:title_key', 404) }, 1,
       'the request is counted too, status 404');

    ($r, $d) = record('GET', '/api/titles/tt1?status=200&etype=validation');
    is($d->{ K($ERRS, { endpoint => '/api/titles/:title_key',
                        error_type => 'validation',
                        username => 'anonymous' }) }, 1,
       'an error type on a 200 counts as well');

    ($r, $d) = record('GET', '/api/titles/tt1?status=404');
    ok(!grep({ /^\Q$ERRS\E/ } keys %$d),
       'no error type: no managed error')
        or diag(explain($d));

    ($r, $d) = record('GET', '/api/titles/tt1?status=500&etype=');
    ok(!grep({ /^\Q$ERRS\E/ } keys %$d),
       'an empty error type: no managed error');
    is($d->{ requests_key('/api/titles/:title_key', 500) }, 1,
       'status_code="500" counted');

    ($r, $d) = record('POST', '/api/tmdb/verify');
    is($r->{status}, 502, 'nothing listening upstream: 502');
    is($d->{ K($ERRS, { endpoint => '/api/tmdb/verify',
                        error_type => 'upstream_unavailable',
                        username => 'anonymous' }) }, 1,
       'error type from a map of $status: upstream_unavailable +1');
    is($d->{ requests_key('/api/tmdb/verify', 502) }, 1, 'status_code="502"');

    $t->scrape('managed errors');
}

# --- 401 and 404 from nginx itself -------------------------------------------

{
    my ($r, $d) = record('GET', '/api/settings/theme');
    is($r->{status}, 401, 'return 401');
    is_deeply($d, {
        requests_key('/api/settings/:key', 401) => 1,
        dur_key('count', '/api/settings/:key') => 1,
        (map { dur_key('bucket', '/api/settings/:key', $_) => 1 }
             @DEFAULT_LE),
        K($AUTH, { endpoint => '/api/settings/:key',
                   username => 'anonymous' }) => 1,
    }, 'a 401: one request, one observation, one authentication failure')
        or diag(explain($d));

    ($r, $d) = record('GET', '/api/livetv/m3u');
    is($r->{status}, 404, 'a missing file: 404');
    is($d->{ requests_key('/api/livetv/m3u', 404) }, 1, 'status_code="404"');
    ok(!grep({ /^\Q$AUTH\E/ } keys %$d), 'a 404 is no authentication failure');

    ($r, $d) = record('HEAD', '/api/jobs');
    is($r->{status}, 200, 'HEAD: 200');
    is($d->{ requests_key('/api/jobs', 200) }, 1, 'HEAD is recorded');
}

# --- what is not recorded ----------------------------------------------------

{
    my ($r, $d) = record('GET', '/api/healthcheck');
    is($r->{body}, 'not recorded', 'playarr_metrics off: answered');
    is_deeply($d, {}, 'playarr_metrics off: nothing recorded');

    ($r, $d) = record('GET', '/api/stats', host => 'offsrv');
    is($r->{body}, 'off', 'off for a server: answered');
    is_deeply($d, {}, 'off for a server: nothing recorded');

    ($r, $d) = record('GET', '/api/livetv/epg', host => 'offsrv');
    is($r->{body}, 'on again', 'on in a location of that server: answered');
    is_deeply([sort grep { /^\Q$REQS\E/ } keys %$d],
              [requests_key('/api/livetv/epg', 200)],
              'on in a location of an off server: recorded');

    ($r, $d) = record('GET', '/metrics');
    is($r->{status}, 401, '/metrics without a token: 401');
    is_deeply($d, {}, '/metrics answering 401: not recorded, no'
                      . ' authentication failure');

    ($r, $d) = record('GET', '/metrics', headers => \%auth);
    is($r->{status}, 200, '/metrics: 200');
    is_deeply($d, {}, '/metrics: not recorded');

    ($r, $d) = record('HEAD', '/metrics', headers => \%auth);
    is_deeply($d, {}, 'HEAD /metrics: not recorded');

    ($r, $d) = record('GET', '/metrics/json', headers => \%auth);
    is($r->{status}, 200, '/metrics/json: 200');
    is_deeply($d, {}, '/metrics/json: not recorded');

    ($r, $d) = record('POST', '/metrics', headers => \%auth);
    is($r->{status}, 405, 'POST /metrics: 405');
    is_deeply($d, {}, 'POST /metrics: not recorded');

    my $m = $t->quiet_series(client => $cl);
    ok(!grep({ /endpoint="\/metrics(?:\/json)?"/ } keys %$m),
       'no series for the /metrics endpoints at all');
}

# --- requests nginx rejects --------------------------------------------------

{
    my $before = $t->quiet_series(client => $cl);

    # the connection is closed after the answer, once the request is logged
    my $raw = $t->raw("GET /api/titles/tt2 HTTP/1.1\r\nHost: a\r\n"
                      . "Host: b\r\n\r\n");
    like($raw, qr{^HTTP/1\.1 400 }, 'two Host headers: 400');

    $raw = $t->raw("GET /api/jobs HTTP/1.0\r\n\r\n");
    like($raw, qr{^HTTP/1\.1 200 }, 'HTTP/1.0: 200');

    my $d = delta($before, $t->quiet_series(client => $cl), $HTTP_FAMILIES);
    is($d->{ requests_key('/api/titles/:title_key', 400) }, 1,
       'a 400 after the request line: counted with its endpoint');
    is($d->{ requests_key('/api/jobs', 200) }, 1, 'HTTP/1.0 counted');
}

$t->scrape('final');

$cl->close;

$t->stop;

done_testing;
