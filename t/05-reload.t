#!/usr/bin/perl

# Reload (docs/operations.md): with the same zone size every
# value survives `nginx -s reload`; a size change starts fresh and says so
# in the log; nothing crashes.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use PlayarrTest;

PlayarrTest::need_module();

# Recording brings playarr_metrics_route; when this build knows
# the directive, traffic is recorded before the reload and its counts
# must survive it.
my $RECORDING = do {
    my $probe = PlayarrTest->new(http => <<'EOF');
    playarr_metrics_zone playarr:1m;
    playarr_metrics_route /api/titles/:title_key;
EOF
    my ($rc, $out) = $probe->test_config;
    $rc == 0;
};
note('recording: ' . ($RECORDING ? 'available' : 'not in this build'));

sub http_conf {
    my ($size) = @_;
    my $routes = $RECORDING
        ? "playarr_metrics_route /api/titles/:title_key;\n" : '';

    return <<"EOF";
    playarr_metrics_zone playarr:$size;
    playarr_metrics_token_file %%DIR%%/metrics.token;
    $routes
    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;
        location = /metrics { playarr_metrics_export; }
        location /api/ { return 200 "ok"; }
    }
EOF
}

my $REQS = 'playarr_http_requests_total';
my %LBL = (endpoint => '/api/titles/:title_key', status_code => '200',
           username => 'anonymous');

my $t = PlayarrTest->new(http => http_conf('1m'));
$t->start;
my $token = $t->read_token('metrics.token');

# state to keep: recorded requests when the build records them
my $N = 7;
if ($RECORDING) {
    is($t->get("/api/titles/tt$_")->{status}, 200, "request $_") for 1 .. $N;
}

my $before = $t->metrics(token => $token, name => 'before reload');
my $mb = PlayarrTest::parse_metrics($before);

if ($RECORDING) {
    is(PlayarrTest::sample($mb, $REQS, \%LBL), $N,
       "before reload: $N requests counted");
}

# every sample except the zone's byte counts, which the new cycle may
# change slightly
sub stable {
    my ($m) = @_;
    my $zp = $PlayarrTest::SELF{zone_prefix};
    return { map { $_ => $m->{$_} } grep { index($_, $zp) != 0 } keys %$m };
}

# the line a size change must log, and a same-size reload must not
my $line_re = qr/\[(?:notice|warn)\][^\n]*playarr[^\n]*(?:re-?creat|size)/i;

# --- same size: everything kept ---

my @w1 = $t->worker_pids;
my $mark = $t->log_mark;
my @w2 = $t->reload;
isnt("@w2", "@w1", 'same size: new workers');

my $after = $t->metrics(token => $token, name => 'after reload, same size');
my $ma = PlayarrTest::parse_metrics($after);

is_deeply(stable($ma), stable($mb), 'same size: every value kept');
if ($RECORDING) {
    is(PlayarrTest::sample($ma, $REQS, \%LBL), $N,
       "same size: still $N requests");
    $t->get("/api/titles/tt$_") for 1 .. 3;
    is(PlayarrTest::sample($t->metrics(token => $token, name => 'counting'),
                           $REQS, \%LBL), $N + 3,
       'same size: counting goes on from the kept value');
}
unlike($t->log_since($mark), $line_re, 'same size: no "re-created" line');
is($t->read_token('metrics.token'), $token, 'same size: token unchanged');

# a second reload, by signal, still keeps it
my $before2 = $t->metrics(token => $token, name => 'before a second reload');
$t->reload(signal => 1);
my $after2 = $t->metrics(token => $token, name => 'after a second reload');
is_deeply(stable(PlayarrTest::parse_metrics($after2)),
          stable(PlayarrTest::parse_metrics($before2)),
          'second reload: every value kept');

# --- new size: starts fresh and says so ---

$t->configure(http => http_conf('2m'));
$mark = $t->log_mark;
$t->reload;

ok($t->wait_for_log($line_re, 5, $mark),
   'size change: a notice or warn says the zone was re-created')
    or diag($t->log_since($mark));

my $fresh = $t->metrics(token => $token, name => 'after a size change');
my $mf = PlayarrTest::parse_metrics($fresh);
is(scalar(PlayarrTest::samples($mf, $PlayarrTest::SELF{build_info})), 1,
   'size change: build info present');
$t->self_metrics_ok($fresh, 'size change');

{
    my ($free) = grep { $_ =~ $PlayarrTest::SELF{zone_free} }
                 sort keys %{ PlayarrTest::metric_types($fresh) };
    my $f = 0;
    $f += $_->[1] for PlayarrTest::samples($mf, $free // 'none');
    ok($f > 1024 * 1024, "size change: the new zone is larger ($f free)");
}

if ($RECORDING) {
    ok(!defined PlayarrTest::sample($mf, $REQS, \%LBL)
       || PlayarrTest::sample($mf, $REQS, \%LBL) == 0,
       'size change: counts start fresh');
    $t->get('/api/titles/x');
    is(PlayarrTest::sample($t->metrics(token => $token, name => 'fresh count'),
                           $REQS, \%LBL), 1, 'size change: counting works');
}

# and back to the old size, then the same size again: kept
$t->configure(http => http_conf('1m'));
$t->reload;
my $b4 = $t->metrics(token => $token, name => 'back to 1m');
$t->reload;
is_deeply(stable(PlayarrTest::parse_metrics(
                     $t->metrics(token => $token, name => 'reload at 1m'))),
          stable(PlayarrTest::parse_metrics($b4)),
          'back at 1m: a same-size reload keeps every value');

# a bad configuration is refused and the running one keeps working
$t->configure(http => http_conf('4k'));
my ($rc, $out) = $t->test_config;
isnt($rc, 0, 'nginx -t refuses a 4k zone');
$t->configure(http => http_conf('1m'));

is($t->get('/metrics', headers => { Authorization => "Bearer $token" })
   ->{status}, 200, 'still serving after all reloads');

$t->stop;

done_testing;
