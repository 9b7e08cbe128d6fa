#!/usr/bin/perl

# playarr_metrics_state_file and a binary upgrade (SIGUSR2): the old
# binary's first worker saves as soon as the pid file becomes ".oldbin",
# the new binary waits for that save and starts from it, the old master
# does not overwrite the new binary's file when it quits, and a new binary
# whose predecessor cannot save says so and starts from the last save.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Time::HiRes qw(time sleep);
use Test::More;
use PlayarrTest qw(wait_until);
use PlayarrTest::State qw(fresh);

# the new binary is exec'd by the old master, without the wrapper
plan skip_all => 'a binary upgrade does not run under ' . $ENV{PLAYARR_WRAP}
    if $ENV{PLAYARR_WRAP};

PlayarrTest::need_module();

PlayarrTest::need_schema();

my %ALICE = (endpoint => '/api/titles/:title_key', status_code => '200',
             username => 'alice');

sub hits {
    my ($t, $n) = @_;
    my $ok = 0;

    for (1 .. $n) {
        my $r = $t->get('/api/titles/tt1', headers => { 'X-User' => 'alice' });
        $ok++ if ($r->{status} // 0) == 200;
    }

    is($ok, $n, "$n requests answered");
}

sub alice {
    my ($t, $name) = @_;
    my $m = $t->metrics(name => $name);
    return PlayarrTest::sample($m, 'playarr_http_requests_total', \%ALICE);
}

sub gauge {
    my ($t) = @_;
    my $m = $t->metrics(name => 'gauge scrape');
    return PlayarrTest::sample($m, 'playarr_provider_active',
                               { provider_id => 'p1' });
}

sub pidfile {
    my ($t, $name) = @_;
    my $s = $t->read_file($name);
    return defined $s && $s =~ /^(\d+)/ ? $1 : undef;
}

sub children {
    my ($ppid, $re) = @_;

    return map { $_->[0] } grep { $_->[1] =~ $re }
           PlayarrTest::_proc_children($ppid);
}

# a process that is gone, or a zombie nobody reaped yet
sub gone {
    my ($pid) = @_;

    return 1 unless kill 0, $pid;

    open my $fh, '<', "/proc/$pid/stat" or return 1;
    my $stat = <$fh> // '';
    close $fh;

    return $stat =~ /\)\s+Z\s/ ? 1 : 0;
}

my @MASTERS;

END {
    for my $pid (grep { !gone($_) } @MASTERS) {
        kill 'KILL', $pid, children($pid, qr/^nginx:/);
    }
}

# nginx refuses SIGUSR2 while its parent is the one that started it, so
# this test runs it as a daemon (the harness keeps it in the foreground)
sub start_daemon {
    my ($t) = @_;

    my $conf = $t->read_file('nginx.conf');
    $conf =~ s/^daemon off;$/daemon on;/m;
    die "no daemon line\n" unless $conf =~ /^daemon on;$/m;
    $t->write_file('nginx.conf', $conf, 0644);
    unlink $t->path('nginx.pid');

    my ($rc, $out) = $t->_run_nginx('-e', $t->path('error.log'));
    die "nginx exited with $rc:\n$out" if $rc != 0;

    my $pid;
    wait_until(sub {
        $pid = pidfile($t, 'nginx.pid');
        return defined $pid
               && children($pid, qr/^nginx: worker process/) == $t->workers
               && $t->_port_accepts($t->port(1));
    }) or die "timed out: nginx to start\n";

    push @MASTERS, $pid;

    return $pid;
}

# USR2; returns the new master's pid once it runs its workers
sub upgrade {
    my ($t, $old) = @_;

    kill 'USR2', $old or die "kill USR2: $!";

    my $new;
    wait_until(sub {
        $new = pidfile($t, 'nginx.pid');
        return defined $new && $new != $old
               && (pidfile($t, 'nginx.pid.oldbin') // 0) == $old
               && children($new, qr/^nginx: worker process/)
                  == $t->workers;
    }, 20) or die "timed out: the new binary\n";

    push @MASTERS, $new;

    return $new;
}

# WINCH to the old master: its workers finish, the new ones serve alone
sub retire_old_workers {
    my ($old) = @_;

    kill 'WINCH', $old or die "kill WINCH: $!";
    wait_until(sub { !children($old, qr/^nginx: worker process/) })
        or die "timed out: the old workers to exit\n";
}

sub quit {
    my ($pid) = @_;

    kill 'QUIT', $pid or die "kill QUIT $pid: $!";
    wait_until(sub { gone($pid) }, 20)
        or die "timed out: nginx $pid to exit\n";
}

my $file;

# --- the upgrade starts from the counts of the moment ------------------------

{
    my $t = fresh();
    $file = $t->path('state/metrics.state');

    my $old = start_daemon($t);
    hits($t, 7);

    my $r = $t->request('POST', '/push',
        body => '[{"metric":"provider_active","op":"set",'
                . '"labels":{"provider_id":"p1"},"value":1}]',
        headers => { 'Content-Type' => 'application/json' });
    is($r->{status}, 204, 'gauge pushed');

    ok(!-e $file, 'no periodic save yet (interval 60 s)');

    my $mark = $t->log_mark;
    my $new = upgrade($t, $old);

    my $log = $t->log_since($mark);
    like($log, qr/\[notice\].*state saved to "\Q$file\E" for the new binary/,
         'the old first worker saves for the new binary');
    like($log, qr/\[notice\].*state file "\Q$file\E" saved by the old binary/,
         'the new binary waited for that save');
    like($log, qr/\[notice\].*state file "\Q$file\E" restored/,
         'the new binary restored it');
    unlike($log, qr/did not save/, 'no wait ran out');

    retire_old_workers($old);

    is(alice($t, 'new binary'), 7,
       'the new binary counts what the old one counted');
    is(gauge($t), 1, 'and holds the pushed gauge');

    hits($t, 3);
    is(alice($t, 'new binary, more traffic'), 10, 'counting goes on');

    $mark = $t->log_mark;
    quit($old);
    like($t->log_since($mark),
         qr/\[notice\].*state not saved to "\Q$file\E": the new binary $new/,
         'the old master leaves the file to the new binary');

    $mark = $t->log_mark;
    quit($new);
    like($t->log_since($mark),
         qr/\[notice\].*state saved to "\Q$file\E"$/m,
         'the new master saves at QUIT');

    $old = start_daemon($t);
    is(alice($t, 'after a restart'), 10,
       'a restart after the upgrade restores every count');

    # a second upgrade in the same directory: a new ".oldbin", a new save
    hits($t, 2);
    $mark = $t->log_mark;
    $new = upgrade($t, $old);
    like($t->log_since($mark),
         qr/state file "\Q$file\E" saved by the old binary/,
         'a second upgrade hands over too');
    retire_old_workers($old);
    is(alice($t, 'second upgrade'), 12, 'with every count');
    quit($old);
    quit($new);

    $t->check_error_log;
}

# --- the old binary cannot save: the new one waits, says so, goes on ---------

{
    my $t = fresh();
    my $file = $t->path('state/metrics.state');

    my $old = start_daemon($t);
    hits($t, 4);
    quit($old);
    ok(-s $file, 'saved at QUIT');

    $old = start_daemon($t);
    hits($t, 5);
    is(alice($t, 'before'), 9, 'restored and counting');

    # the old first worker's save fails: the directory is read-only
    chmod 0555, $t->path('state');

    my $mark = $t->log_mark;
    my $t0 = time;
    my $new = upgrade($t, $old);
    my $waited = time - $t0;

    my $log = $t->log_since($mark);
    like($log, qr/\[warn\].*the old binary did not save state file "\Q$file\E"/,
         'the new binary says the save did not come');
    cmp_ok($waited, '>=', 2.5, 'after waiting for it') or diag("$waited s");
    cmp_ok($waited, '<', 15, 'not for long');

    retire_old_workers($old);
    is(alice($t, 'from the last save'), 4,
       'the new binary starts from the last save');

    chmod 0755, $t->path('state');
    quit($old);
    quit($new);

    $t->check_error_log;
}

done_testing();
