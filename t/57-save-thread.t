#!/usr/bin/perl

# playarr_metrics_state_file with nginx's thread pool: the periodic save
# of the first worker is written by a thread of that worker, not by its
# event loop; it happens every interval and restores exactly after a crash
# of the whole server; a QUIT or a reload while saves run loses nothing,
# leaves no temporary file and nothing worse than a notice in the log.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use PlayarrTest;
use Time::HiRes qw(sleep time);

PlayarrTest::need_module();

my $SCHEMA = PlayarrTest::need_schema();

# enough series that a save writes a few MB: its bytes stand out from what
# the worker writes to its sockets meanwhile
my $SERIES = 40000;
my $BATCH = 4000;

my $HTTP = <<"EOF";
    playarr_metrics_zone playarr:32m;
    playarr_metrics_max_series 100000;
    playarr_metrics_state_file %%DIR%%/state/metrics.state interval=1s;
    playarr_metrics_schema $SCHEMA;

    server {
        listen 127.0.0.1:%%PORT%%;
        client_max_body_size 2m;
        client_body_buffer_size 2m;
        location / { return 200 "ok\\n"; }
        location = /metrics { playarr_metrics_export; playarr_metrics_auth off; }
        location = /push { playarr_metrics_push; playarr_metrics_auth off; }
    }
EOF

my $FAMILY = 'playarr_provider_api_requests_total';

# inc of every series i in [0, n): provider_id p<i>, by value + i % 7
sub push_all {
    my ($t, $n, $value) = @_;

    for (my $from = 0; $from < $n; $from += $BATCH) {
        my $to = $from + $BATCH < $n ? $from + $BATCH : $n;
        my @u;
        for my $i ($from .. $to - 1) {
            push @u, '{"metric":"provider_api_requests","op":"inc",'
                     . '"labels":{"provider_id":"p' . $i . '",'
                     . '"endpoint":"/movies","status_code":"200"},'
                     . '"value":' . ($value + $i % 7) . '}';
        }
        my $r = $t->push_updates('[' . join(',', @u) . ']', timeout => 60);
        return 0 unless $r->{status} == 204;
    }

    return 1;
}

# the pushed family's samples (the scrape itself is left out of the
# comparison: the export location is counted by the HTTP families)
sub snapshot {
    my ($t) = @_;

    my $r = $t->get('/metrics', timeout => 60);
    return {} unless $r->{status} == 200;

    my $all = PlayarrTest::parse_metrics($r->{body});
    my %keep = map { $_ => $all->{$_} } grep { /^\Q$FAMILY\E\{/ } keys %$all;

    return \%keep;
}

sub inode {
    my ($file) = @_;
    my @st = stat $file;
    return @st ? "$st[1]:$st[9]" : '';
}

# waits for n more saves (each one renames a new file over the old)
sub wait_saves {
    my ($file, $n, $timeout) = @_;

    my $last = inode($file);
    my $seen = 0;
    my $deadline = time + $timeout;

    while ($seen < $n && time < $deadline) {
        sleep 0.02;
        my $now = inode($file);
        next if $now eq $last || $now eq '';
        $seen++;
        $last = $now;
    }

    return $seen;
}

# bytes written (wchar) by the workers: [event loop threads, other threads]
sub written {
    my ($t) = @_;
    my @w = (0, 0);

    for my $pid ($t->worker_pids) {
        opendir my $dh, "/proc/$pid/task" or next;
        for my $tid (grep { /^\d+$/ } readdir $dh) {
            open my $fh, '<', "/proc/$pid/task/$tid/io" or next;
            while (<$fh>) {
                $w[$tid == $pid ? 0 : 1] += $1 if /^wchar:\s*(\d+)/;
            }
            close $fh;
        }
        closedir $dh;
    }

    return @w;
}

sub temp_files {
    my ($t) = @_;

    opendir my $dh, $t->path('state') or return ();
    my @f = grep { /\.tmp\./ } readdir $dh;
    closedir $dh;

    return @f;
}

# a temporary file seen: a save is between its open and its rename
sub wait_temp {
    my ($t, $timeout) = @_;

    my $deadline = time + $timeout;

    while (time < $deadline) {
        return 1 if temp_files($t);
        sleep 0.001;
    }

    return 0;
}

my $t = PlayarrTest->new(http => $HTTP);
mkdir $t->path('state');
chown $t->worker_ids, $t->path('state');
my $file = $t->path('state/metrics.state');

# --- the save runs in a thread, every interval ---------------------------

$t->start;
ok(push_all($t, $SERIES, 1), "$SERIES series pushed");

is(wait_saves($file, 1, 10), 1, 'a periodic save after the push');
my $size = -s $file;
ok($size > 1_000_000, "the state file holds the series ($size bytes)");

my @before = written($t);
is(wait_saves($file, 3, 10), 3, 'three more saves, one every interval');
my @after = written($t);

my $loop = $after[0] - $before[0];
my $threads = $after[1] - $before[1];

cmp_ok($threads, '>=', 3 * $size,
       "the saves were written by a thread ($threads bytes)");
cmp_ok($loop, '<', $size,
       "not by the workers' event loops ($loop bytes)");

# --- the periodic save restores exactly after a crash ---------------------

ok(push_all($t, $SERIES, 2), 'more counts');
my $expect = snapshot($t);
is(scalar keys %$expect, $SERIES, 'every series is exported');

# the first save may have begun before the push ended: two
is(wait_saves($file, 2, 10), 2, 'saved since');
$t->_kill_hard;
$t->start;
is_deeply(snapshot($t), $expect,
          'after SIGKILL of the whole server the periodic save is exact');

# --- QUIT and reload while a save runs ------------------------------------

for my $round (1 .. 3) {
    ok(push_all($t, $SERIES, $round), "round $round: counts");
    $expect = snapshot($t);

    my $caught = wait_temp($t, 5);
    note("round $round: " . ($caught ? 'a save was running'
                                     : 'no save caught running'));

    if ($round == 2) {
        # the old workers quit, one of them maybe while saving
        $t->reload;
        ok(push_all($t, 100, 1), 'round 2: the new workers count');
        $expect = snapshot($t);
        wait_temp($t, 5);
    }

    $t->stop;

    ok(!temp_files($t), "round $round: no temporary file is left")
        or diag(join ' ', temp_files($t));

    $t->start;
    is_deeply(snapshot($t), $expect, "round $round: nothing is lost");
}

$t->stop;

done_testing;
