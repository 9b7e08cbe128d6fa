#!/usr/bin/perl

# The token file (docs/directives.md): created when missing,
# trimmed when read, rotated without a reload in every worker, never
# logged.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time sleep);
use PlayarrTest;

PlayarrTest::need_module();

my $HTTP = <<'EOF';
    playarr_metrics_zone playarr:1m;
    playarr_metrics_token_file %%DIR%%/metrics.token;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        server_name localhost;
        add_header X-Worker-Pid $pid always;
        location = /metrics { playarr_metrics_export; }
    }
EOF

my @seen_tokens;


# --- created at start when missing ---

{
    my $t = PlayarrTest->new(http => $HTTP);
    my $path = $t->path('metrics.token');

    ok(!-e $path, 'no token file before start');

    $t->start;

    my $raw = $t->read_file('metrics.token');
    ok(defined $raw, 'token file created');
    like($raw // '', qr/\A[0-9a-f]{64}\n?\z/,
         '64 lowercase hex characters, optional newline');

    my @st = stat $path;
    is(sprintf('%04o', $st[2] & 07777), '0600', 'mode 0600');
    is($st[4], $t->worker_uid, 'owned by the worker user (uid '
                               . $t->worker_uid . ')');

    my @notice = grep { /\[notice\]/ && /\Q$path\E/ }
                 split /\n/, $t->error_log_text;
    is(scalar @notice, 1, 'one [notice] naming the file') or
        diag($t->error_log_text);

    my @stray = grep { !/^metrics\.token$/ }
                map { s{.*/}{}r } glob $t->path('metrics.token*');
    is_deeply(\@stray, [], 'no temporary file left next to it');

    my $token = $t->read_token('metrics.token') // 'none';
    push @seen_tokens, $token;

    $t->metrics(token => $token, name => 'created token');

    my $r = $t->get('/metrics',
                    headers => { Authorization => 'Bearer ' . ('0' x 64) });
    is($r->{status}, 401, 'another token is refused');

    my $mtime = $st[9];
    $t->stop;

    # a restart keeps the existing token
    $t->start;
    is($t->read_token('metrics.token'), $token, 'restart: token kept');
    is((stat $path)[9], $mtime, 'restart: file not rewritten');
    $t->metrics(token => $token, name => 'token after restart');
    $t->stop;

    for my $f (qw(error.log access.log nginx.out)) {
        unlike($t->read_file($f) // '', qr/\Q$token\E/,
               "the token is not in $f");
    }
}

# a second creation draws another token
{
    my $t = PlayarrTest->new(http => $HTTP);
    $t->start;
    my $token = $t->read_token('metrics.token') // '';
    like($token, qr/\A[0-9a-f]{64}\z/, 'second instance: a token');
    isnt($token, $seen_tokens[0], 'second instance: a different token');
    $t->stop;
}


# --- an existing file: surrounding whitespace is ignored ---

my $t = PlayarrTest->new(http => $HTTP);
my $A = 'a1' x 32;
$t->write_secret('metrics.token', "\n  $A \t\n\n");
$t->start;

is($t->read_file('metrics.token'), "\n  $A \t\n\n",
   'existing token file left as it was');

my @cases = (
    [ 'trimmed token',         "Bearer $A",        200 ],
    [ 'trailing spaces',       "Bearer $A   ",      200 ],   # nginx strips
    [ 'token plus one char',   "Bearer ${A}x",      401 ],
    [ 'token minus one char',  "Bearer " . substr($A, 0, 63), 401 ],
);
for my $c (@cases) {
    my $r = $t->get('/metrics', headers => { Authorization => $c->[1] });
    is($r->{status}, $c->[2], "whitespace: $c->[0]");
}
$t->metrics(token => $A, name => 'trimmed token');


# --- rotation without reload, on every worker ---

# every worker's answer (new connections until each one answered) must
# have the expected status: $t->all_workers_answer

sub next_second {
    my $now = time;
    sleep(int($now) + 1.02 - $now);
}

$t->all_workers_answer(200, 'token A', token => $A);

my $B = 'b2' x 32;
next_second();
$t->write_secret('metrics.token', "$B\n");
$t->all_workers_answer(200, 'in place, one second later: new token B',
                       token => $B);
$t->all_workers_answer(401, 'in place, one second later: old token A',
                       token => $A);

# two in-place rewrites of the same size within one second: the file's
# mtime (in seconds) and size do not change between them
my $C = 'c3' x 32;
my $D = 'd4' x 32;
next_second();
my $t0 = int time;
$t->write_secret('metrics.token', "$C\n");
$t->all_workers_answer(200, 'in place: token C', token => $C);
sleep 0.02;    # past the kernel's timestamp granularity (a jiffy)
$t->write_secret('metrics.token', "$D\n");
my $same_second = int(time) == $t0;
$t->all_workers_answer(200, 'in place, same second, same size: token D',
                       token => $D);
$t->all_workers_answer(401, 'in place, same second, same size: old token C',
                       token => $C);
note("C and D written in the same second: " . ($same_second ? 'yes' : 'no'));

my $E = 'e5' x 32;
$t->write_secret('metrics.token', "$E\n", rename => 1);
$t->all_workers_answer(200, 'replaced by rename: new token E', token => $E);
$t->all_workers_answer(401, 'replaced by rename: old token D', token => $D);

# an empty file fails closed: the last good token must not stay valid
$t->write_secret('metrics.token', '', rename => 1);
my ($resp) = $t->hit_all_workers(sub {
    $t->get('/metrics', headers => PlayarrTest::bearer($E));
});
is(scalar(grep { $_->{status} == 200 } @$resp), 0,
   'empty file: the last token is refused on every worker');
is(scalar(grep { $_->{status} != 401 && $_->{status} != 500 } @$resp), 0,
   'empty file: 401 or 500');

my $F = 'f6' x 32;
$t->write_secret('metrics.token', " $F\n", rename => 1);
$t->all_workers_answer(200, 'valid again: token F', token => $F);

$t->stop;

for my $tok ($A, $B, $C, $D, $E, $F) {
    unlike($t->error_log_text . ($t->read_file('access.log') // ''),
           qr/\Q$tok\E/, 'token ' . substr($tok, 0, 2) . '... not logged');
}

done_testing;
