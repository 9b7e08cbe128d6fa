#!/usr/bin/perl

# Cardinality caps and a full zone (docs/operations.md):
# past playarr_metrics_max_series, or when the zone has no room, a new
# label set is folded into its family's overflow series (every label value
# "__overflow__"), so nothing is lost: the sum over a family equals what
# was sent, the refusal counter equals the folds, one [warn] per family
# and minute at most, never a [crit] or [alert] (the slab allocator's "no
# memory" included); the zone's self metrics move and stay coherent.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use POSIX qw(_exit);
use Test::More;
use Time::HiRes qw(time);
use PlayarrTest qw(family_sum);

PlayarrTest::need_module();

my $SCHEMA = PlayarrTest::need_schema();

my $REQS = 'playarr_http_requests_total';
my $DUR = 'playarr_http_request_duration_seconds';
my $STREAM = 'playarr_stream_requests_total';
my $BEST = 'playarr_best_source_selection_duration_seconds';
my $OVF = '__overflow__';
my $EP = '/api/titles/:title_key';
my $JSON = JSON::PP->new->canonical->utf8;
my $T0 = time;

sub conf {
    my ($zone, $extra, $schema) = @_;
    $schema //= $SCHEMA;

    return <<"EOF";
    playarr_metrics_zone $zone;
    playarr_metrics_token_file %%DIR%%/metrics.token;
    playarr_metrics_schema $schema;
    playarr_metrics_route /api/titles/:title_key;
    $extra

    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        server_name localhost;
        keepalive_requests 100000;

        playarr_metrics_username \$http_x_user;
        add_header X-Worker-Pid \$pid always;

        location = /metrics { playarr_metrics_export; }
        location = /push {
            client_body_buffer_size 1m;
            playarr_metrics_push;
        }
        location = /sync { playarr_metrics off; return 204; }
        location /api/ { return 200 "ok"; }
    }
EOF
}


# --- local helpers ----------------------------------------------------------

# users $users->[$k], $k % $n == $i, one request each, by $n forked
# clients on their own connections; returns the number answered 200 and
# the worker pids seen
sub users_round {
    my ($t, $tag, $n, $users) = @_;
    my @pids;

    for my $i (0 .. $n - 1) {
        my $pid = fork;
        die "fork: $!" unless defined $pid;

        if ($pid == 0) {
            my $st = {};
            my ($ok, %seen) = (0);
            for my $k (grep { $_ % $n == $i } 0 .. $#$users) {
                my $r = $t->keepalive_request($st, 'GET', "/api/titles/tt$k",
                                 headers => { 'X-User' => $users->[$k] });
                $ok++ if $r->{status} == 200;
                $seen{ PlayarrTest::header($r, 'X-Worker-Pid') // '?' } = 1;
            }
            # answered on this connection: every request above is logged
            $t->keepalive_request($st, 'GET', '/sync');
            $t->write_file("round-$tag-$i", join ' ', $ok, keys %seen);
            _exit(0);
        }

        push @pids, $pid;
    }

    my ($ok, %seen) = (0);

    for my $i (0 .. $n - 1) {
        waitpid $pids[$i], 0;
        my ($k, @w) = split ' ', $t->read_file("round-$tag-$i") // '0';
        $ok += $k;
        $seen{$_} = 1 for @w;
    }

    return ($ok, [sort keys %seen]);
}

# { label set of the series => value } without the overflow series
sub real_series {
    my ($m, $name) = @_;
    my %r;

    for my $s (PlayarrTest::samples($m, $name)) {
        next if grep { $_ eq $OVF } values %{ $s->[0] };
        $r{ PlayarrTest::series_key($name, $s->[0]) } = $s->[1];
    }

    return \%r;
}

sub ovf_labels { return { map { $_ => $OVF } @_ } }

sub self_val {
    my ($m, $name, $family) = @_;
    return PlayarrTest::sample($m, $name, { family => $family });
}

sub warn_lines {
    my ($t, $re) = @_;
    return grep { /\[warn\]/ && $_ =~ $re } split /\n/, $t->error_log_text;
}


# --- 1: playarr_metrics_max_series 50 ----------------------------------------

{
    my $t = PlayarrTest->new(http => conf('playarr:2m',
                                          'playarr_metrics_max_series 50;'));
    $t->start;
    my $tok = $t->read_token('metrics.token');
    $t->scrape_setup(token => $tok);
    my @users = map { sprintf 'user%03d', $_ } 0 .. 199;
    my $rounds = 3;
    my ($sent, %workers) = (0);

    # round 1 creates the series; rounds 2 and 3 find them (or fold)
    for my $round (1 .. $rounds) {
        my ($ok, $w) = users_round($t, "cap$round", 4, \@users);
        is($ok, scalar @users, "cap: round $round, every request answered");
        $sent += $ok;
        $workers{$_} = 1 for @$w;
    }

    note('workers that served: ' . join ' ', sort keys %workers);

    my $body = $t->metrics(token => $tok, name => 'cap');
    my $m = PlayarrTest::parse_metrics($body);

    is(family_sum($m, $REQS), $sent,
       "cap: requests_total sums to the $sent requests sent");
    is(family_sum($m, "${DUR}_count"), $sent,
       "cap: duration _count sums to $sent");

    for my $f ([$REQS, $REQS], [$DUR, "${DUR}_count"]) {
        my ($family, $sname) = @$f;
        my $real = real_series($m, $sname);
        my @labels = $family eq $REQS
                     ? qw(endpoint status_code username)
                     : qw(endpoint username);
        my $ovf = PlayarrTest::sample($m, $sname, ovf_labels(@labels));
        my $want_ovf = (@users - 50) * $rounds;

        is(scalar keys %$real, 50, "cap: $family has 50 real series");
        is(scalar(grep { $_ != $rounds } values %$real), 0,
           "cap: $family: each real series counted its $rounds requests");
        is($ovf, $want_ovf,
           "cap: $family: the overflow series holds the other $want_ovf");
        is(self_val($m, 'playarr_metrics_series', $family), 50,
           "cap: playarr_metrics_series{family=\"$family\"} 50");
        is(self_val($m, 'playarr_metrics_series_refused_total', $family),
           $want_ovf, "cap: $family: refused == folds == $want_ovf");
    }

    # the histogram's overflow series is a whole histogram
    my %ol = (endpoint => $OVF, username => $OVF);
    is(PlayarrTest::sample($m, "${DUR}_bucket", { %ol, le => '+Inf' }),
       PlayarrTest::sample($m, "${DUR}_count", \%ol),
       'cap: overflow histogram: +Inf == _count');

    # --- push into a capped family: 80 users, twice -------------------------

    my @pu = map { "viewer$_" } 0 .. 79;

    for my $v (1, 2) {
        my $r = $t->push_updates([map { { metric => 'stream_requests',
                                          op => 'inc', labels => { user => $_ },
                                          value => $v } } @pu]);
        is($r->{status}, 204, "cap: push of 80 users, value $v: 204");
    }

    my $r = $t->push_updates(
                         [map { { metric => 'best_source_selection_duration',
                                  op => 'observe',
                                  labels => { media_type => "mt$_" },
                                  value => 0.3 } } 0 .. 59]);
    is($r->{status}, 204, 'cap: push of 60 histogram label sets: 204');

    $body = $t->metrics(token => $tok, name => 'cap after push');
    $m = PlayarrTest::parse_metrics($body);

    my $real = real_series($m, $STREAM);
    is(scalar keys %$real, 50, 'cap push: 50 real series');
    is_deeply([sort map { /user="([^"]+)"/ ? $1 : $_ } keys %$real],
              [sort @pu[0 .. 49]],
              'cap push: the first 50 users of the batch got a series');
    is(scalar(grep { $_ != 3 } values %$real), 0,
       'cap push: each real series 1 + 2');
    is(PlayarrTest::sample($m, $STREAM, { user => $OVF }), 30 * 3,
       'cap push: overflow user="__overflow__" holds 30 users x 3');
    is(family_sum($m, $STREAM), 80 * 3, 'cap push: the family sums to 240');
    is(self_val($m, 'playarr_metrics_series_refused_total', $STREAM), 60,
       'cap push: refused 60 (30 new label sets, twice)');
    is(self_val($m, 'playarr_metrics_series', $STREAM), 50,
       'cap push: playarr_metrics_series 50');
    is(PlayarrTest::sample($m, "${BEST}_count", { media_type => $OVF }), 10,
       'cap push: histogram overflow _count 10');
    is(PlayarrTest::sample($m, "${BEST}_bucket",
                           { media_type => $OVF, le => '+Inf' }), 10,
       'cap push: histogram overflow +Inf 10');
    is(self_val($m, 'playarr_metrics_series_refused_total', $BEST), 10,
       'cap push: histogram refused 10');

    # more folds within the minute: no more warnings
    my ($ok) = users_round($t, 'cap4', 2, [map { "late$_" } 0 .. 19]);
    is($ok, 20, 'cap: 20 more new users answered');
    $m = PlayarrTest::parse_metrics($t->metrics(token => $tok,
                                                name => 'cap late'));
    is(family_sum($m, $REQS), $sent + 20, 'cap: late users counted too');
    is(self_val($m, 'playarr_metrics_series_refused_total', $REQS),
       (@users - 50) * $rounds + 20, 'cap: late users refused');

    my $re = qr/playarr_metrics family "([^"]+)" has reached playarr_metrics_max/;
    my @w = warn_lines($t, $re);
    my %per;
    $per{ ($_ =~ $re)[0] }++ for @w;

    if (time - $T0 < 55) {
        is_deeply(\%per, { $REQS => 1, $DUR => 1, $STREAM => 1, $BEST => 1 },
                  'cap: one [warn] per capped family, no more')
            or diag(join "\n", @w);
    } else {
        ok(scalar(keys %per) == 4 && !grep({ $_ > 2 } values %per),
           'cap: (slow run, over a minute) at most 2 [warn] per family');
    }

    like($w[0] // '', qr/__overflow__/, 'cap: the warning names __overflow__');

    $t->stop;
}


# --- 2: the smallest zone, filled up -----------------------------------------

{
    my $t = PlayarrTest->new(http => conf('tiny:32k', ''));
    $t->start;
    my $tok = $t->read_token('metrics.token');
    $t->scrape_setup(token => $tok);
    my $st = {};
    my ($sent, $full_at, @trace) = (0);
    my $bad_self = 0;

    my $check = sub {
        my ($name) = @_;
        my $m = PlayarrTest::parse_metrics($t->metrics(token => $tok,
                                                       name => $name));
        my %z = map { $_ => PlayarrTest::sample($m,
                                   "playarr_metrics_zone_${_}_bytes",
                                   { zone => 'tiny' }) } qw(size used free);

        if (!defined $z{free} || $z{free} !~ /^\d+$/ || $z{used} !~ /^\d+$/
            || $z{used} + $z{free} != $z{size})
        {
            $bad_self++;
            diag("$name: zone self metrics: size $z{size} used $z{used}"
                 . " free $z{free}");
        }

        push @trace, [$z{used}, $z{free}];
        return $m;
    };

    my $m = $check->('tiny start');

    # one new user per request until the zone is full, then 60 more
    my $i = 0;
    while ($i < 1000) {
        my $r = $t->keepalive_request($st, 'GET', "/api/titles/x$i",
                         headers => { 'X-User' => sprintf 'fill%05d', $i });
        $i++;
        $sent++ if $r->{status} == 200;

        next if $i % 10;

        $t->keepalive_request($st, 'GET', '/sync');
        $m = $check->("tiny after $i");

        $full_at //= $i
            if self_val($m, 'playarr_metrics_series_refused_total', $REQS);

        last if defined $full_at && $i >= $full_at + 60;
    }

    ok(defined $full_at, "tiny: the zone filled up (after $full_at new users)"
                         . " and stayed usable");
    is($sent, $i, "tiny: all $i requests answered 200");
    is($bad_self, 0, 'tiny: used + free == size, free >= 0 at every scrape');

    my @used = map { $_->[0] } @trace;
    my @free = map { $_->[1] } @trace;
    ok(!grep({ $used[$_] < $used[$_ - 1] } 1 .. $#used),
       'tiny: used never went down');
    ok(!grep({ $free[$_] > $free[$_ - 1] } 1 .. $#free),
       'tiny: free never went up');
    ok($used[-1] > $used[0], "tiny: used moved: $used[0] -> $used[-1]");
    ok($free[-1] < 4096, "tiny: nearly nothing free when full ($free[-1])");

    is(family_sum($m, $REQS), $sent, "tiny: requests_total sums to $sent");
    is(family_sum($m, "${DUR}_count"), $sent, "tiny: _count sums to $sent");

    for my $f ([$REQS, $REQS, qw(endpoint status_code username)],
               [$DUR, "${DUR}_count", qw(endpoint username)])
    {
        my ($family, $sname, @labels) = @$f;
        my $refused = self_val($m, 'playarr_metrics_series_refused_total',
                               $family);
        my $real = real_series($m, $sname);

        ok($refused > 0, "tiny: $family refused $refused");
        is(PlayarrTest::sample($m, $sname, ovf_labels(@labels)), $refused,
           "tiny: $family: overflow == refused (one fold per new user)");
        is(scalar keys %$real, self_val($m, 'playarr_metrics_series', $family),
           "tiny: $family: playarr_metrics_series == real series shown");
        is(scalar(keys %$real) + $refused, $sent,
           "tiny: $family: real series + folds == $sent");
    }

    # a user that has its series keeps counting there
    my $r = $t->keepalive_request($st, 'GET', '/api/titles/again',
                     headers => { 'X-User' => 'fill00000' });
    is($r->{status}, 200, 'tiny: an old user again');
    $t->keepalive_request($st, 'GET', '/sync');
    $m = $check->('tiny old user');
    is(PlayarrTest::sample($m, $REQS, { endpoint => $EP, status_code => 200,
                                         username => 'fill00000' }), 2,
       'tiny: the old user\'s own series counted it');

    # push into the full zone folds too
    $r = $t->push_updates([map { { metric => 'stream_requests', op => 'inc',
                                   labels => { user => "p$_" } } } 1 .. 5]);
    is($r->{status}, 204, 'tiny: push of 5 new label sets into a full zone');
    $r = $t->push_updates({ metric => 'active_users', op => 'set',
                            value => 7 });
    is($r->{status}, 204, 'tiny: push to a label-less family');

    $m = $check->('tiny push');
    is(PlayarrTest::sample($m, $STREAM, { user => $OVF }), 5,
       'tiny push: folded into user="__overflow__"');
    is(scalar keys %{ real_series($m, $STREAM) }, 0,
       'tiny push: no real series');
    is(self_val($m, 'playarr_metrics_series_refused_total', $STREAM), 5,
       'tiny push: refused 5');
    is(PlayarrTest::sample($m, 'playarr_active_users', {}), 7,
       'tiny push: the label-less family has its own series');

    # the warnings, once per family; no slab complaint at any level
    my $re = qr/playarr_metrics family "([^"]+)" .*zone is full/;
    my %per;
    $per{ ($_ =~ $re)[0] }++ for warn_lines($t, $re);
    is_deeply(\%per, { $REQS => 1, $DUR => 1, $STREAM => 1 },
              'tiny: one "zone is full" [warn] per family');
    unlike($t->error_log_text, qr/ngx_slab_alloc\(\) failed|no memory/,
           'tiny: the slab allocator never logged "no memory"');

    # a reload with the same configuration on a full zone keeps everything
    my $before = real_series($m, $REQS);
    $t->reload;
    $t->keepalive_request($st, 'GET', '/sync');
    $m = $check->('tiny after reload');
    is_deeply(real_series($m, $REQS), $before,
              'tiny: a reload on a full zone keeps every series');
    is(family_sum($m, $REQS), $sent + 1, 'tiny: and every count');

    # reloads that need new room on a full zone: a family whose labels
    # changed, or a new bucket layout.  Either the reload works (the
    # changed family starts fresh with a [warn]) or it is refused with an
    # [emerg] naming the zone and the running configuration stays: never
    # a silent refusal, never a crash, nothing lost
    $t->allow_log(qr/\[emerg\].*playarr_metrics_zone "tiny" is too small/);

    my $schema = JSON::PP->new->decode($t->read_file($SCHEMA));
    $schema->{metrics}{stream_requests}{labelNames} = ['user', 'client'];
    $t->write_file('schema-changed.json', $JSON->encode($schema));

    my @changes = (
        [ 'labels of stream_requests',
          conf('tiny:32k', '', $t->path('schema-changed.json')),
          qr/\[warn\][^\n]*"\Q$STREAM\E" changed/ ],
        [ 'HTTP duration buckets',
          conf('tiny:32k', 'playarr_metrics_buckets 0.1 1 10;'),
          qr/\[warn\][^\n]*"\Q$DUR\E" changed/ ],
    );

    for my $c (@changes) {
        my ($what, $conf, $warn_re) = @$c;
        my $mark = $t->log_mark;

        $st->{c}->close if $st->{c};
        $st = {};

        $t->configure(http => $conf);
        my $ok = eval { $t->reload(timeout => 5); 1 };
        my $err = $@;
        my $log = $t->log_since($mark);

        note("tiny: reload changing the $what on a full zone: "
             . ($ok ? 'done' : 'refused'));

        if ($ok) {
            pass("tiny: reload changing the $what on a full zone: done");
            like($log, $warn_re, "tiny: $what: the family starts fresh"
                                 . ' with a [warn]');
        } else {
            like($log, qr/\[emerg\].*playarr_metrics_zone "tiny" is too small/,
                 "tiny: reload changing the $what on a full zone: refused"
                 . ' with an [emerg] naming the zone')
                or diag("the reload did not happen, and the error log says"
                        . " nothing about it:\n$err");
            # the master keeps its workers: give it a moment
            sleep 0.3;
        }

        $m = $check->("tiny after the $what reload");
        is(family_sum($m, $REQS), $sent + 1,
           "tiny: $what: counts intact after the reload");
        unlike($t->log_since($mark), qr/\[(?:crit|alert)\]|exited on signal/,
               "tiny: $what: no crit, alert or crash");

        # back to the running configuration for the next one
        $t->configure(http => conf('tiny:32k', ''));
        $t->reload if $ok;
    }

    $t->stop;
}

note(sprintf 'took %.1f s', time - $T0);

done_testing;
