#!/usr/bin/perl

# A short run of each libFuzzer harness of t/fuzz/ (the route matcher, the
# Authorization parser, the update validator, the renderers, the state
# file, a reload refused part-way, the session cookie verifier), from its
# seed corpus: PLAYARR_FUZZ_SECONDS (10) each.  `make fuzz` runs them longer.
#
# The binaries come from `make fuzz-build` (make test builds them into
# PLAYARR_FUZZ_DIR); run by hand, the test builds them.  A crash leaves its
# input in PLAYARR_FUZZ_DIR/artifacts-NAME/ and fails the test with the
# sanitizer's report; reproduce it with PLAYARR_FUZZ_DIR/NAME INPUT.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Cwd qw(abs_path);
use File::Temp qw(tempdir);
use Test::More;
use PlayarrTest;

PlayarrTest::need_all('libFuzzer, 10 s a harness (90 s)');

my $repo = abs_path("$FindBin::Bin/..");
my $seconds = $ENV{PLAYARR_FUZZ_SECONDS} // 10;
my $dir = $ENV{PLAYARR_FUZZ_DIR} || "$repo/build/fuzz";
my @names = qw(route auth update render state rebind jwt merge);

plan skip_all => 'PLAYARR_FUZZ_SECONDS=0 (the sanitizer runs of the suite '
                 . 'leave fuzzing to plain make test and make fuzz)'
    unless $seconds;

if (grep { !-x "$dir/$_" } @names) {
    my $arch = `uname -m`;
    chomp $arch;
    my $rt = `clang -print-file-name=libclang_rt.fuzzer-$arch.a 2>/dev/null`;
    chomp $rt;

    plan skip_all => "clang's libFuzzer runtime is missing (make deps "
                     . "installs libclang-rt-dev)"
        unless $rt =~ m{/} && -f $rt;

    my $out = `make -s -C '$repo' fuzz-build FUZZ_DIR='$dir' 2>&1`;
    BAIL_OUT("make fuzz-build failed:\n$out") if $?;
}

for my $name (@names) {
    my $corpus = tempdir("playarr-fuzz-$name-XXXXXX", TMPDIR => 1,
                         CLEANUP => 1);
    my $out = `bash '$repo/t/fuzz/run.sh' '$dir' $name $seconds '$corpus' 2>&1`;
    my $rc = $? >> 8;
    my ($summary) = $out =~ /^(fuzz \Q$name\E: .*)$/m;
    my ($runs) = $out =~ /^fuzz \Q$name\E: (\d+) runs/m;

    if (!ok($rc == 0, "$name: $seconds s of fuzzing, no crash")) {
        diag($out);
        next;
    }

    ok(($runs // 0) > 100, "$name: the harness ran") or diag($out);
    note($summary) if $summary;
}

done_testing;
