#!/usr/bin/perl

# Files the worker user can plant (docs/directives.md, docs/operations.md "What
# the module trusts").  The master runs as root, the workers as nobody, and the
# state directory belongs to nobody, as the docs tell operators to set it up;
# the attacker is a process running as nobody.
#
#  - links planted at the names the root master could write at exit
#    (state.<master pid>, state.tmp, ...) and at the state path itself,
#    pointing at a root-owned 0600 file: that file is left byte for byte
#    as it was, the state file is a new regular file, and a start
#    restores every count;
#  - a FIFO, a link to a valid state file, a 2 GiB sparse file at the
#    state path: nginx -t and the start finish at once, a [warn] names
#    the file and says why, the metrics start from zero, and the next save
#    puts a regular file in its place (the link's target is not written);
#  - a FIFO, a link, a 10 MiB file as the schema: nginx -t fails at once
#    with an [emerg] naming the file, the directive's line and why;
#  - a state file with a right checksum but a wrong structure restores
#    nothing at all, with one [warn];
#  - a full disk at the save (a small tmpfs as the state directory): an
#    [error] with ENOSPC, the previous file kept, no temporary file left.
#
# Every nginx -t runs under timeout(1), every start has the harness's own
# deadline: a hang fails the test instead of hanging it.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Compress::Zlib ();
use Fcntl qw(:mode);
use POSIX qw(_exit);
use Test::More;
use Time::HiRes qw(time sleep);
use PlayarrTest;
use PlayarrTest::State qw(state_http traffic snapshot);

PlayarrTest::need_module();
plan skip_all => 'needs root: the master as root, workers as nobody'
    unless $> == 0;

my $SCHEMA = PlayarrTest::need_schema();
my $FAST = 5;                 # seconds: "at once", for nginx -t and start
my $HEADER = 32;              # the state file's header, see state.c
my $ALICE = { endpoint => '/api/titles/:title_key', status_code => '200',
              username => 'alice' };

# --- local helpers ----------------------------------------------------------

# runs $code in a child process as the worker user; true if it succeeded
sub as_worker {
    my ($t, $code, %opt) = @_;
    my ($uid, $gid) = $t->worker_ids;

    my $pid = fork;
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        $) = "$gid $gid";
        $( = $gid;
        $< = $> = $uid;
        _exit(3) if $> != $uid || $< != $uid || $( != $gid;
        my $ok = eval { $code->(); 1 };
        print STDERR "as_worker: $@" unless $ok || $opt{quiet};
        _exit($ok ? 0 : 1);
    }

    local $?;
    waitpid($pid, 0);

    return $? == 0;
}

# the samples of those families that are not zero: none after a fresh start
sub nonzero {
    my ($snap) = @_;

    return sort grep { $snap->{$_} != 0 } keys %$snap;
}

# nginx -t, killed after 20 s whatever happens: ($rc, $seconds, $output)
sub test_config_bounded {
    my ($t) = @_;
    my $t0 = time;
    my ($rc, $out) = $t->test_config(timeout => 20);

    return ($rc, time - $t0, $out . ($t->read_file('nginx-t.log') // ''));
}

# $t->start that cannot die: ($started, $seconds)
sub start_bounded {
    my ($t) = @_;
    my $t0 = time;
    my $ok = eval { $t->start; 1 };

    diag("start: $@") unless $ok;

    return ($ok, time - $t0);
}

sub is_regular {
    my ($file) = @_;

    my @st = lstat $file or return 0;

    return S_ISREG($st[2]) && !-l _;
}

sub clear_state_dir {
    my ($t) = @_;

    opendir my $dh, $t->path('state') or die "opendir: $!";
    unlink map { $t->path("state/$_") } grep { !/^\.\.?$/ } readdir $dh;
    closedir $dh;
}

sub temp_left {
    my ($t) = @_;

    opendir my $dh, $t->path('state') or die "opendir: $!";
    my @left = grep { /^metrics\.state\.tmp\.[0-9a-f]{16}$/ } readdir $dh;
    closedir $dh;

    return @left;
}

# the layout of a state file: where each family's series count and each
# series' key length are, and where the walk ends
sub parse_state {
    my ($b) = @_;

    my ($magic, $version, $bom, $len, $crc, $nf) =
        unpack 'a8 L L Q L L', $b;
    my ($p, @fam) = ($HEADER);

    for (1 .. $nf) {
        my $dlen = unpack 'L', substr($b, $p, 4);
        my $def = substr($b, $p + 4, $dlen);
        $p += 4 + $dlen;
        my ($type, $n) = unpack 'L L', substr($b, $p, 8);
        my %f = (def => $def, nseries => $n, nseries_at => $p + 4,
                 series => []);
        $p += 8;

        for (1 .. $n) {
            my ($klen, $hidden, $overflow, $nle) =
                unpack 'S C C L', substr($b, $p, 8);
            push @{ $f{series} }, { klen => $klen, klen_at => $p };
            $p += 8 + 8 * $nle + $klen + 8 * ($nle ? $nle + 2 : 1);
        }

        push @fam, \%f;
    }

    return { magic => $magic, len => $len, crc => $crc, end => $p,
             families => \@fam };
}

# the header made right again: length and CRC-32 of the payload
sub reseal {
    my ($b) = @_;

    substr($b, 16, 8) = pack 'Q', length($b) - $HEADER;
    substr($b, 24, 4) = pack 'L',
                        Compress::Zlib::crc32(substr($b, $HEADER));

    return $b;
}


# --- links planted where the root master saves at exit ----------------------

my $t = PlayarrTest->new(http => state_http());
my ($UID, $GID) = $t->worker_ids;

mkdir $t->path('state'), 0700 or die "mkdir: $!";
chown $UID, $GID, $t->path('state') or die "chown: $!";

my $STATE = $t->path('state/metrics.state');
my $VICTIM_TEXT = join '', map { "root only secret line $_\n" } 1 .. 50;
my $victim = $t->write_file('victim', $VICTIM_TEXT, 0600);
my @victim_st = stat $victim;

ok(!as_worker($t, sub { open my $fh, '>>', $victim or die "$!\n" },
              quiet => 1),
   'the worker user cannot write the victim file itself');

my $before;
my $saved;

{
    $t->start;
    traffic($t);
    $before = snapshot($t->metrics(name => 'before the stop'));
    ok(scalar(keys %$before) > 10, 'samples recorded before the stop');

    my $pid = $t->master_pid;
    my @names = ("metrics.state.$pid", 'metrics.state.tmp',
                 'metrics.state.new', "metrics.state.$pid.tmp",
                 "metrics.state.tmp.$pid", 'metrics.state~',
                 'metrics.state');

    ok(as_worker($t, sub {
           for my $n (@names) {
               symlink $victim, $t->path("state/$n")
                   or die "symlink $n: $!\n";
           }
       }), 'the worker user plants links to the victim: ' . join(' ', @names));

    $t->stop;

    is($t->read_file('victim'), $VICTIM_TEXT,
       'links: the victim file is byte for byte as it was');
    my @st = stat $victim;
    is_deeply([@st[1, 2, 3, 4, 5]], [@victim_st[1, 2, 3, 4, 5]],
              'links: same inode, mode, links and owner');
    ok(is_regular($STATE), 'links: the state file is a regular file now');
    my @sst = lstat $STATE;
    ok(@sst && $sst[3] == 1 && $sst[1] != $victim_st[1],
       'links: the state file is a file of its own');
    is((stat $STATE)[4], 0, 'links: saved by the root master');
    ok(-l $t->path("state/metrics.state.$pid"),
       'links: the planted link is left as it was, not written through');
    is_deeply([temp_left($t)], [], 'links: no temporary file left behind');
    like($t->error_log_text,
         qr/\[notice\].*state saved to "\Q$STATE\E"/, 'links: the save is logged');

    my ($ok) = start_bounded($t);
    ok($ok, 'links: nginx starts again');
    is_deeply(snapshot($t->metrics(name => 'after the links')), $before,
              'links: every count is restored exactly');

    # a hard link to the victim at the master's name, where the kernel lets
    # the worker user make one (fs.protected_hardlinks = 0)
    $pid = $t->master_pid;
    my $hard = as_worker($t, sub {
        link $victim, $t->path("state/metrics.state.$pid") or die "$!\n";
    }, quiet => 1);

    SKIP: {
        skip 'fs.protected_hardlinks: no hard link to a file of root', 3
            unless $hard;

        $t->stop;
        is($t->read_file('victim'), $VICTIM_TEXT,
           'hard link: the victim file is byte for byte as it was');
        ok(is_regular($STATE) && (lstat $STATE)[1] != $victim_st[1],
           'hard link: the state file is not the victim');
        $t->start;
    }

    is_deeply(snapshot($t->metrics(name => 'after the hard link')), $before,
              'hard link: every count is restored exactly');
    $t->stop;

    $saved = $t->read_file($STATE);
    ok(length $saved > $HEADER, 'a valid state file to plant elsewhere');
}


# --- the state path: a FIFO, a link, a huge file ----------------------------

my $REAL = $t->write_file('real.state', $saved, 0600);

my @hostile = (
    [ 'FIFO', qr/is not a regular file/,
      sub { POSIX::mkfifo($STATE, 0600) or die "mkfifo: $!\n" } ],
    [ 'link to a valid state file', qr/is a symbolic link/,
      sub { symlink $REAL, $STATE or die "symlink: $!\n" } ],
    [ '2 GiB sparse file', qr/is larger than \d+ bytes/,
      sub {
          open my $fh, '>', $STATE or die "open: $!\n";
          truncate $fh, 2 * 1024 * 1024 * 1024 or die "truncate: $!\n";
          close $fh;
      } ],
);

for my $c (@hostile) {
    my ($name, $why, $plant) = @$c;

    clear_state_dir($t);
    ok(as_worker($t, $plant), "$name: planted by the worker user");

    my $warn = qr/\[warn\].*playarr_metrics_state_file "\Q$STATE\E" $why/;

    my ($rc, $took, $out) = test_config_bounded($t);
    is($rc, 0, "$name: nginx -t succeeds") or diag($out);
    ok($took < $FAST, sprintf("%s: nginx -t took %.2f s", $name, $took));
    like($out, $warn, "$name: nginx -t warns, naming the file and why");

    my $mark = $t->log_mark;
    my ($ok, $s) = start_bounded($t);
    ok($ok && $s < $FAST, sprintf("%s: nginx started in %.2f s", $name, $s));

    SKIP: {
        skip "$name: nginx did not start", 8 unless $ok;

        my $log = $t->log_since($mark);
        like($log, $warn, "$name: a [warn] names the file and says why");
        like($log, qr/\[warn\].*state file "\Q$STATE\E" not restored, metrics start from zero/,
             "$name: and that the metrics start from zero");

        my $m = snapshot($t->metrics(name => "$name: fresh start"));
        is_deeply([nonzero($m)], [], "$name: every family starts from zero");

        traffic($t);
        my $now = snapshot($t->metrics(name => "$name: counting"));
        is(PlayarrTest::sample($now, 'playarr_http_requests_total', $ALICE),
           5, "$name: nginx counts from zero");

        $t->stop;

        ok(is_regular($STATE), "$name: the save put a regular file there");
        is($t->read_file('real.state'), $saved,
           "$name: the link's target was not written")
            if $name =~ /link/;
        is_deeply([temp_left($t)], [], "$name: no temporary file left");

        $t->start;
        is_deeply(snapshot($t->metrics(name => "$name: restored")), $now,
                  "$name: and the next start restores it");
        $t->stop;
    }
}


# --- a right checksum, a wrong structure: nothing restored ------------------

{
    my $layout = parse_state($saved);

    is($layout->{end}, length $saved,
       'the test reads the state file as the module writes it');
    is($layout->{crc},
       Compress::Zlib::crc32(substr($saved, $HEADER)),
       'zlib crc32 is the checksum of the header');

    my @fam = @{ $layout->{families} };
    my ($last_series) = map { $_->{series}[-1] }
                        grep { @{ $_->{series} } } reverse @fam;

    my @bad = (
        [ 'the last family has one series more',
          sub { substr($_[0], $fam[-1]{nseries_at}, 4)
                    = pack 'L', $fam[-1]{nseries} + 1 } ],
        [ 'the last series has a key length past the end',
          sub { substr($_[0], $last_series->{klen_at}, 2)
                    = pack 'S', 0xffff } ],
        [ 'bytes after the last family',
          sub { $_[0] .= "\0" x 16 } ],
    );

    for my $c (@bad) {
        my ($name, $change) = @$c;
        my $b = $saved;

        $change->($b);
        $b = reseal($b);

        clear_state_dir($t);
        $t->write_file('state/metrics.state', $b, 0600);

        my $mark = $t->log_mark;
        my ($ok) = start_bounded($t);
        ok($ok, "$name: nginx starts");

        SKIP: {
            skip "$name: nginx did not start", 4 unless $ok;

            my $log = $t->log_since($mark);
            my @warn = $log =~ /^.*\[warn\].*state file "\Q$STATE\E" is corrupt, metrics start from zero.*$/mg;
            is(scalar @warn, 1, "$name: one [warn], is corrupt, from zero")
                or diag($log);
            unlike($log, qr/restored|only part/,
                   "$name: nothing is said to be restored");

            my $m = snapshot($t->metrics(name => "$name: nothing restored"));
            is_deeply([nonzero($m)], [], "$name: every family is zero");

            $t->stop;
        }
    }
}


# --- a family name that would forge a log line ----------------------------

{
    my $layout = parse_state($saved);
    my $f = $layout->{families}[0];
    my $forged = "forged\n2026/01/01 00:00:00 [emerg] 1#1: forged line";
    my $def = $f->{def};
    my $new = $def =~ s/^[^\0]*/$forged/r;
    my $b = $saved;

    # the first family's definition, its length before it
    substr($b, $HEADER, 4 + length $def) = pack('L', length $new) . $new;
    $b = reseal($b);

    clear_state_dir($t);
    $t->write_file('state/metrics.state', $b, 0600);

    # the [emerg] of the forged text, escaped inside a [notice] line
    $t->allow_log(qr/\[notice\].*family "forged\\x0A2026/);

    my $mark = $t->log_mark;
    my ($ok) = start_bounded($t);
    ok($ok, 'a forged family name: nginx starts');

    SKIP: {
        skip 'a forged family name: nginx did not start', 3 unless $ok;

        my $log = $t->log_since($mark);
        unlike($log, qr/^2026\/01\/01 00:00:00 \[emerg\]/m,
               'a forged family name: no forged line in the log');
        like($log, qr/family "forged\\x0A2026\/01\/01 00:00:00 \[emerg\] /,
             'a forged family name: logged escaped') or diag($log);
        $t->metrics(name => 'a forged family name');
        $t->stop;
    }
}


# --- a full disk at the save: the previous file stays ----------------------

my $MOUNTED;

END { system('umount', $MOUNTED) if $MOUNTED }

{
    my $f = PlayarrTest->new(http => state_http());
    my $dir = $f->path('state');
    my $file = $f->path('state/metrics.state');

    mkdir $dir or die "mkdir: $!";

    my $mounted = system('mount', '-t', 'tmpfs', '-o',
                         "size=256k,mode=0700,uid=$UID,gid=$GID",
                         'tmpfs', $dir) == 0;
    $MOUNTED = $dir if $mounted;

    SKIP: {
        skip 'cannot mount a tmpfs for the state directory', 8
            unless $mounted;

        $f->start;
        $f->get('/api/titles/tt1', headers => { 'X-User' => "user$_" })
            for 1 .. 60;
        my $kept = snapshot($f->metrics(name => 'full disk: first run'));
        $f->stop;

        my $old = $f->read_file('state/metrics.state');
        ok(length $old > 3 * 4096, 'full disk: a state file of a few pages');

        $f->start;
        $f->get('/api/titles/tt1', headers => { 'X-User' => 'alice' })
            for 1 .. 5;

        # every page taken but one: the save's first write() is short
        my $filler = "$dir/filler";
        open my $fh, '>', $filler or die "open $filler: $!";
        binmode $fh;
        my $n = 0;
        $n += 4096 while syswrite($fh, "\0" x 4096);
        close $fh;
        truncate $filler, $n - 4096 or die "truncate: $!";

        my $mark = $f->log_mark;
        $f->stop;

        like($f->log_since($mark),
             qr/\[error\].*write\(\) "\Q$file\E\.tmp\.[0-9a-f]{16}" failed \(28: No space left on device\)/,
             'full disk: the save says write() failed, ENOSPC');
        is($f->read_file('state/metrics.state'), $old,
           'full disk: the previous state file is as it was');
        is_deeply([temp_left($f)], [],
                  'full disk: no temporary file left');

        unlink $filler;
        $f->start;
        is_deeply(snapshot($f->metrics(name => 'full disk: restored')),
                  $kept, 'full disk: the next start restores the last save');
        $f->stop;
    }

    if ($mounted) {
        is(system('umount', $dir), 0, 'full disk: tmpfs unmounted');
        $MOUNTED = undef;
    }
}


# --- the schema: a FIFO, a link, a 10 MiB file ------------------------------

{
    my $s = PlayarrTest->new(http => state_http(schema => '%%DIR%%/schema.json'));
    my $file = $s->path('schema.json');
    my $line = $s->conf_line(qr/playarr_metrics_schema/);
    my $conf = $s->conf_file;

    open my $in, '<', $SCHEMA or die "$SCHEMA: $!";
    my $json = do { local $/; <$in> };
    close $in;

    mkdir $s->path('state') or die "mkdir: $!";

    my @cases = (
        [ 'FIFO', qr/is not a regular file/,
          sub { POSIX::mkfifo($file, 0644) or die "mkfifo: $!" } ],
        [ 'link', qr/is a symbolic link/,
          sub { symlink $SCHEMA, $file or die "symlink: $!" } ],
        [ '10 MiB file', qr/is larger than 4194304 bytes/,
          sub { $s->write_file('schema.json',
                               $json . (' ' x (10 * 1024 * 1024))) } ],
    );

    for my $c (@cases) {
        my ($name, $why, $plant) = @$c;

        unlink $file;
        $plant->();

        my ($rc, $took, $out) = test_config_bounded($s);
        isnt($rc, 0, "schema $name: nginx -t fails");
        ok($took < $FAST,
           sprintf("schema %s: nginx -t took %.2f s", $name, $took));
        like($out,
             qr/\[emerg\].*invalid schema "\Q$file\E" $why in \Q$conf\E:$line\b/,
             "schema $name: [emerg] with the file, the line and why")
            or diag($out);
    }

    unlink $file;
    $s->write_file('schema.json', $json);
    my ($rc, $took, $out) = test_config_bounded($s);
    is($rc, 0, 'schema: the same file, a regular file, is fine') or diag($out);
}

done_testing;
