#!/usr/bin/perl

# the README's configuration shadows every form of Playarr's own
# routes that Express would answer.  Express matches a route in any case
# and with or without a trailing slash (/METRICS, /metrics/, /Metrics/Json,
# /API/Settings/Metrics/), and Node's URL parser reads a "\" as a "/" when
# a "#" follows (/Metrics\json#).  With "location =", those went past the
# module's token to Playarr's own handlers.
#
# The test runs docs/examples/nginx.conf itself (the README shows that file
# byte for byte, which is checked first): its http block as it is, with
# only its paths, its port and its upstream address rewritten, in front of
# a stand-in Playarr (a second server of the same nginx) that answers
# "upstream" and logs every request it gets.  Every variant must be
# answered by the module (its 401 and JSON error, its metrics, the token)
# or refused by nginx, and never reach the stand-in; a few near misses,
# which Express routes nowhere near those handlers, do reach it, which
# shows that its log sees what gets through.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use PlayarrTest;

PlayarrTest::need_module();

my $REPO = PlayarrTest::repo();

# --- the README shows the example as it is ----------------------------------

my ($ex, $changes) = PlayarrTest::example_http();
my $example = $ex->{text};
my $readme = PlayarrTest::slurp("$REPO/README.md");
my @blocks = $readme =~ /^```nginx\n(.*?)^```$/msg;
my @complete = grep { /^load_module /m } @blocks;

is(scalar @complete, 1, 'README has one complete configuration');
is($complete[0], $example,
   'the README\'s configuration is docs/examples/nginx.conf');


# --- its http block, with paths, ports and the upstream rewritten -----------

my ($main, $http, $after) = @$ex{qw(main http after)};

is($after, '', 'nothing after the http block');

# what the example says outside http, the harness says for the test:
# load_module, user, worker_processes, pid, error_log and events
(my $bare = $main) =~ s/#.*$//mg;
my @main = $bare =~ /^\s*([a-z_]+)/mg;

is_deeply(\@main,
          [qw(load_module user worker_processes pid error_log events
              worker_connections)],
          'outside http: only what the harness provides')
    or diag("the example's main context: @main");

for my $c (@$changes) {
    my ($re, $n) = @$c;

    ok($n, "the example has $re ($n)");
}

# nothing else on this machine is read or written (mime.types is nginx's)
my @system = grep { !m{^/etc/nginx/mime\.types$} }
             $http =~ m{(/(?:etc|var|run|usr)/\S*?);?$}mg;

is_deeply(\@system, [], 'no other system path in the http block')
    or diag("paths: @system");

my $t = PlayarrTest->new(http => $http . <<'EOF');

    # the stand-in Playarr: "upstream" for everything, and a log of what
    # reached it (the merges' subrequests carry the app's token)
    log_format got '$request_method $request_uri $http_authorization';

    server {
        listen 127.0.0.1:%%PORT2%%;
        playarr_metrics off;
        access_log %%DIR%%/upstream.log got;

        location / {
            return 200 "upstream\n";
        }
    }
EOF

# regenerate writes next to the token file: the directory is the workers'
my $TOKDIR = $t->worker_dir('tok');

# Playarr's JWT_SECRET_KEY, and an admin's session signed with it
my $SECRET = 'express-variants-secret';
$t->write_file('jwt.secret', "$SECRET\n", 0600);
$t->write_file('app-token.conf',
               "proxy_set_header Authorization \"Bearer app-token\";\n",
               0600);

$t->start;

my $token = $t->read_token('tok/playarr-metrics.token');
like($token, qr/^[0-9a-f]{64}$/, 'the token file was created');

my $ADMIN = [ Cookie => 'access_token='
                        . PlayarrTest::session_jwt($SECRET,
                                                   { sub => 'admin',
                                                     role => 'admin',
                                                     exp => time + 3600 }) ];

sub module_401 {
    my ($r, $what) = @_;
    my $j = PlayarrTest::json_body($r) || {};

    is($r->{status}, 401, "$what: 401") or diag($r->{raw});
    like(PlayarrTest::header($r, 'WWW-Authenticate') // '',
         qr/^Bearer realm="playarr-metrics"/, "$what: the module's challenge");
    like($j->{error} // '', qr/^Missing or invalid Authorization header/,
         "$what: the module's JSON error");
}


# --- Playarr's /metrics ------------------------------------------------------

my @text = ('/metrics', '/METRICS', '/metrics/', '/Metrics', '/METRICS/',
            '/%6detrics', '/%6Detrics/', '/%4D%45%54%52%49%43%53', '//metrics',
            '//metrics//', '/./metrics', '/metrics/.', '/x/../metrics',
            '/metrics%2F', '/metrics%2f', '/METRICS?x=1', '/metrics#x');

for my $p (@text) {
    module_401($t->get($p), "GET $p");

    my $r = $t->get($p, headers => [ Authorization => "Bearer $token" ]);

    is($r->{status}, 200, "GET $p with the token: 200");
    like(PlayarrTest::header($r, 'Content-Type') // '',
         qr{^text/plain; version=0\.0\.4}, "GET $p: the text format");
    like($r->{body}, qr/^# TYPE playarr_http_requests_total counter$/m,
         "GET $p: the module's metrics");
}

$t->metrics(token => $token, path => '/METRICS/', name => 'GET /METRICS/');

my $r = $t->head('/Metrics/', headers => [ Authorization => "Bearer $token" ]);
is($r->{status}, 200, 'HEAD /Metrics/ with the token: 200');
$r = $t->head('/Metrics/');
is($r->{status}, 401, 'HEAD /Metrics/: 401');
like(PlayarrTest::header($r, 'WWW-Authenticate') // '',
     qr/^Bearer realm="playarr-metrics"/,
     "HEAD /Metrics/: the module's challenge");


# --- Playarr's /metrics/json -------------------------------------------------

my @json = ('/metrics/json', '/Metrics/Json', '/metrics/json/',
            '/METRICS/JSON/', '/metrics%2Fjson', '/%6detrics/%6Ason',
            '//metrics//json', '/metrics/./json', '/METRICS/JSON%2F',
            '/metrics/x/../json');

for my $p (@json) {
    my $r = $t->get($p);
    my $j = PlayarrTest::json_body($r) || {};

    # a session, as Playarr's own route asks for; its answer in its words
    is($r->{status}, 401, "GET $p without a session: 401");
    is($j->{error} // '', 'Authentication required',
       "GET $p without a session: Playarr's error");

    $r = $t->get($p, headers => $ADMIN);
    $j = PlayarrTest::json_body($r);

    is($r->{status}, 200, "GET $p with a session: 200");
    like(PlayarrTest::header($r, 'Content-Type') // '',
         qr{^application/json}, "GET $p: JSON");
    ok(ref $j eq 'ARRAY'
       && grep({ ref $_ eq 'HASH'
                 && ($_->{name} // '') eq 'playarr_http_requests_total' }
               @$j),
       "GET $p: the module's families");
}


# --- Playarr's Settings > Metrics page --------------------------------------

my @show = ('/api/settings/metrics', '/API/Settings/Metrics/',
            '/api/settings/METRICS', '/api/settings/metrics/',
            '/api/settings/metrics%2F', '/api/settings/%6detrics',
            '/api//settings//metrics', '//API/SETTINGS/METRICS/',
            '/api/x/../settings/metrics');

for my $p (@show) {
    my $r = $t->get($p);

    is($r->{status}, 401, "GET $p without the session: 401");
    unlike($r->{body}, qr/upstream/, "GET $p: answered by nginx");

    $r = $t->get($p, headers => $ADMIN);

    is($r->{status}, 200, "GET $p: 200") or diag($r->{raw});
    is((PlayarrTest::json_body($r) || {})->{value}, $token,
       "GET $p: the module shows the token");
    is(PlayarrTest::header($r, 'Cache-Control'), 'no-store',
       "GET $p: no-store");
}

my @regen = ('/api/settings/metrics/regenerate',
             '/api/settings/metrics/regenerate/',
             '/API/Settings/Metrics/Regenerate',
             '/API/SETTINGS/METRICS/REGENERATE/',
             '/api/settings/metrics/regenerate%2F',
             '/api/settings/metrics/%72egenerate',
             '//api/settings/metrics//regenerate');

for my $p (@regen) {
    my $r = $t->request('POST', $p, body => '{}',
                        headers => [ 'Content-Type' => 'application/json' ]);

    is($r->{status}, 401, "POST $p without the session: 401");
    unlike($r->{body}, qr/upstream/, "POST $p: answered by nginx");

    $r = $t->request('POST', $p, body => '{}',
                     headers => [ @$ADMIN,
                                  'Content-Type' => 'application/json' ]);

    my $new = (PlayarrTest::json_body($r) || {})->{value} // '';

    is($r->{status}, 200, "POST $p: 200") or diag($r->{raw});
    like($new, qr/^[0-9a-f]{64}$/, "POST $p: a new token");
    isnt($new, $token, "POST $p: not the old one");
    is($t->read_token('tok/playarr-metrics.token'), $new,
       "POST $p: the module wrote it");

    is($t->get('/metrics', headers => [ Authorization => "Bearer $token" ])
         ->{status}, 401, "POST $p: the old token is refused");

    $token = $new if $new;
}

$r = $t->get('/metrics', headers => [ Authorization => "Bearer $token" ]);
is($r->{status}, 200, 'the last regenerated token opens /metrics');


# --- a backslash in the path: Node reads it as "/" --------------------------

my @backslash = ('GET /metrics\\#x', 'GET /Metrics\\json#',
                 'GET /metrics\\?x=1#', 'GET /metrics/json\\#',
                 'GET /api\\settings\\metrics#',
                 'GET /api/settings/metrics\\#',
                 'POST /api/settings/metrics/regenerate\\#',
                 'POST /api/settings\\metrics/regenerate#');

for my $m (@backslash) {
    my ($method, $p) = split / /, $m, 2;
    my $r = $t->request($method, $p, headers => $ADMIN);

    is($r->{status}, 400, "$m: refused by nginx");
    unlike($r->{body}, qr/upstream/, "$m: not Playarr's answer");
}


# --- near misses: Express routes none of them to those handlers -------------

my @through = ('/api/titles/tt1', '/metricsx', '/metrics;x', '/metrics.json',
               '/metrics%23x', '/metrics%5C', '/api/settings/metrics%5C',
               '/api/titles?q=a\\b');

for my $p (@through) {
    my $r = $t->get($p);

    is($r->{status}, 200, "GET $p: 200");
    is($r->{body}, "upstream\n", "GET $p: the stand-in Playarr answered");
}

$t->stop;


# --- what reached the stand-in Playarr --------------------------------------

# the merges' subrequests: /metrics with the app's token, /metrics/json
# with the client's session (answered "upstream", not metrics: a failed
# merge, nginx's families served all the same)
my @got = map { s/ -$//r } split /\n/, $t->read_file('upstream.log') // '';
my @merges = grep { $_ eq 'GET /metrics Bearer app-token' } @got;
my @json_merges = grep { $_ eq 'GET /metrics/json' } @got;
my @other = grep { $_ ne 'GET /metrics Bearer app-token'
                   && $_ ne 'GET /metrics/json' } @got;

ok(@merges >= scalar(@text), 'a merge per /metrics scrape: '
                             . scalar(@merges));
is(scalar @json_merges, scalar @json,
   'a merge per /metrics/json with a session');

# (the log writes a "\" as \x5C)
is_deeply([ sort @other ],
          [ sort map { (my $l = "GET $_") =~ s/\\/\\x5C/g; $l } @through ],
          'nothing else reached Playarr than the near misses')
    or diag(join "\n", 'the stand-in got:', @other);

done_testing;
