#!/usr/bin/perl

# The export location (docs/metrics.md): GET and HEAD only,
# Prometheus text 0.0.4 that promtool accepts, build info and the zone's
# self metrics.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use PlayarrTest;

PlayarrTest::need_module();

my $CT = 'text/plain; version=0.0.4; charset=utf-8';

my $t = PlayarrTest->new(http => <<'EOF');
    playarr_metrics_zone playarr:1m;
    playarr_metrics_token_file %%DIR%%/metrics.token;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;
        location = /metrics { playarr_metrics_export; }
        location = /metrics-prometheus { playarr_metrics_export prometheus; }
        location = /hello { return 200 "hello"; }
    }
EOF

$t->start;
my $token = $t->read_token('metrics.token');
my %auth = (Authorization => "Bearer $token");

# --- GET ---

my $r = $t->metrics_response(token => $token, name => 'GET /metrics');
my $body = $r->{body};

is(PlayarrTest::header($r, 'Content-Type'), $CT, 'Content-Type');
like($body, qr/\n\z/, 'body ends with a newline');
unlike($body, qr/\r/, 'no CR in the body');
unlike($r->{raw}, qr/\Q$token\E/, 'token not in the answer');

my $m = PlayarrTest::parse_metrics($body);
my @bi = PlayarrTest::samples($m, $PlayarrTest::SELF{build_info});
is(scalar @bi, 1, 'one build_info sample');
like($body,
     qr/^playarr_metrics_build_info\{version="[^"]+",nginx_version="1\.22\.1"\} 1$/m,
     'build_info line as documented');
like($body, qr/^# TYPE playarr_metrics_build_info gauge$/m, 'build_info gauge');

$t->self_metrics_ok($body);

# zone bytes: used + free cannot exceed the zone, and free is positive
{
    my $types = PlayarrTest::metric_types($body);
    my ($used) = grep { $_ =~ $PlayarrTest::SELF{zone_used} } sort keys %$types;
    my ($free) = grep { $_ =~ $PlayarrTest::SELF{zone_free} } sort keys %$types;
    my $u = 0;
    my $f = 0;
    $u += $_->[1] for PlayarrTest::samples($m, $used // 'none');
    $f += $_->[1] for PlayarrTest::samples($m, $free // 'none');
    ok($f > 0, "zone free bytes > 0 ($f)");
    ok($u + $f <= 1024 * 1024, "used + free <= zone size ($u + $f)");
    is($types->{$used // ''}, 'gauge', 'zone used is a gauge');
    is($types->{$free // ''}, 'gauge', 'zone free is a gauge');
}

# the explicit format and a query string give the same families
{
    my $b2 = $t->metrics(token => $token, path => '/metrics-prometheus',
                         name => 'explicit prometheus');
    is_deeply([sort keys %{ PlayarrTest::metric_types($b2) }],
              [sort keys %{ PlayarrTest::metric_types($body) }],
              'explicit prometheus: same families');

    my $b3 = $t->metrics(token => $token, path => '/metrics?x=1&format=json',
                         name => 'query string ignored');
    is_deeply([sort keys %{ PlayarrTest::metric_types($b3) }],
              [sort keys %{ PlayarrTest::metric_types($body) }],
              'query string: same families');
}

# --- HEAD ---

{
    my $h = $t->head('/metrics', headers => \%auth);
    is($h->{status}, 200, 'HEAD: 200');
    is(PlayarrTest::header($h, 'Content-Type'), $CT, 'HEAD: Content-Type');
    is($h->{extra}, '', 'HEAD: no body');
    my $cl = PlayarrTest::header($h, 'Content-Length');
    ok(!defined $cl || $cl =~ /^\d+$/, 'HEAD: Content-Length numeric if any');
}

# --- other methods ---

my @methods = (
    [ POST    => 'x=1' ],
    [ PUT     => 'x=1' ],
    [ DELETE  => undef ],
    [ PATCH   => '{}' ],
    [ OPTIONS => undef ],
);

for my $mc (@methods) {
    my ($method, $req_body) = @$mc;
    my $x = $t->request($method, '/metrics', headers => \%auth,
                        body => $req_body);
    is($x->{status}, 405, "$method: 405");
    is(PlayarrTest::header($x, 'Allow'), 'GET, HEAD', "$method: Allow");
    unlike($x->{body}, qr/^playarr_/m, "$method: no metrics in the answer");
}

# a POST with a body on a keep-alive connection: the body is discarded
# and the next request on the connection is answered normally
{
    my $c = $t->connect;
    my $p = $c->request('POST', '/metrics', headers => \%auth,
                        body => 'y' x 5000);
    my $g = $c->request('GET', '/metrics', headers => \%auth);
    $c->close;
    is($p->{status}, 405, 'keep-alive: POST 405');
    is($g->{status}, 200, 'keep-alive: then GET 200');
    $t->promtool_ok($g->{body}, 'keep-alive: body after a POST');
}

# --- keep-alive burst ---

{
    my $c = $t->connect;
    my (@st, @len);
    for my $i (1 .. 30) {
        my $x = $c->request($i % 5 ? 'GET' : 'HEAD', '/metrics',
                            headers => \%auth);
        push @st, $x->{status};
        push @len, length $x->{body} if $i % 5;
    }
    $c->close;
    is_deeply(\@st, [(200) x 30], 'keep-alive: 30 answers 200');
    ok(!grep({ $_ == 0 } @len), 'keep-alive: every GET has a body');
}

# other locations are not affected
is($t->get('/hello')->{body}, 'hello', 'other locations untouched');

$t->stop;

done_testing;
