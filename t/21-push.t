#!/usr/bin/perl

# playarr_metrics_push (docs/directives.md): every op on every
# type, by key and by full name; a batch validated whole before any of it
# applies; every rejection with its status and {"error", "index"} body,
# counted in playarr_metrics_updates_rejected_total{source="push"};
# reset; fractional counter increments summing as JavaScript doubles;
# counts exact across workers.  Every /metrics body goes through promtool.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use Test::More;
use Time::HiRes qw(time);
use PlayarrTest;
use PlayarrTest::Blocks qw(run_blocks);

PlayarrTest::need_module();

my $SCHEMA = PlayarrTest::need_schema();

my $JSON = JSON::PP->new->canonical->utf8;
my $started = time;

my $t = PlayarrTest->new(http => <<"EOF");
    playarr_metrics_zone playarr:1m;
    playarr_metrics_token_file %%DIR%%/metrics.token;
    playarr_metrics_schema $SCHEMA;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        server_name localhost;
        add_header X-Worker-Pid \$pid always;

        location = /metrics { playarr_metrics_export; }
        location = /metrics/json { playarr_metrics_export json; }
        location = /push { playarr_metrics_push; }
        location = /push-open {
            playarr_metrics_push;
            playarr_metrics_auth off;
        }
        location = /push-big {
            playarr_metrics_push;
            client_max_body_size 2m;
        }
        location = /hello { return 200 "hello\\n"; }
    }
EOF

$t->start;

my $TOKEN = $t->read_token('metrics.token');
my %AUTH = (Authorization => "Bearer $TOKEN");
my %REJ = (malformed => 0, invalid => 0, too_large => 0);

$t->scrape_setup(token => $TOKEN);


# the harness's push_bad, counting the rejection as the module does
sub push_bad {
    my ($u, $index) = @_;

    $REJ{defined $index ? 'invalid' : 'malformed'}++;

    return $t->push_bad(@_);
}

# the error for an op that does not apply to the family's type
sub not_for {
    my ($op, $name, $type) = @_;
    return qr/^\Q"$op" does not apply to "$name", a $type\E$/;
}

# the samples of the business families only (not self, not HTTP)
sub business {
    my ($b) = @_;
    my $m = PlayarrTest::parse_metrics($b);
    return { map { $_ => $m->{$_} }
             grep { !/^playarr_(?:metrics_|http_|authentication_|managed_)/ }
             keys %$m };
}


# --- counters ---

$t->push_ok({ metric => 'stream_requests', op => 'inc',
              labels => { user => 'alice' } }, 'counter inc by key, no value');
$t->push_ok({ metric => 'playarr_stream_requests_total', op => 'inc',
              labels => { user => 'alice' }, value => 2.5 },
            'counter inc by full name');
$t->push_ok({ metric => 'stream_requests', op => 'inc',
              labels => { user => 'zero' }, value => 0 }, 'counter inc 0');
$t->push_ok({ metric => 'stream_requests', op => 'inc',
              labels => { user => 42 } }, 'integer label value');
$t->push_ok({ metric => 'stream_requests', op => 'inc',
              labels => { user => '' } }, 'empty label value');
$t->push_ok({ metric => 'stream_requests', op => 'inc',
              labels => { user => "q\"b\\s\nl caf\x{e9}" } },
            'label value with quote, backslash, newline, UTF-8');

$t->scrape('counters');
is($t->value('playarr_stream_requests_total', { user => 'alice' }), 3.5,
   'key and name reach the same series: 1 + 2.5');
is($t->value('playarr_stream_requests_total', { user => 'zero' }), 0,
   'inc 0 creates the series at 0');
is($t->value('playarr_stream_requests_total', { user => '42' }), 1,
   'integer label value becomes "42"');
is($t->value('playarr_stream_requests_total', { user => '' }), 1,
   'empty label value');
is((grep { /^playarr_stream_requests_total\{user="q/ }
    split /\n/, $t->scraped)[0],
   'playarr_stream_requests_total{user="q\\"b\\\\s\\nl caf'
   . "\xc3\xa9" . '"} 1',
   'label value escaped in the text format');

push_bad({ metric => 'stream_requests', op => 'inc',
           labels => { user => 'alice' }, value => -1 }, 0,
         qr/^a counter cannot be increased by a negative value$/,
         'negative counter inc');
push_bad({ metric => 'stream_requests', op => 'inc',
           labels => { user => 'alice' }, value => -0.000001 }, 0,
         qr/negative/, 'tiny negative counter inc');
push_bad({ metric => 'stream_requests', op => 'dec',
           labels => { user => 'alice' } }, 0,
         not_for('dec', 'playarr_stream_requests_total', 'counter'),
         'dec on a counter');
push_bad({ metric => 'stream_requests', op => 'set',
           labels => { user => 'alice' }, value => 1 }, 0,
         not_for('set', 'playarr_stream_requests_total', 'counter'),
         'set on a counter');
push_bad({ metric => 'stream_requests', op => 'observe',
           labels => { user => 'alice' }, value => 1 }, 0,
         not_for('observe', 'playarr_stream_requests_total', 'counter'),
         'observe on a counter');


# --- gauges ---

my @gauge = (
    [ { op => 'set', value => 5 },      5,     'gauge set 5' ],
    [ { op => 'inc' },                  6,     'gauge inc, no value' ],
    [ { op => 'inc', value => 2.5 },    8.5,   'gauge inc 2.5' ],
    [ { op => 'dec' },                  7.5,   'gauge dec, no value' ],
    [ { op => 'dec', value => 0.5 },    7,     'gauge dec 0.5' ],
    [ { op => 'inc', value => -3 },     4,     'gauge inc by a negative' ],
    [ { op => 'dec', value => -1 },     5,     'gauge dec by a negative' ],
    [ { op => 'set', value => -2.25 },  -2.25, 'gauge set negative' ],
    [ { op => 'set', value => 0 },      0,     'gauge set 0 keeps the series' ],
    [ { op => 'set', value => 1e300 },  1e300, 'gauge set 1e300' ],
    [ { op => 'set', value => 12 },     12,    'gauge set 12' ],
);

for my $g (@gauge) {
    my ($u, $want, $name) = @$g;
    $t->push_ok({ metric => 'provider_active_connections',
                  labels => { provider_id => 'p1' }, %$u }, $name);
    $t->scrape($name);
    is($t->value('playarr_provider_active_connections',
                 { provider_id => 'p1' }),
       $want, "$name: value $want");
}

$t->push_ok({ metric => 'active_users', op => 'set', value => 10 },
            'label-less gauge set, no labels field');
$t->push_ok({ metric => 'playarr_active_users', op => 'inc', labels => {} },
            'label-less gauge inc, empty labels, by name');
$t->push_ok({ metric => 'active_users', op => 'dec', value => 3 },
            'label-less gauge dec 3');
$t->scrape('label-less gauge');
is($t->value('playarr_active_users'), 8, 'label-less gauge: 10 + 1 - 3');

push_bad({ metric => 'provider_active_connections', op => 'observe',
           labels => { provider_id => 'p1' }, value => 1 }, 0,
         not_for('observe', 'playarr_provider_active_connections', 'gauge'),
         'observe on a gauge');
push_bad({ metric => 'provider_active_connections', op => 'set',
           labels => { provider_id => 'p1' } }, 0,
         qr/^"set" needs a "value"$/, 'set without a value');


# --- histograms: playarr_stream_request_duration_seconds, buckets
#     0.1 0.5 1 2 5 10 30 ---

my @obs = (0.05, 0.1, 0.7, 100, -1, 30);

for my $v (@obs) {
    $t->push_ok({ metric => 'stream_request_duration', op => 'observe',
                  labels => { media_type => 'movies' }, value => $v },
                "observe $v");
}

$t->scrape('histogram');
{
    my %l = (media_type => 'movies');
    my %want = (0.1 => 3, 0.5 => 3, 1 => 4, 2 => 4, 5 => 4, 10 => 4,
                30 => 5, '+Inf' => 6);
    for my $le (sort keys %want) {
        is($t->value('playarr_stream_request_duration_seconds_bucket',
                     { %l, le => $le }), $want{$le},
           "histogram: le=$le cumulative $want{$le}");
    }
    my $sum = 0;
    $sum += $_ for @obs;
    is($t->value('playarr_stream_request_duration_seconds_count', \%l), 6,
       'histogram: _count 6');
    ok($t->value('playarr_stream_request_duration_seconds_sum', \%l) == $sum,
       "histogram: _sum $sum");
}

$t->push_ok({ metric => 'playarr_stream_request_duration_seconds',
              op => 'observe', labels => { media_type => 'tv' }, value => 0.5 },
            'observe by full name');
$t->scrape('histogram by name');
is($t->value('playarr_stream_request_duration_seconds_count',
             { media_type => 'tv' }),
   1, 'observe by full name: _count 1');

for my $op (qw(inc dec set)) {
    push_bad({ metric => 'stream_request_duration', op => $op,
               labels => { media_type => 'movies' }, value => 1 }, 0,
             not_for($op, 'playarr_stream_request_duration_seconds',
                     'histogram'),
             "$op on a histogram");
}
push_bad({ metric => 'stream_request_duration', op => 'observe',
           labels => { media_type => 'movies' } }, 0,
         qr/^"observe" needs a "value"$/, 'observe without a value');


# --- reset ---

$t->push_ok([ map { { metric => 'provider_titles_count', op => 'set',
                      labels => { provider_id => $_, media_type => 'movies' },
                      value => 100 } } qw(p1 p2 p3) ],
            'three gauge series');
$t->push_ok({ metric => 'cache_operations', op => 'inc',
              labels => { operation => 'hit' }, value => 5 }, 'counter 5');
$t->scrape('before reset');
is(scalar(PlayarrTest::samples($t->scraped,
                               'playarr_provider_titles_count')), 3,
   'before reset: three gauge series');

$t->push_ok({ metric => 'provider_titles_count', op => 'reset' },
            'reset a gauge');
$t->push_ok({ metric => 'playarr_cache_operations_total', op => 'reset' },
            'reset a counter by full name');
$t->push_ok({ metric => 'stream_request_duration', op => 'reset' },
            'reset a histogram');
$t->scrape('after reset');
for my $f (qw(playarr_provider_titles_count playarr_cache_operations_total
              playarr_stream_request_duration_seconds))
{
    my @s = grep { /^\Q$f\E(?:_bucket|_sum|_count)?[{ ]/ }
            split /\n/, $t->scraped;
    is_deeply(\@s, [], "after reset: no $f sample");
    like($t->scraped, qr/^# HELP \Q$f\E /m, "after reset: $f # HELP kept");
    like($t->scraped, qr/^# TYPE \Q$f\E /m, "after reset: $f # TYPE kept");
}
is($t->value('playarr_stream_requests_total', { user => 'alice' }), 3.5,
   'reset leaves other families alone');

$t->push_ok({ metric => 'provider_titles_count', op => 'set',
              labels => { provider_id => 'p2', media_type => 'movies' },
              value => 7 }, 'set after reset');
$t->push_ok({ metric => 'provider_titles_count', op => 'inc',
              labels => { provider_id => 'p3', media_type => 'movies' } },
            'gauge inc after reset');
$t->push_ok({ metric => 'cache_operations', op => 'inc',
              labels => { operation => 'hit' } }, 'counter inc after reset');
$t->push_ok({ metric => 'stream_request_duration', op => 'observe',
              labels => { media_type => 'movies' }, value => 2 },
            'observe after reset');
$t->scrape('set again after reset');
is_deeply([ sort map { $_->[0]{provider_id} . '=' . $_->[1] }
            PlayarrTest::samples($t->scraped,
                                 'playarr_provider_titles_count') ],
          [ 'p2=7', 'p3=1' ],
          'after reset: only the series set again, from zero');
is($t->value('playarr_cache_operations_total', { operation => 'hit' }), 1,
   'counter after reset starts from 0');
is($t->value('playarr_stream_request_duration_seconds_count',
             { media_type => 'movies' }), 1, 'histogram after reset: _count 1');
is($t->value('playarr_stream_request_duration_seconds_sum',
             { media_type => 'movies' }), 2, 'histogram after reset: _sum 2');
is($t->value('playarr_stream_request_duration_seconds_bucket',
             { media_type => 'movies', le => '1' }), 0,
   'histogram after reset: old buckets gone');
ok(!defined $t->value('playarr_stream_request_duration_seconds_count',
                      { media_type => 'tv' }),
   'histogram after reset: a series not observed again stays hidden');

$t->push_ok({ metric => 'active_users', op => 'reset' },
            'reset a label-less gauge');
$t->push_ok({ metric => 'active_users', op => 'inc', value => 2 },
            'label-less gauge inc after reset');
$t->scrape('label-less after reset');
is($t->value('playarr_active_users'), 2, 'label-less gauge after reset: 0 + 2');

push_bad({ metric => 'provider_titles_count', op => 'reset',
           labels => { provider_id => 'p2', media_type => 'movies' } }, 0,
         qr/^"reset" takes neither "labels" nor "value"$/,
         'reset with labels');
push_bad({ metric => 'active_users', op => 'reset', value => 0 }, 0,
         qr/^"reset" takes neither "labels" nor "value"$/,
         'reset with a value');


# --- every rejection, and none of them changes anything ---

my $before = business($t->scrape('before the rejections'));
# every rejection of __DATA__: 400, application/json, the exact
# {"error", "index"} (malformed JSON: jansson's words, matched), counted
# by its reason
run_blocks(t => $t,
           headers => [ %AUTH, 'Content-Type' => 'application/json' ],
           sections => { reason => sub { $REJ{ $_[3] }++ } });

# 128 bytes is the limit, not beyond
$t->push_ok({ metric => 'stream_requests', op => 'inc',
              labels => { user => 'y' x 128 } }, 'label value of 128 bytes');

my $after = business($t->scrape('after the rejections'));
my %changed = map { $_ => 1 }
               grep { ($before->{$_} // '') ne ($after->{$_} // '') }
               keys %$before, keys %$after;
is_deeply([ sort keys %changed ],
          [ PlayarrTest::series_key('playarr_stream_requests_total',
                                    { user => 'y' x 128 }) ],
          'no rejected update changed anything');


# --- batches: validated whole before any applies ---

my @good2 = (
    { metric => 'job_executions', op => 'inc',
      labels => { job_type => 'sync', status => 'ok' } },
    { metric => 'provider_max_connections', op => 'set',
      labels => { provider_id => 'p9' }, value => 4 },
);

push_bad([ @good2, { metric => 'no_such_metric', op => 'inc' } ], 2,
         qr/^unknown metric "no_such_metric"$/, 'batch: bad third update');
push_bad([ @good2, { metric => 'stream_requests', op => 'inc',
                     labels => { user => 'a' }, value => -1 } ], 2,
         qr/negative/, 'batch: negative counter third');
push_bad([ { metric => 'stream_requests', op => 'dec',
             labels => { user => 'a' } }, @good2 ], 0,
         qr/does not apply/, 'batch: bad first update');
push_bad([ @good2, @good2, @good2, @good2, { metric => 'active_users' } ], 8,
         qr/^"op" must be one of/, 'batch: bad ninth update');
push_bad([ @good2, { metric => 'provider_titles_count', op => 'reset' },
           { metric => 'active_users', op => 'set', value => 'x' } ], 3,
         qr/finite number/, 'batch: a reset before the bad update');
push_bad('[' . join(',', map { $JSON->encode($_) } @good2) . ',{"metric":',
         undef, qr/^malformed JSON/, 'batch: malformed after two good updates');

$t->scrape('after the bad batches');
ok(!defined $t->value('playarr_job_executions_total',
                      { job_type => 'sync', status => 'ok' }),
   'bad batches: first update not applied');
ok(!defined $t->value('playarr_provider_max_connections',
                      { provider_id => 'p9' }),
   'bad batches: second update not applied');
is_deeply([ sort map { $_->[0]{provider_id} . '=' . $_->[1] }
            PlayarrTest::samples($t->scraped,
                                 'playarr_provider_titles_count') ],
          [ 'p2=7', 'p3=1' ], 'bad batches: the reset in one not applied');

$t->push_ok([ @good2, @good2, @good2 ], 'the same good updates, three times');
$t->push_ok([], 'an empty batch');
$t->scrape('after the good batch');
is($t->value('playarr_job_executions_total',
             { job_type => 'sync', status => 'ok' }),
   3, 'good batch: applied in full (3 incs)');
is($t->value('playarr_provider_max_connections', { provider_id => 'p9' }), 4,
   'good batch: set applied');

# a batch applies in order: set, inc, reset, set
$t->push_ok([ { metric => 'provider_active', op => 'set',
                labels => { provider_id => 'o' }, value => 1 },
              { metric => 'provider_active', op => 'inc',
                labels => { provider_id => 'o' } },
              { metric => 'provider_active', op => 'reset' },
              { metric => 'provider_active', op => 'set',
                labels => { provider_id => 'n' }, value => 0 } ],
            'batch in order');
$t->scrape('batch in order');
is_deeply([ map { $_->[0]{provider_id} . '=' . $_->[1] }
            PlayarrTest::samples($t->scraped, 'playarr_provider_active') ],
          [ 'n=0' ], 'batch in order: set, inc, reset, set');

# a large batch
{
    my @many = map { { metric => 'provider_titles_processed', op => 'inc',
                       labels => { provider_id => 'p' . ($_ % 10),
                                   media_type => 'movies' } } } 1 .. 2000;
    $t->push_ok(\@many, 'a batch of 2000 updates');
    $t->scrape('a batch of 2000');
    my $sum = 0;
    $sum += $_->[1] for PlayarrTest::samples(
                           $t->scraped,
                           'playarr_provider_titles_processed_total');
    is($sum, 2000, '2000 updates over 10 series: 2000');
    is($t->value('playarr_provider_titles_processed_total',
                 { provider_id => 'p3', media_type => 'movies' }), 200,
       'one of the 10 series: 200');
}


# --- fractional increments sum as JavaScript doubles ---

$t->push_ok({ metric => 'cache_operations', op => 'inc',
              labels => { operation => 'frac' }, value => 0.1 }, 'inc 0.1');
$t->push_ok({ metric => 'cache_operations', op => 'inc',
              labels => { operation => 'frac' }, value => 0.2 }, 'inc 0.2');
$t->push_ok([ map { { metric => 'cache_operations', op => 'inc',
                      labels => { operation => 'tenth' }, value => 0.1 } }
              1 .. 10 ],
        'ten times inc 0.1');
$t->scrape('fractions');
is((grep { /operation="frac"/ } split /\n/, $t->scraped)[0],
   'playarr_cache_operations_total{operation="frac"} 0.30000000000000004',
   '0.1 + 0.2 = 0.30000000000000004, as JavaScript prints it');
ok($t->value('playarr_cache_operations_total', { operation => 'tenth' })
             == 0.9999999999999999,
   'ten times 0.1 = 0.9999999999999999 (a double sum, not 1)');
is((grep { /operation="tenth"/ } split /\n/, $t->scraped)[0],
   'playarr_cache_operations_total{operation="tenth"} 0.9999999999999999',
   'ten times 0.1 printed as JavaScript prints it: 0.9999999999999999');
{
    my $r = $t->get('/metrics/json', headers => \%AUTH);
    like($r->{body},
         qr/"value":0\.30000000000000004,"labels":\{"operation":"frac"\}/,
         '/metrics/json: 0.30000000000000004');
}


# --- who may push, how ---

{
    my $u = $JSON->encode({ metric => 'user_operations', op => 'inc',
                            labels => { operation => 'auth',
                                        username => 'x' } });

    my $r = $t->push_updates($u, headers => [ 'Content-Type'
                                              => 'application/json' ]);
    is($r->{status}, 401, 'no token: 401');
    like(PlayarrTest::header($r, 'WWW-Authenticate') // '',
         qr/^Bearer realm="playarr-metrics"/, 'no token: Bearer challenge');

    $r = $t->push_updates($u,
                          headers => [ Authorization => 'Bearer ' . ('f' x 64),
                                       'Content-Type' => 'application/json' ]);
    is($r->{status}, 401, 'wrong token: 401');
    like(PlayarrTest::header($r, 'WWW-Authenticate') // '',
         qr/error="invalid_token"/, 'wrong token: invalid_token');

    $r = $t->push_updates($u, path => '/push-open',
                          headers => [ 'Content-Type' => 'application/json' ]);
    is($r->{status}, 204, 'playarr_metrics_auth off: no token needed');

    for my $m (qw(GET HEAD PUT DELETE PATCH OPTIONS)) {
        $r = $t->push_updates($m =~ /^(?:GET|HEAD|DELETE|OPTIONS)$/ ? undef
                                                                    : $u,
                              method => $m);
        is($r->{status}, 405, "$m: 405");
        is(PlayarrTest::header($r, 'Allow'), 'POST', "$m: Allow: POST");
    }

    my @types = (
        [ undef,                              415 ],
        [ 'text/plain',                       415 ],
        [ 'application/x-www-form-urlencoded', 415 ],
        [ 'application/jsonp',                415 ],
        [ 'application/json-seq',             415 ],
        [ 'text/json',                        415 ],
        [ 'application/json; charset=utf-8',  204 ],
        [ 'application/json;charset=UTF-8',   204 ],
        [ 'Application/JSON',                 204 ],
    );

    for my $c (@types) {
        my ($type, $want) = @$c;
        my $name = 'Content-Type ' . ($type // 'missing');
        $r = $t->push_updates($u, headers => [ %AUTH,
                                               defined $type
                                               ? ('Content-Type' => $type)
                                               : () ]);
        is($r->{status}, $want, "$name: $want");
        if ($want == 415) {
            is_deeply(PlayarrTest::json_body($r),
                      { error => 'Content-Type must be application/json' },
                      "$name: JSON error");
        }
    }

    $t->scrape('after auth, method and type checks');
    is($t->value('playarr_user_operations_total',
                 { operation => 'auth', username => 'x' }), 4,
       'only the accepted pushes counted (auth off + 3 JSON types)');
}

# a keep-alive connection goes on after a rejected push with a body
{
    my $c = $t->connect;
    my @json = (%AUTH, 'Content-Type' => 'application/json');
    my $bad = $c->request('POST', '/push', body => '{"metric":1}',
                          headers => \@json);
    my $wrong = $c->request('POST', '/push', body => 'x' x 3000,
                            headers => [ %AUTH,
                                         'Content-Type' => 'text/plain' ]);
    my $get = $c->request('GET', '/push', headers => \%AUTH);
    my $good = $c->request('POST', '/push',
                           body => '{"metric":"active_users","op":"inc"}',
                           headers => \@json);
    $c->close;
    $REJ{invalid}++;
    is_deeply([ map { $_->{status} } $bad, $wrong, $get, $good ],
              [ 400, 415, 405, 204 ], 'keep-alive: 400, 415, 405, then 204');
}


# --- body size ---

{
    my $MiB = 1024 * 1024;
    my $u = '{"metric":"watchlist_channels_count","op":"set",'
            . '"labels":{"user":"big"},"value":1}';
    my $exact = $u . (' ' x ($MiB - length $u));
    my $over = $exact . ' ';

    is(length $exact, $MiB, 'a body of exactly 1 MiB');

    my $r = $t->push_updates($exact, path => '/push-big');
    is($r->{status}, 204, '1 MiB: accepted') or diag($r->{raw});

    $r = $t->push_updates($over, path => '/push-big');
    is($r->{status}, 413, '1 MiB + 1: 413');
    is_deeply(PlayarrTest::json_body($r),
              { error => 'Request body is larger than 1 MiB' },
              '1 MiB + 1: JSON error');
    $REJ{too_large}++;

    # no Content-Length: the size is known once the body is read
    my $chunked = sprintf("%x\r\n%s\r\n0\r\n\r\n", length $over, $over);
    $r = $t->push_updates($chunked, path => '/push-big',
                          headers => [ %AUTH,
                                       'Content-Type' => 'application/json',
                                       'Transfer-Encoding' => 'chunked' ]);
    is($r->{status}, 413, 'chunked 1 MiB + 1: 413');
    is_deeply(PlayarrTest::json_body($r),
              { error => 'Request body is larger than 1 MiB' },
              'chunked 1 MiB + 1: JSON error');
    $REJ{too_large}++;

    # where nginx's own client_max_body_size (1m) stops it first
    $r = $t->push_updates($over);
    is($r->{status}, 413, '1 MiB + 1 on a location with the default '
                          . 'client_max_body_size: 413');

    $t->scrape('after the big bodies');
    is($t->value('playarr_watchlist_channels_count', { user => 'big' }), 1,
       'the 1 MiB body applied');
}


# --- exact counts across workers ---

{
    my $u = $JSON->encode({ metric => 'best_source_selections', op => 'inc',
                            labels => { provider_id => 'race' } });
    my $h = $JSON->encode({ metric => 'provider_categories_synced', op => 'inc',
                            labels => { provider_id => 'race',
                                        media_type => 'tv' }, value => 0.25 });
    my %pids;
    my $ok = 0;

    for my $i (1 .. 200) {
        my $r = $t->push_updates($i % 2 ? $u : $h);
        $ok++ if $r->{status} == 204;
        my $pid = PlayarrTest::header($r, 'X-Worker-Pid');
        $pids{$pid}++ if defined $pid;
    }

    is($ok, 200, '200 pushes accepted');
    is(scalar keys %pids, 2, 'both workers took pushes')
        or diag(explain \%pids);
    $t->scrape('after 200 pushes');
    is($t->value('playarr_best_source_selections_total',
                 { provider_id => 'race' }),
       100, '100 increments of 1 from both workers: 100');
    is($t->value('playarr_provider_categories_synced_total',
                 { provider_id => 'race', media_type => 'tv' }),
       25, '100 increments of 0.25 from both workers: 25');
}


# --- the handlers are not recorded; rejections are counted ---

{
    my $r = $t->get('/hello');
    is($r->{status}, 200, 'an ordinary request');

    $t->scrape('final');
    my $n = 0;
    $n += $_->[1]
        for PlayarrTest::samples($t->scraped, 'playarr_http_requests_total');
    is($n, 1, 'playarr_http_requests_total counts /hello only, no push');

    for my $reason (sort keys %REJ) {
        is($t->value('playarr_metrics_updates_rejected_total',
                     { source => 'push', reason => $reason }), $REJ{$reason},
           "updates_rejected_total{source=push,reason=$reason} $REJ{$reason}");
        is($t->value('playarr_metrics_updates_rejected_total',
                     { source => 'header', reason => $reason }), 0,
           "updates_rejected_total{source=header,reason=$reason} 0");
    }

    $t->self_metrics_ok($t->scraped);
}

# a reload (same zone, same schema) keeps every pushed value
{
    my $before_reload = business($t->scraped);
    $t->reload;
    $t->scrape('after reload');
    is_deeply(business($t->scraped), $before_reload,
              'reload: every pushed series kept, with its value');
    $t->push_ok({ metric => 'best_source_selections', op => 'inc',
                  labels => { provider_id => 'race' } }, 'push after reload');
    $t->scrape('push after reload');
    is($t->value('playarr_best_source_selections_total',
                 { provider_id => 'race' }),
       101, 'push after reload adds to the kept value');
}

$t->stop;

# one warning a minute at most
{
    my @warn = grep { /\[warn\].*playarr_metrics rejected an update from push/ }
               split /\n/, $t->error_log_text;
    my $minutes = int((time - $started) / 60) + 1;
    ok(@warn >= 1, 'a rejection is logged at warn');
    ok(@warn <= $minutes + 1, scalar(@warn) . " warnings in $minutes minute(s)")
        or diag(join "\n", @warn);
    unlike($t->error_log_text, qr/\Q$TOKEN\E/, 'the token is not logged');
}

done_testing;

__DATA__

=== push error: unknown metric
--- request
POST /push
--- request_body
{"metric":"no_such_metric","op":"inc"}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"unknown metric \"no_such_metric\"","index":0}
--- reason: invalid

=== push error: unknown full name
--- request
POST /push
--- request_body
{"metric":"playarr_no_such_total","op":"inc"}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"unknown metric \"playarr_no_such_total\"","index":0}
--- reason: invalid

=== push error: metric keys are case-sensitive
--- request
POST /push
--- request_body
{"labels":{"user":"a"},"metric":"Stream_Requests","op":"inc"}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"unknown metric \"Stream_Requests\"","index":0}
--- reason: invalid

=== push error: no metric
--- request
POST /push
--- request_body
{"op":"inc"}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"\"metric\" must be a metric key or name","index":0}
--- reason: invalid

=== push error: metric not a string
--- request
POST /push
--- request_body
{"metric":5,"op":"inc"}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"\"metric\" must be a metric key or name","index":0}
--- reason: invalid

=== push error: no op
--- request
POST /push
--- request_body
{"labels":{"user":"a"},"metric":"stream_requests"}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"\"op\" must be one of inc, dec, set, observe, reset","index":0}
--- reason: invalid

=== push error: unknown op
--- request
POST /push
--- request_body
{"labels":{"user":"a"},"metric":"stream_requests","op":"add"}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"\"op\" must be one of inc, dec, set, observe, reset","index":0}
--- reason: invalid

=== push error: op in upper case
--- request
POST /push
--- request_body
{"labels":{"user":"a"},"metric":"stream_requests","op":"INC"}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"\"op\" must be one of inc, dec, set, observe, reset","index":0}
--- reason: invalid

=== push error: no labels
--- request
POST /push
--- request_body
{"metric":"stream_requests","op":"inc"}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"missing label \"user\" for \"playarr_stream_requests_total\"","index":0}
--- reason: invalid

=== push error: one label missing
--- request
POST /push
--- request_body
{"labels":{"job_type":"sync"},"metric":"job_executions","op":"inc"}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"missing label \"status\" for \"playarr_job_executions_total\"","index":0}
--- reason: invalid

=== push error: extra label
--- request
POST /push
--- request_body
{"labels":{"extra":"b","user":"a"},"metric":"stream_requests","op":"inc"}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"unknown label \"extra\" for \"playarr_stream_requests_total\"","index":0}
--- reason: invalid

=== push error: wrong label name
--- request
POST /push
--- request_body
{"labels":{"username":"a"},"metric":"stream_requests","op":"inc"}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"missing label \"user\" for \"playarr_stream_requests_total\"","index":0}
--- reason: invalid

=== push error: a label on a label-less family
--- request
POST /push
--- request_body
{"labels":{"user":"a"},"metric":"active_users","op":"inc"}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"unknown label \"user\" for \"playarr_active_users\"","index":0}
--- reason: invalid

=== push error: labels an array
--- request
POST /push
--- request_body
{"labels":["user","a"],"metric":"stream_requests","op":"inc"}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"\"labels\" must be an object","index":0}
--- reason: invalid

=== push error: label value true
--- request
POST /push
--- request_body
{"labels":{"user":true},"metric":"stream_requests","op":"inc"}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"label \"user\" must be a string","index":0}
--- reason: invalid

=== push error: label value null
--- request
POST /push
--- request_body
{"labels":{"user":null},"metric":"stream_requests","op":"inc"}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"label \"user\" must be a string","index":0}
--- reason: invalid

=== push error: label value 1.5
--- request
POST /push
--- request_body
{"labels":{"user":1.5},"metric":"stream_requests","op":"inc"}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"label \"user\" must be a string","index":0}
--- reason: invalid

=== push error: label value an object
--- request
POST /push
--- request_body
{"labels":{"user":{"a":1}},"metric":"stream_requests","op":"inc"}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"label \"user\" must be a string","index":0}
--- reason: invalid

=== push error: label value of 129 bytes
--- request
POST /push
--- request_body eval
'{"labels":{"user":"' . ("x" x 129) . '"},"metric":"stream_requests","op":"inc"}'
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"label \"user\" is longer than 128 bytes","index":0}
--- reason: invalid

=== push error: value a string
--- request
POST /push
--- request_body
{"metric":"active_users","op":"set","value":"1"}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"\"value\" must be a finite number","index":0}
--- reason: invalid

=== push error: value null
--- request
POST /push
--- request_body
{"metric":"active_users","op":"set","value":null}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"\"value\" must be a finite number","index":0}
--- reason: invalid

=== push error: value true
--- request
POST /push
--- request_body
{"metric":"active_users","op":"set","value":true}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"\"value\" must be a finite number","index":0}
--- reason: invalid

=== push error: value an array
--- request
POST /push
--- request_body
{"metric":"active_users","op":"set","value":[1]}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"\"value\" must be a finite number","index":0}
--- reason: invalid

=== push error: unknown field
--- request
POST /push
--- request_body
{"metric":"active_users","op":"set","unit":"s","value":1}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"unknown field \"unit\"","index":0}
--- reason: invalid

=== push error: field names are case-sensitive
--- request
POST /push
--- request_body
{"Labels":{},"metric":"active_users","op":"set","value":1}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"unknown field \"Labels\"","index":0}
--- reason: invalid

=== push error: a number in the array
--- request
POST /push
--- request_body
[1]
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"an update must be an object","index":0}
--- reason: invalid

=== push error: a string in the array
--- request
POST /push
--- request_body
["inc"]
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"an update must be an object","index":0}
--- reason: invalid

=== push error: an array in the array
--- request
POST /push
--- request_body
[[]]
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"an update must be an object","index":0}
--- reason: invalid

=== push error: null in the array
--- request
POST /push
--- request_body
[null]
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":"an update must be an object","index":0}
--- reason: invalid

=== push error, malformed: unterminated object
--- request
POST /push
--- request_body
{
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body_like
^\{"error":"malformed JSON: .+ at line \d+ column -?\d+"\}$
--- reason: malformed

=== push error, malformed: unterminated array
--- request
POST /push
--- request_body
[{"metric":"active_users","op":"inc"},
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body_like
^\{"error":"malformed JSON: .+ at line \d+ column -?\d+"\}$
--- reason: malformed

=== push error, malformed: not JSON
--- request
POST /push
--- request_body
not json
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body_like
^\{"error":"malformed JSON: .+ at line \d+ column -?\d+"\}$
--- reason: malformed

=== push error, malformed: empty body
--- request
POST /push
--- request_body eval
""
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body_like
^\{"error":"malformed JSON: .+ at line \d+ column -?\d+"\}$
--- reason: malformed

=== push error, malformed: only spaces
--- request
POST /push
--- request_body eval
"   "
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body_like
^\{"error":"malformed JSON: .+ at line \d+ column -?\d+"\}$
--- reason: malformed

=== push error, malformed: two documents
--- request
POST /push
--- request_body
{"metric":"active_users","op":"inc"} {}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body_like
^\{"error":"malformed JSON: .+ at line \d+ column -?\d+"\}$
--- reason: malformed

=== push error, malformed: NaN
--- request
POST /push
--- request_body
{"metric":"active_users","op":"set","value":NaN}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body_like
^\{"error":"malformed JSON: .+ at line \d+ column -?\d+"\}$
--- reason: malformed

=== push error, malformed: Infinity
--- request
POST /push
--- request_body
{"metric":"active_users","op":"set","value":Infinity}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body_like
^\{"error":"malformed JSON: .+ at line \d+ column -?\d+"\}$
--- reason: malformed

=== push error, malformed: -Infinity
--- request
POST /push
--- request_body
{"metric":"active_users","op":"set","value":-Infinity}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body_like
^\{"error":"malformed JSON: .+ at line \d+ column -?\d+"\}$
--- reason: malformed

=== push error, malformed: 1e400
--- request
POST /push
--- request_body
{"metric":"active_users","op":"set","value":1e400}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body_like
^\{"error":"malformed JSON: .+ at line \d+ column -?\d+"\}$
--- reason: malformed

=== push error, malformed: duplicate field
--- request
POST /push
--- request_body
{"metric":"active_users","op":"set","value":1,"value":2}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body_like
^\{"error":"malformed JSON: .+ at line \d+ column -?\d+"\}$
--- reason: malformed

=== push error, malformed: invalid UTF-8
--- request
POST /push
--- request_body eval
"{\"metric\":\"stream_requests\",\"op\":\"inc\",\"labels\":{\"user\":\"\xff\"}}"
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body_like
^\{"error":"malformed JSON: .+ at line \d+ column -?\d+"\}$
--- reason: malformed

=== push error, malformed: single quotes
--- request
POST /push
--- request_body
{'metric':'active_users','op':'inc'}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body_like
^\{"error":"malformed JSON: .+ at line \d+ column -?\d+"\}$
--- reason: malformed

=== push error, malformed: a bare string
--- request
POST /push
--- request_body
"active_users"
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body_like
^\{"error":"malformed JSON: .+ at line \d+ column -?\d+"\}$
--- reason: malformed

=== push error, malformed: a label value with a NUL (\u0000)
--- request
POST /push
--- request_body
{"metric":"stream_requests","op":"inc","labels":{"user":"a\u0000b"}}
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body_like
^\{"error":"malformed JSON: .+ at line \d+ column -?\d+"\}$
--- reason: malformed
