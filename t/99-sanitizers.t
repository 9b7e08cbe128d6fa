#!/usr/bin/perl

# The verdict of `make test ASAN=1` and `make test VALGRIND=1`, which run
# the whole suite (this last) with nginx started through t/lib/nginx-wrap:
# every AddressSanitizer, UBSan or valgrind report lands in a file of
# PLAYARR_SAN_DIR named after the test that ran that nginx, and any such
# file fails this test, which prints it.  First, an nginx started here
# must really run with the sanitizer runtime, or under valgrind.
#
# Skipped in a plain `make test`.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use PlayarrTest;

my $dir = $ENV{PLAYARR_SAN_DIR};
my $mode = $ENV{PLAYARR_WRAP} // '';

plan skip_all => 'not a sanitizer run (make test ASAN=1 or VALGRIND=1)'
    unless $dir && $mode;

# the wrapper is in effect

my $t = PlayarrTest->new(workers => 1, http => <<'EOF');
    playarr_metrics_zone playarr:1m;

    server {
        listen 127.0.0.1:%%PORT%%;
        location / { return 204; }
    }
EOF

$t->start;

my ($worker) = $t->worker_pids;
my $r = $t->get('/');
is($r->{status}, 204, 'nginx answers through the wrapper');

if ($mode eq 'asan') {
    my $maps = $t->read_file("/proc/$worker/maps") // '';
    like($maps, qr/lib(?:asan|clang_rt\.asan)[^\n]*\.so/,
         'the worker runs with the ASan runtime');
    like($maps, qr/\Q@{[PlayarrTest::module_path()]}\E/,
         'and the module under test');

} else {
    my $exe = readlink("/proc/$worker/exe") // '';
    like($exe, qr/valgrind|memcheck/, 'the worker runs under valgrind');
}

$t->stop;

# the reports

opendir my $dh, $dir or die "opendir $dir: $!";
my @files = sort grep { -f "$dir/$_" && -s "$dir/$_" && $_ ne 'runs' }
            readdir $dh;
closedir $dh;

my $runs = 0;
my %tests;

if (open my $fh, '<', "$dir/runs") {
    while (<$fh>) {
        $runs++;
        $tests{$1} = 1 if /^([^.\s]+)\./;
    }
    close $fh;
}

note(sprintf "%d nginx runs from %d tests through the wrapper (%s)",
             $runs, scalar keys %tests, $mode);

ok($runs > 1, 'the suite ran nginx through the wrapper');

my %by_test;
push @{ $by_test{ (/^([^.]+)\./)[0] // $_ } }, $_ for @files;

for my $test (sort keys %by_test) {
    ok(0, "t/$test.t: " . @{ $by_test{$test} } . " report(s)");

    for my $f (@{ $by_test{$test} }) {
        my $text = $t->read_file("$dir/$f") // '';
        my @lines = split /\n/, $text;
        splice @lines, 80, @lines - 80, '...' if @lines > 80;
        diag("$dir/$f:\n" . join("\n", @lines));
    }
}

ok(!@files, 'no sanitizer or valgrind report')
    or diag('reports are in ' . $dir);

done_testing;
