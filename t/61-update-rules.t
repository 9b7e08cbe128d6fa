#!/usr/bin/perl

# The rules every push and upstream-header update obeys (docs/directives.md):
#
# - text of an update reaches the error log escaped: a metric name, a label
#   name or bytes of malformed JSON carrying "\n<timestamp> [emerg] ..."
#   cannot forge a log line, and the JSON error answer stays valid JSON;
# - no value goes beyond the largest finite number: an inc, dec or observe
#   that would overflow is refused (400, reason "invalid"; a header's is
#   counted and logged), in a batch too, and /metrics never shows +Inf;
# - the four built-in HTTP families are nginx's: any op on them, by name or
#   by schema key, is refused and their values do not move.
#
# The upstream is a second server of the same nginx that copies request
# headers X-Set-Metrics into X-Playarr-Metrics response headers.  A
# rejection is logged once a minute per source: nginx is started afresh
# for each case that looks at the log.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use Test::More;
use PlayarrTest;

PlayarrTest::need_module();

my $SCHEMA = PlayarrTest::need_schema();

my $JSON = JSON::PP->new->canonical->utf8;

my $t = PlayarrTest->new(http => <<"EOF");
    playarr_metrics_zone playarr:1m;
    playarr_metrics_token_file %%DIR%%/metrics.token;
    playarr_metrics_schema $SCHEMA;

    server {
        listen 127.0.0.1:%%PORT2%%;
        server_name backend;
        playarr_metrics off;

        location / {
            add_header X-Playarr-Metrics \$http_x_set_metrics always;
            return 200 "backend\\n";
        }
    }

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location = /metrics { playarr_metrics_export; }
        location = /push { playarr_metrics_push; }

        # not recorded itself: the HTTP families move only where meant to
        location /api/ {
            playarr_metrics off;
            playarr_metrics_upstream_header X-Playarr-Metrics;
            proxy_pass http://127.0.0.1:%%PORT2%%;
        }

        location = /hello { return 200 "hello\\n"; }
        location = /denied { return 401; }
        location = /oops {
            playarr_metrics_error_type NotFound;
            return 404;
        }
    }
EOF

# the module's own warning, whatever text it quotes
$t->allow_log(qr/^\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d \[warn\] \d+#\d+: \*\d+ (?x:
                 playarr_metrics\ rejected\ an\ update\ from\ (?:push|header):)/);

$t->start;

my $TOKEN = $t->read_token('metrics.token');
$t->scrape_setup(token => $TOKEN);

sub via {
    my ($u) = @_;
    my $r = $t->get('/api/x',
                    headers => [ 'X-Set-Metrics' => ref $u ? $JSON->encode($u)
                                                           : $u ]);
    is($r->{status}, 200, 'the proxied request: 200') or diag($r->{raw});
    return $r;
}

sub rejected {
    my ($source) = @_;
    return $t->value('playarr_metrics_updates_rejected_total',
                     { source => $source, reason => 'invalid' }) // -1;
}

sub restart {
    $t->stop;
    $t->start;
}


# --- 5: forged error-log lines ---

my $FAKE = '2020/01/01 00:00:00 [emerg] 1#1: forged';
my $ESC = '\x0A' . $FAKE;

# every line of the log since $mark: none forged, the escaped text quoted
sub log_clean {
    my ($mark, $want, $name) = @_;

    ok($t->wait_for_log(qr/rejected an update .*\Q$want\E/, 5, $mark),
       "$name: logged, escaped") or diag($t->log_since($mark));

    my @lines = split /\n/, $t->log_since($mark);
    my @forged = grep { !/^\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d \[[a-z]+\] / }
                 @lines;

    is_deeply(\@forged, [], "$name: every log line is nginx's own");
    is_deeply([ grep { /^\Q2020\/01\/01\E/ } @lines ], [],
              "$name: no line with the forged timestamp");
    is_deeply([ grep { /[\x00-\x1f\x7f-\xff]/ } @lines ], [],
              "$name: no control character or byte above 0x7e in the log");
}

{
    my $mark = $t->log_mark;
    my $j = $t->push_bad({ metric => "\n$FAKE", op => 'inc' }, 0,
                         qr/^\Qunknown metric "$ESC"\E$/,
                         'push, forged metric name');
    log_clean($mark, "unknown metric \"$ESC\"", 'push, forged metric name');

    $mark = $t->log_mark;
    via({ metric => "\n$FAKE", op => 'inc' });
    log_clean($mark, "from header: unknown metric \"$ESC\"",
              'header, forged metric name');
}

restart();

{
    my $u = { metric => 'stream_requests', op => 'inc',
              labels => { user => "\n$FAKE value",
                          "\n$FAKE label" => 'v' } };

    my $mark = $t->log_mark;
    $t->push_bad($u, 0, qr/^\Qunknown label "$ESC label" for "\E
                           \Qplayarr_stream_requests_total"\E$/x,
                 'push, forged label name and value');
    log_clean($mark, "unknown label \"$ESC label\"",
              'push, forged label name and value');

    $mark = $t->log_mark;
    via($u);
    log_clean($mark, "from header: unknown label \"$ESC label\"",
              'header, forged label name and value');
}

restart();

# raw bytes in malformed JSON: jansson's error text quotes them
{
    my $mark = $t->log_mark;
    my $j = $t->push_bad("[\x1b]", undef,
                         qr/^\Qmalformed JSON: invalid token near '\x1B' at \E/,
                         'push, a raw ESC in malformed JSON');
    log_clean($mark, "malformed JSON: invalid token near '\\x1B'",
              'push, a raw ESC');

    $mark = $t->log_mark;
    via("[\x1b]");
    log_clean($mark, "from header: malformed JSON: invalid token near "
                     . "'\\x1B'", 'header, a raw ESC');

    # not ASCII: \u escapes in JSON give UTF-8, shown byte by byte
    $t->push_bad({ metric => "caf\x{e9} \x{1f600}", op => 'inc' }, 0,
                 qr/^\Qunknown metric "caf\xC3\xA9 \xF0\x9F\x98\x80"\E$/,
                 'push, a metric name not ASCII');

    # what is quoted of a string is cut
    $t->push_bad({ metric => 'x' x 300, op => 'inc' }, 0,
                 qr/^unknown metric "x{128}\.\.\."$/,
                 'push, a long metric name');
}


# --- 6: no value beyond the largest finite number ---

restart();
$t->scrape('a fresh zone');
is(rejected('push'), 0, 'overflow: no push rejected yet');

{
    my %big = (user => 'big');

    $t->push_ok({ metric => 'stream_requests', op => 'inc', labels => \%big,
                  value => 1.5e308 }, 'counter inc 1.5e308');
    $t->push_bad({ metric => 'stream_requests', op => 'inc', labels => \%big,
                   value => 1.5e308 }, 0,
                 qr/^\Q"inc" would overflow "playarr_stream_requests_total"\E$/,
                 'counter inc 1.5e308 again');
    $t->push_bad([ { metric => 'stream_requests', op => 'inc',
                     labels => { user => 'batch' }, value => 1e308 },
                   { metric => 'stream_requests', op => 'inc',
                     labels => { user => 'other' }, value => 1e308 },
                   { metric => 'playarr_stream_requests_total', op => 'inc',
                     labels => { user => 'batch' }, value => 1e308 } ], 2,
                 qr/would overflow/, 'a batch that overflows its own series');

    $t->scrape('after the counter overflow');
    is($t->value('playarr_stream_requests_total', \%big), 1.5e308,
       'the counter holds 1.5e308, not +Inf');
    unlike($t->scraped, qr/^playarr_stream_requests_total\{[^}]*\} \+Inf$/m,
           'no +Inf counter sample');
    ok(!defined $t->value('playarr_stream_requests_total', { user => 'batch' }),
       'the refused batch applied nothing');
    is(rejected('push'), 2, 'updates_rejected_total{push,invalid} 2');

    # a reset earlier in the batch leaves room
    $t->push_ok([ { metric => 'stream_requests', op => 'reset' },
                  { metric => 'stream_requests', op => 'inc', labels => \%big,
                    value => 1.5e308 } ], 'reset, then inc 1.5e308');
    $t->scrape('after reset and inc');
    is($t->value('playarr_stream_requests_total', \%big), 1.5e308,
       'after the reset: 1.5e308');

    # gauges: inc and dec are additions too; set takes any finite value
    my %g = (provider_id => 'g');
    $t->push_ok({ metric => 'provider_active_connections', op => 'set',
                  labels => \%g, value => 1.5e308 }, 'gauge set 1.5e308');
    $t->push_bad({ metric => 'provider_active_connections', op => 'inc',
                   labels => \%g, value => 1.5e308 }, 0,
                 '"inc" would overflow "playarr_provider_active_connections"',
                 'gauge inc beyond');
    $t->push_bad({ metric => 'provider_active_connections', op => 'dec',
                   labels => \%g, value => -1.5e308 }, 0,
                 '"dec" would overflow "playarr_provider_active_connections"',
                 'gauge dec by a negative, beyond');
    $t->push_ok({ metric => 'provider_active_connections', op => 'set',
                  labels => \%g, value => -1.5e308 }, 'gauge set -1.5e308');
    $t->push_bad({ metric => 'provider_active_connections', op => 'dec',
                   labels => \%g, value => 1.5e308 }, 0,
                 qr/^"dec" would overflow/, 'gauge dec below');
    $t->push_ok({ metric => 'provider_active_connections', op => 'inc',
                  labels => \%g, value => 1.5e308 },
                'gauge inc back towards 0');

    # histograms: the sum
    my %h = (media_type => 'big');
    $t->push_ok({ metric => 'stream_request_duration', op => 'observe',
                  labels => \%h, value => 1.5e308 }, 'observe 1.5e308');
    $t->push_bad({ metric => 'stream_request_duration', op => 'observe',
                   labels => \%h, value => 1.5e308 }, 0,
                 qr/^\Q"observe" would overflow the sum of \E
                    \Q"playarr_stream_request_duration_seconds"\E$/x,
                 'observe 1.5e308 again');

    $t->scrape('after the gauge and histogram overflows');
    is($t->value('playarr_provider_active_connections', \%g), 0,
       'the gauge: -1.5e308 + 1.5e308');
    is($t->value('playarr_stream_request_duration_seconds_sum', \%h), 1.5e308,
       'the histogram _sum stays 1.5e308');
    is($t->value('playarr_stream_request_duration_seconds_count', \%h), 1,
       'the histogram _count: the refused observation not counted');
    is($t->value('playarr_stream_request_duration_seconds_bucket',
                 { %h, le => '+Inf' }), 1, 'the +Inf bucket 1');
    is(rejected('push'), 6, 'updates_rejected_total{push,invalid} 6');

    # an upstream header: not applied, counted, logged
    my $mark = $t->log_mark;
    via({ metric => 'stream_requests', op => 'inc', labels => \%big,
          value => 1.5e308 });
    ok($t->wait_for_log(qr/\[warn\] .*rejected an update from header: (?x:
                           "inc"\ would\ overflow\ "playarr_stream_requests_total")/,
                        5, $mark),
       'header overflow: logged') or diag($t->log_since($mark));

    $t->scrape('after the header overflow');
    is($t->value('playarr_stream_requests_total', \%big), 1.5e308,
       'header overflow: the counter unchanged');
    is(rejected('header'), 1, 'updates_rejected_total{header,invalid} 1');
}


# --- 7: the built-in HTTP families are nginx's ---

{
    $t->get('/hello') for 1 .. 3;
    $t->get('/denied') for 1 .. 2;
    $t->get('/oops');

    my @builtin = (
        [ http_requests => 'playarr_http_requests_total', 'inc',
          { endpoint => 'unknown_endpoint', status_code => '200',
            username => 'anonymous' } ],
        [ http_request_duration => 'playarr_http_request_duration_seconds',
          'observe', { endpoint => 'unknown_endpoint',
                       username => 'anonymous' } ],
        [ authentication_failures => 'playarr_authentication_failures_total',
          'inc', { endpoint => 'unknown_endpoint', username => 'anonymous' } ],
        [ managed_errors => 'playarr_managed_errors_total', 'inc',
          { endpoint => 'unknown_endpoint', error_type => 'NotFound',
            username => 'anonymous' } ],
    );

    my $re = qr/^playarr_(?:http_|authentication_|managed_)/;
    my $m = PlayarrTest::parse_metrics($t->scrape('the HTTP families'));
    my %before = map { $_ => $m->{$_} } grep { /$re/ } keys %$m;

    is($m->{ PlayarrTest::series_key('playarr_http_requests_total',
                                     $builtin[0][3]) }, 3,
       'three requests recorded');
    is($m->{ PlayarrTest::series_key('playarr_authentication_failures_total',
                                     $builtin[2][3]) }, 2,
       'two authentication failures recorded');
    is($m->{ PlayarrTest::series_key('playarr_managed_errors_total',
                                     $builtin[3][3]) }, 1,
       'one managed error recorded');

    my $header = rejected('header');
    my $push = rejected('push');
    my $users = $t->value('playarr_active_users');

    for my $b (@builtin) {
        my ($key, $name, $op, $labels) = @$b;
        my $msg = qr/^\Qmetric "$name" is recorded by nginx, not updated\E$/;

        for my $by ($key, $name) {
            $t->push_bad({ metric => $by, op => $op, labels => $labels,
                           value => 1 }, 0, $msg, "$op $by");
            $t->push_bad({ metric => $by, op => $op,
                           labels => { %$labels, endpoint => '/forged' },
                           value => 1 }, 0, $msg, "$op $by, a forged endpoint");
            $t->push_bad({ metric => $by, op => 'reset' }, 0, $msg,
                         "reset $by");
            $t->push_bad([ { metric => 'active_users', op => 'set',
                             value => 1 },
                           { metric => $by, op => 'reset' } ], 1, $msg,
                         "reset $by in a batch");
            $push += 4;

            via({ metric => $by, op => $op, labels => $labels, value => 1 });
            via({ metric => $by, op => 'reset' });
            $header += 2;
        }
    }

    $m = PlayarrTest::parse_metrics($t->scrape('after the refused updates'));
    my %after = map { $_ => $m->{$_} } grep { /$re/ } keys %$m;

    is_deeply(\%after, \%before, 'the HTTP families did not move');
    is($m->{'playarr_active_users'}, $users,
       'the good update in a refused batch not applied');

    is(rejected('push'), $push, "updates_rejected_total{push,invalid} $push");
    is(rejected('header'), $header,
       "updates_rejected_total{header,invalid} $header");
}

$t->stop;

done_testing;
