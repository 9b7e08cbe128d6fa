#!/usr/bin/perl

# Exact counts (docs/operations.md): thousands of requests over
# many concurrent keep-alive connections, served by both workers, are all
# counted, in requests_total, in the histogram's _count and in its +Inf
# bucket; scrapes taken meanwhile stay valid; the counts survive
# `nginx -s reload`, also with traffic going on during the reload.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time sleep);
use PlayarrTest;

PlayarrTest::need_module();

my $REQS = 'playarr_http_requests_total';
my $DUR = 'playarr_http_request_duration_seconds';

my $CHILDREN = $ENV{PLAYARR_COUNT_CHILDREN} || 20;
my $PER_CHILD = $ENV{PLAYARR_COUNT_REQUESTS} || 400;
my $USERS = 4;

# reuseport: the kernel spreads the connections over both workers
my $t = PlayarrTest->new(http => <<'EOF');
    playarr_metrics_zone playarr:4m;
    playarr_metrics_token_file %%DIR%%/metrics.token;

    playarr_metrics_route /api/titles/:title_key;
    playarr_metrics_route /api/jobs/:jobName/trigger;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        server_name localhost;
        keepalive_requests 100000;

        playarr_metrics_username $http_x_user;
        add_header X-Worker-Pid $pid always;

        location = /scrape { playarr_metrics_export; }
        location = /sync { playarr_metrics off; return 204; }

        location /api/titles/ { return 200 "title"; }
        location /api/jobs/ { return 201 "job"; }
        location / { return 404; }
    }
EOF

$t->start;
my $token = $t->read_token('metrics.token');

# --- traffic -----------------------------------------------------------------

# request $j of child $i: [method, path, status, endpoint]
sub plan_request {
    my ($i, $j) = @_;
    my $k = $j % 3;

    return ['GET', "/api/titles/tt$i-$j", 200, '/api/titles/:title_key']
        if $k == 0;
    return ['POST', "/api/jobs/job$j/trigger", 201,
            '/api/jobs/:jobName/trigger']
        if $k == 1;
    return ['GET', "/nope/$i/$j", 404, 'unknown_endpoint'];
}

sub user_of { 'user' . ($_[0] % $USERS) }

# a child: $per requests (or until the file $stop exists), then /sync on
# the same connection, so that every answered request has been logged;
# writes what it got to child-$tag-$i
sub child {
    my ($tag, $i, $per, $stop) = @_;
    my $st = { retries => 0 };
    my (%n, %pid);
    my ($bad, $j) = (0, 0);
    my $user = user_of($i);

    while (1) {
        last if defined $per && $j >= $per;
        last if defined $stop && -e $stop;

        my ($m, $path, $want, $ep) = @{ plan_request($i, $j++) };
        my $r = $t->keepalive_request($st, $m, $path,
                                      headers => { 'X-User' => $user });

        if ($r->{status} == $want) {
            $n{"$ep\t$want\t$user"}++;
            $pid{ PlayarrTest::header($r, 'X-Worker-Pid') // '?' }++;
        } else {
            $bad++;
        }
    }

    my $s = $t->keepalive_request($st, 'GET', '/sync');
    $bad++ if $s->{status} != 204;
    $st->{c}->close if $st->{c};

    my $out = join '', (map { "n\t$_\t$n{$_}\n" } keys %n),
                       (map { "pid\t$_\t$pid{$_}\n" } keys %pid),
                       "bad\t$bad\n", "retries\t$st->{retries}\n";
    $t->write_file("child-$tag-$i", $out);
}

# $n children of child(), spawned by the harness (which kills them if the
# test dies)
sub children {
    my ($tag, $n, $per, $stop) = @_;

    return map { my $i = $_;
                 PlayarrTest::spawn(sub { child($tag, $i, $per, $stop) }) }
           0 .. $n - 1;
}

# the results of the children of $tag: { n => {ep\tstatus\tuser => n},
# pid => {pid => n}, bad, retries, failed (children that did not finish) }
sub collect {
    my ($tag, $n, @pids) = @_;
    my %res = (n => {}, pid => {}, bad => 0, retries => 0, failed => 0);

    $res{failed} += PlayarrTest::reap_kids(@pids);

    for my $i (0 .. $n - 1) {
        my $s = $t->read_file("child-$tag-$i");
        if (!defined $s) {
            $res{failed}++;
            next;
        }
        for (split /\n/, $s) {
            my @f = split /\t/;
            if ($f[0] eq 'n') {
                $res{n}{"$f[1]\t$f[2]\t$f[3]"} += $f[4];
            } elsif ($f[0] eq 'pid') {
                $res{pid}{ $f[1] } += $f[2];
            } else {
                $res{ $f[0] } += $f[1];
            }
        }
    }

    return \%res;
}

# --- scrapes -----------------------------------------------------------------

$t->scrape_setup(token => $token, path => '/scrape');

# the scrapes' own keep-alive connection, opened again after a reload
my $sc = { retries => 0 };

# what the children's results should have made of the HTTP families
sub expected {
    my ($res) = @_;
    my (%req, %count);

    for my $k (keys %{ $res->{n} }) {
        my ($ep, $status, $user) = split /\t/, $k;
        my $n = $res->{n}{$k};
        $req{ PlayarrTest::series_key($REQS, { endpoint => $ep,
                                              status_code => $status,
                                              username => $user }) } += $n;
        $count{"$ep\t$user"} += $n;
    }

    return (\%req, \%count);
}

sub total { my $s = 0; $s += $_ for values %{ $_[0] }; $s }

sub family_delta {
    my ($before, $after, $family) = @_;
    my %d;

    for my $k (keys %$after) {
        next unless $k =~ /^\Q$family\E\{/;
        my $diff = $after->{$k} - ($before->{$k} // 0);
        $d{$k} = $diff if $diff != 0;
    }

    return \%d;
}

sub requests_sum {
    my ($m) = @_;
    my $s = 0;
    $s += $m->{$_} for grep { /^\Q$REQS\E\{/ } keys %$m;
    return $s;
}

# waits until the scrape shows at least $want more requests than $before
# (the children synchronised already: this returns at once unless
# requests are missing), then returns that scrape
sub settle {
    my ($before, $want) = @_;
    my $deadline = time + 5;
    my $m;

    do {
        $m = $t->quiet_series(keepalive => $sc);
        return $m if requests_sum($m) - requests_sum($before) >= $want;
        sleep 0.05;
    } while (time < $deadline);

    return $m;
}

# checks a phase: every answered request counted exactly once
sub check_phase {
    my ($name, $before, $res, $want_total) = @_;
    my ($req, $count) = expected($res);

    is($res->{failed}, 0, "$name: every client finished");
    is($res->{bad}, 0, "$name: every answer had the expected status");

    my $answered = total($req);
    is($answered, $want_total, "$name: $want_total requests answered")
        if defined $want_total;

    my $after = settle($before, $answered);

    is(requests_sum($after) - requests_sum($before), $answered,
       "$name: requests_total grew by exactly $answered");

    is_deeply(family_delta($before, $after, $REQS), $req,
              "$name: every requests_total series exact");

    my (%dc, %di, %wc);
    for my $k (keys %$count) {
        my ($ep, $user) = split /\t/, $k;
        my %l = (endpoint => $ep, username => $user);
        my $kc = PlayarrTest::series_key("${DUR}_count", \%l);
        my $ki = PlayarrTest::series_key("${DUR}_bucket",
                                         { %l, le => '+Inf' });
        $wc{$k} = $count->{$k};
        $dc{$k} = ($after->{$kc} // 0) - ($before->{$kc} // 0);
        $di{$k} = ($after->{$ki} // 0) - ($before->{$ki} // 0);
    }

    is_deeply(\%dc, \%wc, "$name: histogram _count exact per series");
    is_deeply(\%di, \%wc, "$name: histogram +Inf bucket exact per series");

    my $dcount = family_delta($before, $after, "${DUR}_count");
    is(total($dcount), $answered,
       "$name: the _count of all series grew by $answered");

    return $after;
}

# the invariants of one exposition: cumulative buckets, +Inf == _count
sub histogram_problems {
    my ($body) = @_;
    my (%last, %inf, %cnt, @p);

    for my $s (PlayarrTest::samples($body, "${DUR}_bucket")) {
        my %l = %{ $s->[0] };
        my $le = delete $l{le};
        my $k = PlayarrTest::series_key($DUR, \%l);

        push @p, "$k: bucket le=$le ($s->[1]) below the previous"
                 . " ($last{$k})"
            if defined $last{$k} && $s->[1] < $last{$k};
        $last{$k} = $s->[1];
        $inf{$k} = $s->[1] if $le eq '+Inf';
    }

    for my $s (PlayarrTest::samples($body, "${DUR}_count")) {
        my $k = PlayarrTest::series_key($DUR, $s->[0]);
        push @p, "$k: +Inf " . ($inf{$k} // 'none') . " != _count $s->[1]"
            if ($inf{$k} // -1) != $s->[1];
    }

    return @p;
}

# --- 1: concurrent keep-alive clients ----------------------------------------

my $N = $CHILDREN * $PER_CHILD;

{
    my $before = $t->quiet_series(keepalive => $sc);
    my $t0 = time;

    my @kids = children('a', $CHILDREN, $PER_CHILD);

    # scrapes while the clients run
    my @bodies;
    while (PlayarrTest::kids_running(@kids)) {
        push @bodies, $t->quiet_scrape(keepalive => $sc);
        last if @bodies >= 200;
    }

    my $res = collect('a', $CHILDREN, @kids);
    note(sprintf "%d requests in %.2f s, %d retries, %d scrapes meanwhile",
         $N, time - $t0, $res->{retries}, scalar @bodies);

    my $after = check_phase("$CHILDREN keep-alive clients x $PER_CHILD",
                            $before, $res, $N);

    my @workers = $t->worker_pids;
    my @served = grep { $res->{pid}{$_} } @workers;
    is(scalar @served, scalar @workers,
       'both workers served requests: '
       . join(', ', map { "$_: " . ($res->{pid}{$_} // 0) } @workers));

    # the scrapes taken under load
    ok(@bodies >= 1, scalar(@bodies) . ' scrapes under load');

    my (@hist, @mono);
    my $prev;
    for my $b (@bodies) {
        push @hist, histogram_problems($b);
        my $m = PlayarrTest::parse_metrics($b);
        if ($prev) {
            for my $k (grep { /^\Q$REQS\E\{/ || /^\Q$DUR\E_count\{/ }
                       keys %$prev)
            {
                push @mono, "$k: $prev->{$k} -> " . ($m->{$k} // 'gone')
                    if ($m->{$k} // -1) < $prev->{$k};
            }
        }
        $prev = $m;
    }

    ok(!@hist, 'under load: buckets cumulative and +Inf == _count')
        or diag(join "\n", @hist[0 .. ($#hist < 9 ? $#hist : 9)]);
    ok(!@mono, 'under load: no counter ever went down')
        or diag(join "\n", @mono[0 .. ($#mono < 9 ? $#mono : 9)]);

    # promtool and the python parser on a few of them
    my @pick = @bodies > 4 ? @bodies[0, int(@bodies / 3),
                                      int(2 * @bodies / 3), -1]
                           : @bodies;
    my $i = 0;
    for my $b (@pick) {
        $i++;
        $t->promtool_ok($b, "scrape under load, no. $i: promtool");
        $t->python_parse_ok($b, "scrape under load, no. $i: python parser");
    }

    $t->scrape('after load');
}

# --- 2: a reload keeps every count -------------------------------------------

sub http_state {
    my ($m) = @_;
    return { map { $_ => $m->{$_} }
             grep { /^playarr_(?:http|authentication|managed)_/ } keys %$m };
}

{
    my $sc_c = $sc->{c};
    $sc_c->close if $sc_c;
    $sc->{c} = undef;

    my $before = $t->quiet_series(keepalive => $sc);
    my @old = $t->worker_pids;
    my @new = $t->reload;

    isnt("@new", "@old", 'reload: new workers');

    my $after = $t->quiet_series(keepalive => $sc);
    is_deeply(http_state($after), http_state($before),
              'reload: every HTTP series has the same value')
        or diag('before ' . requests_sum($before) . ', after '
                . requests_sum($after));

    # more traffic: counting goes on from the kept values
    my $n = 10;
    my $per = 100;
    my @kids = children('b', $n, $per);
    my $res = collect('b', $n, @kids);
    my $end = check_phase('after the reload', $after, $res, $n * $per);

    is(requests_sum($end), $N + $n * $per,
       'after the reload: the sum of both rounds, ' . ($N + $n * $per));

    $t->scrape('after reload');
}

# --- 3: traffic during two reloads -------------------------------------------

{
    my $before = $t->quiet_series(keepalive => $sc);
    my $base = requests_sum($before);
    my $stop = $t->path('stop-c');
    my $n = 8;

    my @gen1 = $t->worker_pids;
    my @kids = children('c', $n, undef, $stop);

    my $grow = sub {
        my ($by) = @_;
        my $from = requests_sum($t->quiet_series(keepalive => $sc));
        my $deadline = time + 15;
        while (time < $deadline) {
            return 1 if requests_sum($t->quiet_series(keepalive => $sc)) - $from >= $by;
            sleep 0.02;
        }
        return 0;
    };

    ok($grow->(300), 'traffic flows before the first reload');
    my @gen2 = $t->reload;
    ok($grow->(300), 'traffic flows after the first reload');
    my @gen3 = $t->reload(signal => 1);
    ok($grow->(300), 'traffic flows after the second reload');

    $t->write_file('stop-c', '');
    my $res = collect('c', $n, @kids);

    note(sprintf '%d requests answered during the reloads, %d sent again',
         total((expected($res))[0]), $res->{retries});

    check_phase('traffic during two reloads', $before, $res);

    my %gen = (1 => \@gen1, 2 => \@gen2, 3 => \@gen3);
    for my $g (sort keys %gen) {
        my $served = 0;
        $served += $res->{pid}{$_} // 0 for @{ $gen{$g} };
        ok($served > 0, "workers of generation $g served requests"
                        . " ($served)");
    }

    $t->scrape('final');
}

$sc->{c}->close if $sc->{c};

$t->stop;

done_testing;
