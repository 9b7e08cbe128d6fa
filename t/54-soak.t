#!/usr/bin/perl

# Soak (docs/metrics.md): under sustained concurrent
# load (forked HTTP clients and a pusher, about 20 s), hundreds of
# back-to-back scrapes (300) each pass promtool and the prometheus_client
# parser, have no duplicate series and +Inf == _count for every histogram
# series, and no counter, bucket, _count or _sum ever goes down from one
# scrape to the next.  At the end every answered request and push is
# counted exactly.
#
# The scrapes are kept in files while the load runs and checked once it
# is over: promtool once per body (two at a time), the python parser in
# one process for all of them; checking during the load would slow the
# scrapes down to a few per second.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use Test::More;
use Time::HiRes qw(time sleep);
use PlayarrTest;

PlayarrTest::need_module();
PlayarrTest::need_all('a soak of 300 scrapes under load (60 s)');

my $SCHEMA = PlayarrTest::need_schema();

my $SECONDS = $ENV{PLAYARR_SOAK_SECONDS} || 20;
my $SCRAPES = $ENV{PLAYARR_SOAK_SCRAPES} || 300;
my $CLIENTS = 3;
my $REQS = 'playarr_http_requests_total';
my $DUR = 'playarr_http_request_duration_seconds';
my $JSON = JSON::PP->new->canonical->utf8;
my $T0 = time;

my $t = PlayarrTest->new(http => <<"EOF");
    playarr_metrics_zone playarr:8m;
    playarr_metrics_token_file %%DIR%%/metrics.token;
    playarr_metrics_schema $SCHEMA;
    playarr_metrics_route /api/titles/:title_key;
    playarr_metrics_route /api/jobs/:jobName/trigger;
    playarr_metrics_route /api/auth/login;

    map \$status \$playarr_error_type {
        502      upstream_unavailable;
        default  "";
    }

    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        server_name localhost;
        keepalive_requests 100000;

        playarr_metrics_username \$http_x_user;
        playarr_metrics_error_type \$playarr_error_type;

        location = /metrics { playarr_metrics_export; }
        location = /push { playarr_metrics_push; }
        location = /sync { playarr_metrics off; return 204; }
        location /api/titles/ { return 200 "title"; }
        location /api/jobs/ { return 201 "job"; }
        location = /api/auth/login { return 401; }
        location = /api/broken { return 502; }
        location / { return 404; }
    }
EOF

$t->start;

my $TOKEN = $t->read_token('metrics.token');
my %AUTH = (Authorization => "Bearer $TOKEN");


# --- local helpers ----------------------------------------------------------



# One pass over a body (the harness's parser, fine for a few bodies, is
# too slow for hundreds): returns { "name{labels}" => value } with the
# labels as printed, the keys seen twice, and the histogram problems
# (buckets not cumulative, +Inf != _count, +Inf or _count missing).
sub parse_fast {
    my ($body) = @_;
    my (%m, @dup, %types, %last, %inf, %cnt, @hist);

    for my $line (split /\n/, $body) {
        if ($line =~ /^# TYPE (\S+) (\S+)/) {
            $types{$1} = $2;
            next;
        }

        next if $line =~ /^(?:#|$)/;

        my ($name, $labels, $value) =
            $line =~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/
            or do { push @hist, "unparsed line: $line"; next };

        my $k = defined $labels ? "$name\{$labels}" : $name;
        push @dup, $k if exists $m{$k};
        $m{$k} = $value;

        if ($name =~ /^(.*)_bucket$/ && ($types{$1} // '') eq 'histogram') {
            my $base = $1;
            my ($rest, $le) = ($labels // '') =~ /^(.*?),?le="([^"]*)"$/
                or do { push @hist, "$k: no le"; next };
            my $sk = "$base\{$rest}";
            push @hist, "$k: $value < $last{$sk}"
                if defined $last{$sk} && $value < $last{$sk};
            $last{$sk} = $value;
            $inf{$sk} = $value if $le eq '+Inf';

        } elsif ($name =~ /^(.*)_count$/
                 && ($types{$1} // '') eq 'histogram')
        {
            my $sk = "$1\{" . ($labels // '') . '}';
            push @hist, "$sk: +Inf " . ($inf{$sk} // 'none')
                        . " != _count $value"
                if ($inf{$sk} // -1) != $value;
            $cnt{$sk} = 1;
        }
    }

    push @hist, map { "$_: +Inf without _count" } grep { !$cnt{$_} }
                keys %inf;

    return (\%m, \@dup, \@hist, \%types);
}

# the type of the family of sample $name ("counter", "histogram", ...)
my %TYPE_OF;

sub type_of {
    my ($name, $types) = @_;

    return $TYPE_OF{$name} //= do {
        my $f = exists $types->{$name} ? $name
              : ($name =~ /^(.*)_(?:bucket|sum|count)$/
                 && exists $types->{$1}) ? $1 : $name;
        $types->{$f} // '';
    };
}


# --- the load ----------------------------------------------------------------

my $stop = $t->path('stop');
my @USERS = map { "user$_" } 0 .. 7;

my @PLAN = (
    [ 'GET', '/api/titles/tt%d', 200, '/api/titles/:title_key' ],
    [ 'GET', '/api/titles/tt%d', 200, '/api/titles/:title_key' ],
    [ 'POST', '/api/jobs/job%d/trigger', 201, '/api/jobs/:jobName/trigger' ],
    [ 'POST', '/api/auth/login', 401, '/api/auth/login' ],
    [ 'GET', '/nope/%d', 404, 'unknown_endpoint' ],
    [ 'GET', '/api/broken', 502, 'unknown_endpoint' ],
);

for my $i (0 .. $CLIENTS - 1) {
    PlayarrTest::spawn(sub {
        my $st = {};
        my (%n, $bad);
        my $until = time + $SECONDS + 30;
        $bad = 0;

        for my $j (0 .. 999_999) {
            last if -e $stop || time > $until;
            my ($m, $p, $want, $ep) = @{ $PLAN[($i + $j) % @PLAN] };
            my $user = $USERS[($i * 7 + $j) % @USERS];
            my $path = $p =~ /%d/ ? sprintf($p, $j) : $p;
            my $r = $t->keepalive_request($st, $m, $path,
                             headers => { 'X-User' => $user });
            if ($r->{status} == $want) { $n{"$ep\t$want\t$user"}++ }
            else { $bad++ }
        }

        $bad++ if $t->keepalive_request($st, 'GET', '/sync')->{status} != 204;
        $t->write_file("client-$i", join '', "bad\t$bad\n",
                       map { "n\t$_\t$n{$_}\n" } keys %n);
    });
}

# the pusher: counters, histograms, gauges (with resets), in batches
PlayarrTest::spawn(sub {
    my $st = {};
    my ($ok, $bad) = (0, 0);
    my $until = time + $SECONDS + 30;

    for my $k (0 .. 999_999) {
        last if -e $stop || time > $until;
        my $batch = [
            { metric => 'stream_requests', op => 'inc',
              labels => { user => $USERS[$k % 5] } },
            { metric => 'cache_operations', op => 'inc', value => 0.5,
              labels => { operation => $k % 2 ? 'hit' : 'miss' } },
            { metric => 'stream_request_duration', op => 'observe',
              labels => { media_type => $k % 2 ? 'movies' : 'series' },
              value => ($k % 40) / 10 },
            { metric => 'job_duration', op => 'observe',
              labels => { job_type => 'sync' }, value => 42 + $k % 3000 },
            { metric => 'provider_titles_count', op => 'reset' },
            { metric => 'provider_titles_count', op => 'set',
              labels => { provider_id => 'p' . $k % 3, media_type => 'movies' },
              value => $k },
            { metric => 'provider_active_connections', op => 'inc',
              labels => { provider_id => 'p1' }, value => $k % 2 ? 1 : -1 },
        ];
        my $r = $t->keepalive_request($st, 'POST', '/push', body => $JSON->encode($batch),
                         headers => [%AUTH,
                                     'Content-Type' => 'application/json']);
        if ($r->{status} == 204) { $ok++ } else { $bad++ }
        sleep 0.005;
    }

    $t->write_file('pusher', "$ok $bad");
});


# --- back-to-back scrapes ----------------------------------------------------

my $sc = {};
my (@files, @lat, $failed_scrapes);
$failed_scrapes = 0;
my $start = time;
my $pace = $SECONDS / $SCRAPES;

while (@files < $SCRAPES && time - $start < $SECONDS + 20) {
    my $t1 = time;
    my $r = $t->keepalive_request($sc, 'GET', '/metrics', headers => \%AUTH);
    push @lat, time - $t1;

    if ($r->{status} != 200) {
        $failed_scrapes++;
        next;
    }

    push @files, $t->write_file(sprintf('soak-%03d', scalar @files),
                                $r->{body});

    my $next = $start + @files * $pace;
    sleep $next - time if $next > time;
}

my $load_time = time - $start;
$t->write_file('stop', '');

my $kids_failed = PlayarrTest::reap_kids();

is($kids_failed, 0, 'every client and the pusher finished');
is($failed_scrapes, 0, 'every scrape answered 200');
is(scalar @files, $SCRAPES, "$SCRAPES scrapes under load");

@lat = sort { $a <=> $b } @lat;
note(sprintf '%d scrapes in %.1f s under load: median %.1f ms, max %.1f ms,'
             . ' %d bytes each at the end',
     scalar @files, $load_time, 1000 * $lat[@lat / 2], 1000 * $lat[-1],
     -s $files[-1]);


# --- every scrape ------------------------------------------------------------

my $tc = time;
my $pt = $t->promtool_batch(@files);
my @pt_bad = grep { !$pt->{$_}[0] } @files;
ok(!@pt_bad, 'promtool accepts every one of the ' . scalar(@files)
             . ' scrapes')
    or diag(scalar(@pt_bad) . " refused, e.g. $pt_bad[0]: "
            . $pt->{ $pt_bad[0] }[1]);
note(sprintf 'promtool: %.1f s for %d bodies', time - $tc, scalar @files);

$tc = time;
my $pp = $t->python_parse_batch(@files);
if ($pp) {
    my @pp_bad = grep { !($pp->{$_} && $pp->{$_}[0]) } @files;
    ok(!@pp_bad, 'the prometheus_client parser accepts every one')
        or diag(scalar(@pp_bad) . " refused, e.g. $pp_bad[0]: "
                . ($pp->{ $pp_bad[0] }[1] // 'no result'));
    note(sprintf 'prometheus_client parser: %.1f s', time - $tc);
} else {
    pass('prometheus_client parser not available: skipped');
}

$tc = time;
my (@dup, @hist, @down, $prev);

for my $f (@files) {
    my ($m, $dup, $hist, $types) = parse_fast($t->read_file($f) // '');

    push @dup, map { "$f: $_" } @$dup;
    push @hist, map { "$f: $_" } @$hist;

    if ($prev) {
        for my $k (keys %$prev) {
            my ($n) = $k =~ /^([^{]+)/;
            my $type = type_of($n, $types);
            next unless $type eq 'counter' || $type eq 'histogram';
            push @down, "$f: $k: $prev->{$k} -> " . ($m->{$k} // 'gone')
                if !defined $m->{$k} || $m->{$k} < $prev->{$k};
        }
    }

    $prev = $m;
}

ok(!@dup, 'no duplicate series in any scrape')
    or diag(join "\n", @dup[0 .. ($#dup < 9 ? $#dup : 9)]);
ok(!@hist, 'every histogram series: cumulative buckets, +Inf == _count')
    or diag(join "\n", @hist[0 .. ($#hist < 9 ? $#hist : 9)]);
ok(!@down, 'no counter, bucket, _count or _sum ever went down')
    or diag(join "\n", @down[0 .. ($#down < 9 ? $#down : 9)]);
note(sprintf 'invariants: %.1f s', time - $tc);


# --- exact in the end --------------------------------------------------------

my (%want, $bad);
$bad = 0;
for my $i (0 .. $CLIENTS - 1) {
    for (split /\n/, $t->read_file("client-$i") // "bad\t1") {
        my @f = split /\t/;
        if ($f[0] eq 'bad') { $bad += $f[1] }
        else { $want{"$f[1]\t$f[2]\t$f[3]"} += $f[4] }
    }
}
my ($pushed, $push_bad) = split ' ', $t->read_file('pusher') // '0 1';

is($bad, 0, 'every request got its expected status');
is($push_bad, 0, "every push answered 204 ($pushed)");

my $m = PlayarrTest::parse_metrics($t->metrics(token => $TOKEN,
                                               name => 'after the soak'));
my %got;
my $answered = 0;
for my $k (keys %want) {
    my ($ep, $status, $user) = split /\t/, $k;
    $got{$k} = PlayarrTest::sample($m, $REQS, { endpoint => $ep,
                                                status_code => $status,
                                                username => $user }) // 0;
    $answered += $want{$k};
}

is_deeply(\%got, \%want, "every requests_total series exact ($answered"
                         . ' requests)');
is(PlayarrTest::family_sum($m, "${DUR}_count"), $answered, 'duration _count exact');
my %by_status;
$by_status{ (split /\t/)[1] } += $want{$_} for keys %want;

is(PlayarrTest::family_sum($m, 'playarr_authentication_failures_total'),
   $by_status{401} // 0, 'authentication failures exact');
is(PlayarrTest::family_sum($m, 'playarr_managed_errors_total'), $by_status{502} // 0,
   'managed errors exact');
is(PlayarrTest::family_sum($m, 'playarr_stream_requests_total'), $pushed,
   'stream_requests: one per push');
is(PlayarrTest::family_sum($m, 'playarr_cache_operations_total'), $pushed / 2,
   'cache_operations: 0.5 per push');
is(PlayarrTest::family_sum($m, 'playarr_stream_request_duration_seconds_count'), $pushed,
   'stream_request_duration: one observation per push');

$t->stop;

note(sprintf 'took %.1f s', time - $T0);

done_testing;
