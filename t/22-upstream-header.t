#!/usr/bin/perl

# playarr_metrics_upstream_header (docs/directives.md): updates
# carried by an upstream's response headers apply when the request is
# logged, never reach the client, and a malformed or invalid one is
# counted in playarr_metrics_updates_rejected_total{source="header"} and
# logged, never applied.
#
# The upstream is a second server of the same nginx that copies request
# headers X-Set-Metrics* into X-Playarr-Metrics response headers, so the
# test decides what Playarr would send.

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

    large_client_header_buffers 4 64k;

    # the upstream ("Playarr"): X-Set-Metrics* request headers come back
    # as X-Playarr-Metrics response headers
    server {
        listen 127.0.0.1:%%PORT2%%;
        server_name backend;
        playarr_metrics off;

        location / {
            add_header X-Playarr-Metrics \$http_x_set_metrics always;
            add_header X-Playarr-Metrics \$http_x_set_metrics2 always;
            add_header x-playarr-metrics \$http_x_set_metrics_lower always;
            add_header X-Other \$http_x_set_other always;
            return 200 "backend\\n";
        }

        location /api/down {
            add_header X-Playarr-Metrics \$http_x_set_metrics always;
            return 503 "down\\n";
        }
    }

    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        server_name localhost;
        add_header X-Worker-Pid \$pid always;

        location = /metrics { playarr_metrics_export; }

        location /api/ {
            playarr_metrics_upstream_header X-Playarr-Metrics;
            proxy_pass http://127.0.0.1:%%PORT2%%;
        }

        location /plain/ {
            proxy_pass http://127.0.0.1:%%PORT2%%;
        }

        location /other/ {
            playarr_metrics_upstream_header X-Other;
            proxy_pass http://127.0.0.1:%%PORT2%%;
        }

        location /big/ {
            playarr_metrics_upstream_header X-Playarr-Metrics;
            proxy_buffer_size 64k;
            proxy_buffers 4 64k;
            proxy_busy_buffers_size 128k;
            proxy_pass http://127.0.0.1:%%PORT2%%;
        }

        location /static/ {
            playarr_metrics_upstream_header X-Playarr-Metrics;
            add_header X-Playarr-Metrics
                '{"metric":"active_users","op":"set","value":99}';
            return 200 "static\\n";
        }
    }

    # the directive at server level reaches every location
    server {
        listen 127.0.0.1:%%PORT3%%;
        server_name inherit;
        playarr_metrics_upstream_header X-Playarr-Metrics;

        location / {
            proxy_pass http://127.0.0.1:%%PORT2%%;
        }
    }
EOF

$t->start;

my $TOKEN = $t->read_token('metrics.token');
my %REJ = (malformed => 0, invalid => 0);
$t->scrape_setup(token => $TOKEN);

sub enc {
    my ($u) = @_;
    return ref $u ? $JSON->encode($u) : $u;
}

# a proxied request whose upstream answer carries the given headers
sub via {
    my ($path, %h) = @_;
    my @h = map { ($_ => enc($h{$_})) } sort keys %h;
    return $t->get($path, headers => \@h);
}

sub has_header {
    my ($r, $name) = @_;
    return scalar grep { lc $_->[0] eq lc $name } @{ $r->{header_lines} };
}


# --- one update, applied, not shown to the client ---

{
    my $r = via('/api/titles',
                'X-Set-Metrics' => { metric => 'stream_requests', op => 'inc',
                                     labels => { user => 'alice' } },
                'X-Set-Other' => 'kept');
    is($r->{status}, 200, 'one update: 200');
    is($r->{body}, "backend\n", 'one update: the upstream\'s body');
    ok(!has_header($r, 'X-Playarr-Metrics'),
       'one update: header removed from the client response')
        or diag($r->{raw});
    is(PlayarrTest::header($r, 'X-Other'), 'kept',
       'other upstream headers reach the client');

    $t->scrape('one update');
    is($t->value('playarr_stream_requests_total', { user => 'alice' }), 1,
       'one update: applied');
}

# an array, by key and by name, every op
{
    my $r = via('/api/x',
                'X-Set-Metrics' => [
                    { metric => 'stream_requests', op => 'inc',
                      labels => { user => 'alice' }, value => 0.5 },
                    { metric => 'playarr_provider_active', op => 'set',
                      labels => { provider_id => 'p1' }, value => 1 },
                    { metric => 'provider_max_connections', op => 'set',
                      labels => { provider_id => 'p1' }, value => 10 },
                    { metric => 'provider_max_connections', op => 'dec',
                      labels => { provider_id => 'p1' }, value => 3 },
                    { metric => 'provider_max_connections', op => 'inc',
                      labels => { provider_id => 'p1' } },
                    { metric => 'job_duration', op => 'observe',
                      labels => { job_type => 'sync' }, value => 42 },
                    { metric => 'active_users', op => 'set', value => 3 },
                ]);
    is($r->{status}, 200, 'array: 200');
    ok(!has_header($r, 'X-Playarr-Metrics'), 'array: header removed');

    $t->scrape('array');
    is($t->value('playarr_stream_requests_total', { user => 'alice' }), 1.5,
       'array: counter inc 0.5 by key');
    is($t->value('playarr_provider_active', { provider_id => 'p1' }), 1,
       'array: gauge set by name');
    is($t->value('playarr_provider_max_connections', { provider_id => 'p1' }),
       8,
       'array: set 10, dec 3, inc');
    is($t->value('playarr_job_duration_seconds_count', { job_type => 'sync' }),
       1,
       'array: observe');
    is($t->value('playarr_job_duration_seconds_bucket',
                 { job_type => 'sync', le => '60' }), 1, 'array: 42 <= 60');
    is($t->value('playarr_job_duration_seconds_bucket',
                 { job_type => 'sync', le => '30' }), 0, 'array: 42 > 30');
    is($t->value('playarr_active_users'), 3, 'array: label-less gauge');

    # reset through a header
    $r = via('/api/x', 'X-Set-Metrics' => { metric => 'provider_active',
                                             op => 'reset' });
    $t->scrape('reset');
    ok(!defined $t->value('playarr_provider_active', { provider_id => 'p1' }),
       'reset through a header');
}

# two headers in one response, one with a lower-case name
{
    my $r = via('/api/two',
                'X-Set-Metrics' => { metric => 'cache_operations', op => 'inc',
                                     labels => { operation => 'a' } },
                'X-Set-Metrics2' => { metric => 'cache_operations', op => 'inc',
                                      labels => { operation => 'b' } },
                'X-Set-Metrics-Lower' => { metric => 'cache_operations',
                                           op => 'inc',
                                           labels => { operation => 'c' } });
    is($r->{status}, 200, 'three headers: 200');
    ok(!has_header($r, 'X-Playarr-Metrics'),
       'three headers: all removed, whatever their case') or diag($r->{raw});

    $t->scrape('three headers');
    for my $op (qw(a b c)) {
        is($t->value('playarr_cache_operations_total', { operation => $op }), 1,
           "three headers: operation $op applied");
    }
}

# non-ASCII label values: \u escapes (ASCII-only JSON), or UTF-8 bytes
{
    my $r = via('/api/utf8',
                'X-Set-Metrics' => '[{"metric":"stream_requests","op":"inc",'
                    . '"labels":{"user":"ren\u00e9e \ud83d\ude00"}},'
                    . '{"metric":"stream_requests","op":"inc",'
                    . "\"labels\":{\"user\":\"utf8 \xc3\xa9\"}}]");
    is($r->{status}, 200, 'non-ASCII: 200');
    $t->scrape('non-ASCII');
    is($t->value('playarr_stream_requests_total',
                 { user => "ren\xc3\xa9e \xf0\x9f\x98\x80" }), 1,
       'non-ASCII: \\u escapes, a surrogate pair included, become UTF-8');
    is($t->value('playarr_stream_requests_total', { user => "utf8 \xc3\xa9" }),
       1,
       'non-ASCII: UTF-8 bytes kept');
}

# the status of the upstream answer does not matter
{
    my $r = via('/api/down',
                'X-Set-Metrics' => { metric => 'provider_active', op => 'set',
                                     labels => { provider_id => 'down' },
                                     value => 0 });
    is($r->{status}, 503, 'upstream 503 reaches the client');
    ok(!has_header($r, 'X-Playarr-Metrics'), 'upstream 503: header removed');
    $t->scrape('upstream 503');
    is($t->value('playarr_provider_active', { provider_id => 'down' }), 0,
       'upstream 503: update applied');
}

# applied when the request is logged: before the next request on the
# same keep-alive connection
{
    my $c = $t->connect;
    my $u = enc({ metric => 'watchlist_channels_count', op => 'set',
                  labels => { user => 'ka' }, value => 5 });
    my $a = $c->request('GET', '/api/ka', headers => [ 'X-Set-Metrics' => $u ]);
    my $m = $c->request('GET', '/metrics',
                        headers => [ Authorization => "Bearer $TOKEN" ]);
    $c->close;
    is($a->{status}, 200, 'keep-alive: proxied 200');
    is($m->{status}, 200, 'keep-alive: then /metrics 200');
    $t->promtool_ok($m->{body}, 'keep-alive: promtool check metrics');
    is(PlayarrTest::sample($m->{body}, 'playarr_watchlist_channels_count',
                           { user => 'ka' }), 5,
       'keep-alive: applied before the next request');
}


# --- where the directive is not, or names another header ---

{
    my $u = { metric => 'main_titles_count', op => 'set',
              labels => { media_type => 'plain' }, value => 1 };
    my $r = via('/plain/x', 'X-Set-Metrics' => $u);
    is(PlayarrTest::header($r, 'X-Playarr-Metrics'), enc($u),
       'no directive: the header reaches the client unchanged');

    $r = via('/other/x',
             'X-Set-Metrics' => { metric => 'main_titles_count', op => 'set',
                                  labels => { media_type => 'xpm' },
                                  value => 1 },
             'X-Set-Other' => { metric => 'main_titles_count', op => 'set',
                                labels => { media_type => 'other' },
                                value => 2 });
    ok(!has_header($r, 'X-Other'), 'another name: that header removed');
    ok(has_header($r, 'X-Playarr-Metrics'),
       'another name: X-Playarr-Metrics passes through there');

    # not from an upstream: add_header in the location itself
    $r = $t->get('/static/x');
    is($r->{status}, 200, 'no upstream: 200');

    # server-level directive
    $r = $t->get('/inherited',
                 port => $t->port(3),
                 headers => [ 'X-Set-Metrics' => enc(
                     { metric => 'main_titles_count', op => 'set',
                       labels => { media_type => 'inherited' },
                       value => 3 }) ]);
    is($r->{status}, 200, 'server level: 200');
    ok(!has_header($r, 'X-Playarr-Metrics'), 'server level: header removed');

    $t->scrape('directive scope');
    ok(!defined $t->value('playarr_main_titles_count',
                          { media_type => 'plain' }),
       'no directive: not applied');
    ok(!defined $t->value('playarr_main_titles_count', { media_type => 'xpm' }),
       'another name: X-Playarr-Metrics not applied there');
    is($t->value('playarr_main_titles_count', { media_type => 'other' }), 2,
       'another name: X-Other applied');
    is($t->value('playarr_main_titles_count', { media_type => 'inherited' }), 3,
       'server level: applied');
    is($t->value('playarr_active_users'), 3,
       'a header that did not come from an upstream is not applied');
}


# --- malformed and invalid headers: counted, logged, never applied ---

{
    my $mark = $t->log_mark;
    my @bad = (
        [ malformed => '{"metric":"active_users","op":"set","value":7',
          'truncated JSON' ],
        [ malformed => 'active_users=7', 'not JSON' ],
        [ malformed => '{"metric":"active_users","op":"set","value":NaN}',
          'NaN' ],
        # what Node sends for JSON.stringify({user: "ren\u00e9e"}) set as
        # a header as is: a Latin-1 byte, not UTF-8
        [ malformed => '{"metric":"stream_requests","op":"inc",'
                       . "\"labels\":{\"user\":\"ren\xe9e\"}}",
          'a Latin-1 byte' ],
        [ invalid => { metric => 'no_such_metric', op => 'inc' },
          'unknown metric' ],
        [ invalid => { metric => 'stream_requests', op => 'inc',
                       labels => { user => 'alice' }, value => -1 },
          'negative counter inc' ],
        [ invalid => { metric => 'stream_requests', op => 'set',
                       labels => { user => 'alice' }, value => 7 },
          'set on a counter' ],
        [ invalid => { metric => 'stream_requests', op => 'inc' },
          'missing label' ],
        [ invalid => { metric => 'active_users', op => 'set', value => '7' },
          'value a string' ],
        [ invalid => [ { metric => 'active_users', op => 'set', value => 7 },
                       { metric => 'stream_requests', op => 'inc',
                         labels => { user => 'alice' } },
                       { metric => 'active_users', op => 'explode' } ],
          'batch with a bad third update' ],
    );

    for my $c (@bad) {
        my ($reason, $u, $name) = @$c;
        my $r = via('/api/bad', 'X-Set-Metrics' => $u);
        is($r->{status}, 200, "$name: the client still gets 200");
        ok(!has_header($r, 'X-Playarr-Metrics'), "$name: header removed");
        $REJ{$reason}++;
    }

    # one good and one bad header in the same response: each on its own
    my $r = via('/api/mixed',
                'X-Set-Metrics' => 'nonsense',
                'X-Set-Metrics2' => { metric => 'episodes_count', op => 'set',
                                      labels => { source => 'mixed' },
                                      value => 11 });
    is($r->{status}, 200, 'good and bad header: 200');
    $REJ{malformed}++;

    $t->scrape('after the bad headers');
    is($t->value('playarr_active_users'), 3,
       'bad headers: active_users unchanged');
    is($t->value('playarr_stream_requests_total', { user => 'alice' }), 1.5,
       'bad headers: counter unchanged (the batch applied nothing)');
    is($t->value('playarr_episodes_count', { source => 'mixed' }), 11,
       'the good header beside a bad one applied');

    for my $reason (qw(malformed invalid)) {
        is($t->value('playarr_metrics_updates_rejected_total',
                     { source => 'header', reason => $reason }), $REJ{$reason},
           "updates_rejected_total{source=header,reason=$reason} "
           . $REJ{$reason});
        is($t->value('playarr_metrics_updates_rejected_total',
                     { source => 'push', reason => $reason }), 0,
           "updates_rejected_total{source=push,reason=$reason} 0");
    }

    my @warn = grep { /\[warn\].*rejected an update from header/ }
               split /\n/, $t->log_since($mark);
    is(scalar @warn, 1, 'one [warn] for all these rejections (a minute)')
        or diag(join "\n", @warn);
}


# --- header size: proxy_buffer_size decides ---

{
    my @many = map { { metric => 'channels_count', op => 'set',
                       labels => { provider_id => 'big', category => "c$_" },
                       value => $_ } } 1 .. 200;
    my $u = enc(\@many);
    ok(length $u > 16384, 'a header of ' . length($u) . ' bytes');

    my $r = via('/big/x', 'X-Set-Metrics' => $u);
    is($r->{status}, 200, 'big header with proxy_buffer_size 64k: 200');
    ok(!has_header($r, 'X-Playarr-Metrics'), 'big header: removed');

    # nginx's own limit: the default proxy_buffer_size cannot hold it
    $t->allow_log(qr/upstream sent too big header/);
    $r = via('/api/x', 'X-Set-Metrics' => $u);
    is($r->{status}, 502, 'big header with the default proxy_buffer_size: 502');

    $t->scrape('big header');
    my @s = grep { $_->[0]{provider_id} eq 'big' }
            PlayarrTest::samples($t->scraped, 'playarr_channels_count');
    is(scalar @s, 200, 'big header: 200 series set');
    is($t->value('playarr_channels_count', { provider_id => 'big',
                                              category => 'c200' }), 200,
       'big header: the last one');
}


# --- exact counts across workers ---

{
    my %pids;
    my $u = enc({ metric => 'best_source_selections', op => 'inc',
                  labels => { provider_id => 'race' } });

    for (1 .. 100) {
        my $r = $t->get('/api/race', headers => [ 'X-Set-Metrics' => $u ]);
        my $pid = PlayarrTest::header($r, 'X-Worker-Pid');
        $pids{$pid}++ if defined $pid && $r->{status} == 200;
    }

    is(scalar keys %pids, 2, 'both workers proxied') or diag(explain \%pids);
    $t->scrape('after 100 proxied requests');
    is($t->value('playarr_best_source_selections_total',
                 { provider_id => 'race' }),
       100, '100 header updates from both workers: 100');

    $t->self_metrics_ok($t->scraped);
}

$t->stop;

done_testing;
