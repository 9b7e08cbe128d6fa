#!/usr/bin/perl

# Reloads under load (docs/operations.md): 50 reloads
# (`nginx -s reload` and SIGHUP, alternately) while forked clients keep
# sending requests and pushes lose nothing and crash nothing: every
# answered request is counted exactly once.  Then reloads that change a
# definition: the HTTP duration buckets, and a schema family's labels
# while an old worker is still finishing a request whose upstream header
# updates that family.  The changed family starts fresh with a [warn] (or
# migrates cleanly), the others keep their values, promtool passes.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::INET;
use JSON::PP;
use Test::More;
use Time::HiRes qw(time sleep);
use PlayarrTest qw(family_sum);

PlayarrTest::need_module();
PlayarrTest::need_all('50 reloads under load (25 s)');

my $SCHEMA = PlayarrTest::need_schema();

my $RELOADS = $ENV{PLAYARR_RELOADS} || 50;
my $CLIENTS = 5;
my $REQS = 'playarr_http_requests_total';
my $DUR = 'playarr_http_request_duration_seconds';
my $STREAM = 'playarr_stream_requests_total';
my $CACHE = 'playarr_cache_operations_total';
my $JSON = JSON::PP->new->canonical->utf8;
my $T0 = time;

sub conf {
    my ($extra) = @_;
    $extra //= '';

    return <<"EOF";
    playarr_metrics_zone playarr:4m;
    playarr_metrics_token_file %%DIR%%/metrics.token;
    playarr_metrics_schema %%DIR%%/schema.json;
    playarr_metrics_route /api/titles/:title_key;
    playarr_metrics_route /slow/:file;
    playarr_metrics_upstream_header X-Playarr-Metrics;
    $extra

    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        server_name localhost;
        keepalive_requests 100000;

        playarr_metrics_username \$http_x_user;
        add_header X-Worker-Pid \$pid always;

        location = /metrics { playarr_metrics_export; }
        location = /push { playarr_metrics_push; }
        location = /sync { playarr_metrics off; return 204; }
        location /api/titles/ { return 200 "title"; }

        # a response that takes about two seconds to deliver, whose
        # upstream header updates stream_requests with the old labels
        location /slow/ {
            limit_rate 100k;
            proxy_pass http://127.0.0.1:%%PORT2%%/;
        }

        location / { return 404; }
    }

    server {
        listen 127.0.0.1:%%PORT2%%;
        server_name upstream;
        playarr_metrics off;
        root %%DIR%%/www;
        add_header X-Playarr-Metrics
            '{"metric":"stream_requests","op":"inc","labels":{"user":"old"}}';
    }
EOF
}

my $schema = JSON::PP->new->decode(do {
    open my $fh, '<', $SCHEMA or die "$SCHEMA: $!";
    local $/;
    <$fh>;
});

my $t = PlayarrTest->new(http => conf());
$t->write_file('schema.json', $JSON->encode($schema));
mkdir $t->path('www') or die "mkdir: $!";
$t->write_file('www/big', 'x' x (200 * 1024));
$t->start;

my $TOKEN = $t->read_token('metrics.token');
my %AUTH = (Authorization => "Bearer $TOKEN");

$t->scrape_setup(token => $TOKEN);


# --- local helpers ----------------------------------------------------------

# a client: requests until $stop exists (at most 60 s, 200000 requests),
# then /sync on the same connection; writes what was answered
sub client {
    my ($i, $stop) = @_;
    my $st = { retries => 0 };
    my (%n, $bad);
    my $user = 'user' . ($i % 3);
    my $until = time + 60;
    $bad = 0;

    for my $j (0 .. 199_999) {
        last if -e $stop || time > $until;

        my ($path, $want, $ep) = $j % 4
            ? ("/api/titles/tt$j", 200, '/api/titles/:title_key')
            : ("/nope/$j", 404, 'unknown_endpoint');
        my $r = $t->keepalive_request($st, 'GET', $path, headers => { 'X-User' => $user });

        if ($r->{status} == $want) {
            $n{"$ep\t$want\t$user"}++;
        } else {
            $bad++;
        }
    }

    $bad++ if $t->keepalive_request($st, 'GET', '/sync')->{status} != 204;

    $t->write_file("client-$i", join '',
                   (map { "n\t$_\t$n{$_}\n" } keys %n),
                   "bad\t$bad\n", "retries\t$st->{retries}\n");
}

# a pusher: one inc of stream_requests{user="pusher"} per POST
sub pusher {
    my ($stop) = @_;
    my $st = { retries => 0 };
    my ($ok, $bad) = (0, 0);
    my $until = time + 60;
    my $body = $JSON->encode({ metric => 'stream_requests', op => 'inc',
                               labels => { user => 'pusher' } });

    while (!-e $stop && time < $until) {
        my $r = $t->keepalive_request($st, 'POST', '/push', body => $body,
                         headers => [%AUTH,
                                     'Content-Type' => 'application/json']);
        if ($r->{status} == 204) { $ok++ } else { $bad++ }
        sleep 0.002;
    }

    $t->write_file('pusher', "ok\t$ok\nbad\t$bad\nretries\t$st->{retries}\n");
}

sub read_kv {
    my ($name) = @_;
    my %h;
    my $s = $t->read_file($name) // return undef;

    for (split /\n/, $s) {
        my @f = split /\t/;
        if ($f[0] eq 'n') { $h{n}{"$f[1]\t$f[2]\t$f[3]"} += $f[4] }
        else { $h{ $f[0] } += $f[1] }
    }

    return \%h;
}

sub family {
    my ($m, $name) = @_;
    return { map { $_ => $m->{$_} } grep { /^\Q$name\E(?:\{|$)/ } keys %$m };
}

# bucket bounds in their numeric order, +Inf last
sub sort_le {
    return sort { ($a eq '+Inf') <=> ($b eq '+Inf')
                  || ($a eq '+Inf' ? 0 : $a <=> $b) } @_;
}

# --- 1: 50 reloads under load ------------------------------------------------

my $m0 = $t->scrape_series('before the reloads');
my $stop = $t->path('stop');

for my $i (0 .. $CLIENTS - 1) {
    PlayarrTest::spawn(sub { client($i, $stop) });
}
PlayarrTest::spawn(sub { pusher($stop) });

my ($reload_err, @gen, @sums) = ('');
my $tr = time;

# let traffic start
sleep 0.3;

for my $k (1 .. $RELOADS) {
    my @w = eval { $t->reload(signal => $k % 2) };

    if (!@w) {
        $reload_err = "reload $k: $@";
        last;
    }

    push @gen, \@w;

    if ($k % 10 == 0) {
        my $m = $t->scrape_series("after reload $k");
        push @sums, family_sum($m, $REQS);
    }
}

my $reload_time = time - $tr;
$t->write_file('stop', '');

my $failed = PlayarrTest::reap_kids();

is($reload_err, '', "$RELOADS reloads under load, each complete");
is(scalar @gen, $RELOADS, "$RELOADS generations of workers");
is($failed, 0, 'every client finished');
ok(!grep({ $sums[$_] < $sums[$_ - 1] } 1 .. $#sums),
   "requests_total never went down between reloads (@sums)");

my (%want, $bad, $retries, $answered);
$bad = $retries = $answered = 0;

for my $i (0 .. $CLIENTS - 1) {
    my $h = read_kv("client-$i") or do { $bad++; next };
    $want{$_} += $h->{n}{$_} for keys %{ $h->{n} || {} };
    $bad += $h->{bad} // 0;
    $retries += $h->{retries} // 0;
}
$answered += $_ for values %want;

my $ph = read_kv('pusher') || {};
is($bad, 0, 'every client request got its expected status');
is($ph->{bad} // 0, 0, 'every push answered 204');
ok($answered > 1000, "$answered requests answered during the reloads");

note(sprintf '%d reloads in %.1f s under load: %d requests, %d pushes,'
             . ' %d requests sent again after a closed connection',
     $RELOADS, $reload_time, $answered, $ph->{ok} // 0,
     $retries + ($ph->{retries} // 0));

# every answered request counted exactly once, per series
my $m1;
my $deadline = time + 5;
do {
    $m1 = $t->quiet_series(or_undef => 1);
} while ((!$m1 || family_sum($m1, $REQS) - family_sum($m0, $REQS) < $answered)
         && time < $deadline && sleep 0.05);

$m1 = $t->scrape_series('after the load');

my %got;
for my $k (keys %want) {
    my ($ep, $status, $user) = split /\t/, $k;
    my $sk = PlayarrTest::series_key($REQS, { endpoint => $ep,
                                              status_code => $status,
                                              username => $user });
    $got{$k} = ($m1->{$sk} // 0) - ($m0->{$sk} // 0);
}

is_deeply(\%got, \%want, 'every requests_total series grew by exactly'
                         . ' what was answered');
is(family_sum($m1, $REQS) - family_sum($m0, $REQS), $answered,
   "requests_total grew by $answered in all");
is(family_sum($m1, "${DUR}_count") - family_sum($m0, "${DUR}_count"),
   $answered, "duration _count grew by $answered");
is(PlayarrTest::sample($m1, $STREAM, { user => 'pusher' }) // 0,
   $ph->{ok} // -1, 'every answered push applied once');

my @bad = $t->bad_log_lines;
ok(!@bad, 'no alert, emerg, crit or crash in the reloads')
    or diag(join "\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)]);


# --- 2: a reload that changes the duration buckets ---------------------------

# a value in a schema family, kept across the next reloads
is($t->request('POST', '/push', headers => [%AUTH, 'Content-Type'
                                            => 'application/json'],
               body => $JSON->encode({ metric => 'cache_operations',
                                       op => 'inc', value => 5,
                                       labels => { operation => 'hit' } })
              )->{status}, 204, 'push cache_operations 5');

my $mb = $t->scrape_series('before the buckets change');
my $mark = $t->log_mark;

$t->configure(http => conf('playarr_metrics_buckets 0.1 1 10;'));
$t->reload;

my $ma = $t->scrape_series('after the buckets change');
my $log = $t->log_since($mark);

is_deeply(family($ma, $REQS), family($mb, $REQS),
          'buckets change: requests_total kept');
is_deeply(family($ma, $STREAM), family($mb, $STREAM),
          'buckets change: stream_requests kept');
is(PlayarrTest::sample($ma, $CACHE, { operation => 'hit' }), 5,
   'buckets change: cache_operations kept');

{
    my %les;
    for my $s (PlayarrTest::samples($ma, "${DUR}_bucket")) {
        my %l = %{ $s->[0] };
        my $le = delete $l{le};
        push @{ $les{ PlayarrTest::series_key($DUR, \%l) } }, $le;
    }

    my $new = join ',', sort { $a <=> $b } 0.1, 1, 10;
    my @old = grep {
        join(',', sort { $a <=> $b } grep { $_ ne '+Inf' } @{ $les{$_} })
            ne $new
    } sort keys %les;

    # fresh: a [warn] names the family, and the series counted before
    # the reload are gone (no traffic since)
    my $fresh = $log =~ /\[warn\][^\n]*"\Q$DUR\E"[^\n]*(?:changed|fresh|zero)/;
    my $fresh_ok = $fresh && !keys %les;

    ok($fresh_ok || !@old,
       'buckets change: the duration family started fresh with a [warn],'
       . ' or every series has the new bounds')
        or diag(($fresh ? 'a [warn] was logged' : 'no [warn] was logged')
                . '; ' . scalar(@old) . ' of ' . scalar(keys %les)
                . ' duration series still show other bounds than'
                . " 0.1 1 10 after the reload, e.g. $old[0]: le="
                . join(',', sort_le(@{ $les{ $old[0] } })));
}

# new requests after the change are counted, with the new bounds
{
    my $st = {};
    for my $j (1 .. 20) {
        $t->keepalive_request($st, 'GET', "/api/titles/new$j",
                 headers => { 'X-User' => 'after-buckets' });
    }
    $t->keepalive_request($st, 'GET', '/sync');
    $st->{c}->close if $st->{c};

    my $m = $t->scrape_series('traffic after the buckets change');
    my %l = (endpoint => '/api/titles/:title_key', username => 'after-buckets');
    is(PlayarrTest::sample($m, "${DUR}_count", \%l), 20,
       'buckets change: a new series counts');
    is(PlayarrTest::sample($m, "${DUR}_bucket", { %l, le => '10' }), 20,
       'buckets change: a new series has the new bounds');
    is(family_sum($m, $REQS), family_sum($ma, $REQS) + 20,
       'buckets change: requests_total counts on');
}


# --- 3: a schema family changes its labels, an old worker still busy ---------

# the slow request: its response takes ~2 s, the reload happens meanwhile;
# its upstream header carries an update with the old labels, applied by
# the old worker when it logs the request
my $slow = PlayarrTest::spawn(sub {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $t->port, Proto => 'tcp',
                                  Timeout => 10) or die "connect: $@";
    binmode $s;
    print {$s} "GET /slow/big HTTP/1.1\r\nHost: localhost\r\n"
               . "X-User: slow\r\nConnection: close\r\n\r\n";
    my $buf = '';
    while (sysread $s, $buf, 65536, length $buf) {
        $t->write_file('slow-started', '') if !-e $t->path('slow-started')
                                              && $buf =~ /\r\n\r\n/;
    }
    my ($status) = $buf =~ m{^HTTP/1\.1 (\d+)};
    my $len = length($buf) - index($buf, "\r\n\r\n") - 4;
    $t->write_file('slow-result', ($status // 0) . " $len "
                   . ($buf =~ /^X-Playarr-Metrics/mi ? 'leaked' : 'hidden'));
});

{
    my $until = time + 5;
    sleep 0.02 while !-e $t->path('slow-started') && time < $until;
}
ok(-e $t->path('slow-started'), 'the slow request is under way');

my $mc = $t->quiet_series(or_undef => 1);
$schema->{metrics}{stream_requests}{labelNames} = ['user', 'client'];
$t->write_file('schema.json', $JSON->encode($schema));
$mark = $t->log_mark;

my $tl = time;
my @w = eval { $t->reload };
ok(@w, 'reload with the new labels') or diag($@);
note(sprintf 'the reload took %.1f s (the old worker finished the slow'
             . ' request first)', time - $tl);

PlayarrTest::reap_kids($slow);
is($t->read_file('slow-result'), '200 ' . 200 * 1024 . ' hidden',
   'the slow request completed across the reload, header hidden');

$log = $t->log_since($mark);
like($log, qr/\[warn\][^\n]*family "\Q$STREAM\E" changed/,
     'labels change: a [warn] names the family');
unlike($log, qr/\[warn\][^\n]*family "(?!\Q$STREAM\E")[^"]*" changed/,
       'labels change: no other family changed');

my $ml = $t->scrape_series('after the labels change');
is_deeply(family($ml, $STREAM), {},
          'labels change: the family starts fresh (no sample, not even the'
          . ' old worker\'s late update)');
is(PlayarrTest::sample($ml, 'playarr_metrics_series', { family => $STREAM }),
   0, 'labels change: playarr_metrics_series 0');
is(PlayarrTest::sample($ml, $CACHE, { operation => 'hit' }), 5,
   'labels change: cache_operations kept');
is(PlayarrTest::sample($ml, $REQS, { endpoint => '/slow/:file',
                                     status_code => 200,
                                     username => 'slow' }), 1,
   'labels change: the old worker counted its slow request');
{
    my %r = %{ family($ml, $REQS) };
    delete $r{ PlayarrTest::series_key($REQS, { endpoint => '/slow/:file',
                                                status_code => 200,
                                                username => 'slow' }) };
    is_deeply(\%r, family($mc, $REQS),
              'labels change: every other requests_total series kept');
}
is(PlayarrTest::sample($ml, 'playarr_metrics_updates_rejected_total',
                       { source => 'header', reason => 'invalid' }),
   $mc->{'playarr_metrics_updates_rejected_total{reason="invalid",'
         . 'source="header"}'},
   'labels change: the old worker\'s update was not counted as rejected');

my $push = sub {
    my ($u) = @_;
    return $t->request('POST', '/push',
                       headers => [%AUTH,
                                   'Content-Type' => 'application/json'],
                       body => $JSON->encode($u))->{status};
};

is($push->({ metric => 'stream_requests', op => 'inc',
             labels => { user => 'a', client => 'web' } }), 204,
   'labels change: a push with the new labels');
is($push->({ metric => 'stream_requests', op => 'inc',
             labels => { user => 'a' } }), 400,
   'labels change: a push with the old labels is refused');

$ml = $t->scrape_series('push after the labels change');
is_deeply(family($ml, $STREAM),
          { PlayarrTest::series_key($STREAM, { user => 'a', client => 'web' })
            => 1 }, 'labels change: only the new series');

# and back: the old definition is not resurrected, it starts fresh again
$schema->{metrics}{stream_requests}{labelNames} = ['user'];
$t->write_file('schema.json', $JSON->encode($schema));
$mark = $t->log_mark;
$t->reload;
like($t->log_since($mark), qr/\[warn\][^\n]*family "\Q$STREAM\E" changed/,
     'labels back: a [warn] again');
$ml = $t->scrape_series('labels back');
is_deeply(family($ml, $STREAM), {}, 'labels back: fresh again');

$t->stop;

note(sprintf 'took %.1f s', time - $T0);

done_testing;
