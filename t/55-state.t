#!/usr/bin/perl

# playarr_metrics_state_file: counters, gauges and histograms survive a
# stop and a start; the file is saved at QUIT, at TERM and every interval;
# a damaged, foreign or truncated file is said and ignored; families that
# changed are dropped or restarted, coarser buckets carry their counts.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use PlayarrTest;
use PlayarrTest::State qw(state_http fresh traffic snapshot);

PlayarrTest::need_module();

my $SCHEMA = PlayarrTest::need_schema();

# --- QUIT, then start: everything is back ---------------------------------

{
    my $t = fresh();

    $t->start;
    traffic($t);

    my $before = snapshot($t->metrics(name => 'before the stop'));
    ok(scalar(keys %$before) > 20, 'samples recorded before the stop');

    $t->stop;

    my $file = $t->path('state/metrics.state');
    ok(-s $file, 'state file written at QUIT');
    like($t->error_log_text, qr/\[notice\].*state saved to "\Q$file\E"/,
         'the save is logged');

    $t->start;
    like($t->error_log_text, qr/\[notice\].*state file ".*metrics\.state" restored/,
         'the restore is logged');

    my $after = snapshot($t->metrics(name => 'after the start'));
    is_deeply($after, $before, 'every value is back after QUIT and start');

    # counting goes on from there
    $t->get('/api/titles/tt1', headers => { 'X-User' => 'alice' });
    my $m = $t->metrics(name => 'after more traffic');
    is(PlayarrTest::sample($m, 'playarr_http_requests_total',
                           { endpoint => '/api/titles/:title_key',
                             status_code => '200', username => 'alice' }),
       6, 'counting goes on from the restored value');

    # TERM (fast shutdown) saves too
    my $pid = $t->master_pid;
    unlink $file;
    kill 'TERM', $pid;
    my $deadline = time + 10;
    sleep 0.05 while kill(0, $pid) && time < $deadline;
    $t->stop(no_check => 1);
    ok(-s $file, 'state file written at TERM');
    $t->start;
    is(PlayarrTest::sample($t->metrics(name => 'after TERM'),
                           'playarr_http_requests_total',
                           { endpoint => '/api/titles/:title_key',
                             status_code => '200', username => 'alice' }),
       6, 'TERM saves the state as QUIT does');

    $t->stop;
}

# --- the periodic save survives a crash of the whole server ---------------

{
    my $t = fresh(interval => '1s');

    $t->start;
    traffic($t);
    my $before = snapshot($t->metrics(name => 'before the crash'));

    # wait for a save that holds the traffic: two intervals
    my $file = $t->path('state/metrics.state');
    my $deadline = time + 10;
    my $seen = 0;
    while (time < $deadline) {
        my $m = (stat $file)[9] // 0;
        $seen++ if $m;
        last if $seen && -s $file && (time - $m) < 1 && $seen > 2;
        sleep 0.3;
    }
    sleep 2.2;
    ok(-s $file, 'saved by a worker while running');

    # SIGKILL: no exit handler runs, only the periodic save is there
    $t->_kill_hard;
    $t->start;
    is_deeply(snapshot($t->metrics(name => 'after the crash')), $before,
              'a crash loses nothing older than the interval');
    $t->stop;
}

# --- damaged files: a warning naming the file, a fresh start --------------

{
    my $t = fresh();

    $t->start;
    traffic($t);
    $t->stop;

    my $good = $t->read_file('state/metrics.state');
    my $file = $t->path('state/metrics.state');

    my @bad = (
        [ 'flipped byte', do { my $b = $good; substr($b, length($b) - 9, 1)
                               ^= "\x55"; $b },
          qr/is corrupt \(checksum\)/ ],
        [ 'truncated', substr($good, 0, length($good) - 17),
          qr/is truncated/ ],
        [ 'header only', substr($good, 0, 20), qr/is truncated/ ],
        [ 'foreign', "# some other file\n" x 10,
          qr/is not a playarr_metrics state file/ ],
        [ 'empty', '', qr/is not a playarr_metrics state file/ ],
    );

    for my $c (@bad) {
        my ($name, $content, $why) = @$c;

        $t->write_file('state/metrics.state', $content, 0600);
        my $mark = $t->log_mark;
        $t->start;

        like($t->log_since($mark),
             qr/\[warn\].*state file "\Q$file\E" $why.*start from zero/,
             "$name: a warning names the file and says why");

        my $m = $t->metrics(name => "$name: fresh start");
        is(PlayarrTest::sample($m, 'playarr_http_requests_total',
                               { endpoint => '/api/titles/:title_key',
                                 status_code => '200', username => 'alice' }),
           undef, "$name: nothing restored");

        $t->stop;
    }
}

# --- definitions changed between stop and start ----------------------------

{
    my $t = fresh(buckets => '0.1 0.5 1 5');

    $t->start;
    traffic($t);
    $t->get('/api/titles/tt3', headers => { 'X-User' => 'carol' });
    my $before = $t->metrics(name => 'fine buckets');
    $t->stop;

    # a schema without provider_active, with other labels on
    # cache_operations, and the duration histogram on coarser buckets
    ok(-s $t->path('state/metrics.state'), 'state saved');

    open my $in, '<', $SCHEMA or die $!;
    my $json = do { local $/; <$in> };
    close $in;
    $json =~ s/"provider_active": \{[^}]*\},//s or die 'no provider_active';
    $json =~ s/("name": "playarr_cache_operations_total",[^]]*)\["operation"\]/$1\["operation", "tier"]/s
        or die 'no cache_operations';
    $t->write_file('schema.json', $json);

    $t->configure(http => state_http(schema => $t->path('schema.json'),
                                     buckets => '0.5 5'));
    my $mark = $t->log_mark;
    $t->start;
    my $log = $t->log_since($mark);

    like($log, qr/\[notice\].*family "playarr_provider_active" is no longer configured, dropped/,
         'a family no longer configured is dropped, and said');
    like($log, qr/\[warn\].*family "playarr_cache_operations_total" changed its type or labels/,
         'a family with other labels starts from zero, and said');
    unlike($log, qr/changed its buckets/,
           'coarser buckets restore every series');

    my $m = $t->metrics(name => 'after the definition change');

    is(PlayarrTest::sample($m, 'playarr_provider_expiration_days',
                           { provider_id => 'p1' }), -2.5,
       'an unchanged family is restored');
    ok(!grep({ /^playarr_cache_operations_total\{/ } split /\n/, $m),
       'the changed family has no series');

    my $old = PlayarrTest::parse_metrics($before);
    my %labels = (endpoint => '/api/titles/:title_key', username => 'alice');
    my $name = 'playarr_http_request_duration_seconds';

    for my $le ('0.5', '5', '+Inf') {
        is(PlayarrTest::sample($m, "${name}_bucket", { %labels, le => $le }),
           PlayarrTest::sample($before, "${name}_bucket",
                               { %labels, le => $le }),
           "coarser bucket le=$le keeps its cumulative count");
    }

    is(PlayarrTest::sample($m, "${name}_count", \%labels),
       PlayarrTest::sample($before, "${name}_count", \%labels),
       'the count is kept');
    ok(!defined PlayarrTest::sample($m, "${name}_bucket",
                                    { %labels, le => '0.1' }),
       'the dropped bound is gone');
    ok(scalar keys %$old, 'there was something to compare');

    # finer buckets than saved cannot be derived: said, not invented
    $t->stop;
    $t->configure(http => state_http(schema => $t->path('schema.json'),
                                     buckets => '0.25 0.5 5'));
    $mark = $t->log_mark;
    $t->start;
    like($t->log_since($mark),
         qr/\[warn\].*family "$name" changed its buckets, \d+ series could not be restored/,
         'finer buckets: the series are not restored, and said');
    ok(!defined PlayarrTest::sample($t->metrics(name => 'finer buckets'),
                                    "${name}_count", \%labels),
       'finer buckets: no made-up counts');
    $t->stop;
}

done_testing;
