#!/usr/bin/perl

# Websockets (docs/metrics.md): Playarr's UI
# keeps a socket.io websocket open through nginx.  A request answered 101
# counts in playarr_http_requests_total{status_code="101"} once it closes,
# never in playarr_http_request_duration_seconds (an open socket is not a
# slow answer).  playarr_http_requests_in_flight counts the requests being
# served, websockets included, the scrape that reads it too; a worker's
# share disappears with it: one killed by the master's respawn, one of a
# previous configuration killed while it still served after a reload;
# those of a previous configuration that still serve keep theirs.
#
# The upstream is a tiny Perl server forked here: a request with
# "Upgrade: websocket" gets "101 Switching Protocols" and then an echo of
# whatever it sends; another gets 200 "polling".

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Test::More;
use Time::HiRes qw(time sleep);
use PlayarrTest;

PlayarrTest::need_module();

my $GAUGE = 'playarr_http_requests_in_flight';
my $REQS = 'playarr_http_requests_total';
my $DUR = 'playarr_http_request_duration_seconds';
my $EP = '/socket.io';
my $WS_PATH = '/socket.io/?EIO=4&transport=websocket';

my $t = PlayarrTest->new(http => <<'EOF');
    playarr_metrics_zone playarr:1m;
    playarr_metrics_token_file %%DIR%%/metrics.token;
    playarr_metrics_route /socket.io;

    upstream playarr {
        server 127.0.0.1:%%PORT2%%;
    }

    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        server_name localhost;

        add_header X-Worker-Pid $pid always;

        location = /metrics { playarr_metrics_export; }
        location = /metrics/json { playarr_metrics_export json; }

        location /socket.io/ {
            proxy_pass http://playarr;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 300s;
        }
    }
EOF

$t->start;

my $TOKEN = $t->read_token('metrics.token');
$t->scrape_setup(token => $TOKEN);
my $UPSTREAM = PlayarrTest::upstream($t->port(2), \&serve);


# --- helpers ----------------------------------------------------------------

# the upstream: a request with Upgrade: websocket is answered 101 and
# echoed; any other, 200 "polling"
sub serve {
    my ($c) = @_;
    my $head = '';

    while ($head !~ /\r\n\r\n/) {
        my $n = sysread($c, $head, 4096, length $head);
        return unless $n;
    }

    if ($head !~ /^Upgrade:\s*websocket\r$/mi) {
        syswrite($c, "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n"
                     . "Connection: close\r\n\r\npolling");
        return;
    }

    syswrite($c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 . "Connection: Upgrade\r\n\r\n");

    my $buf;

    while (sysread($c, $buf, 4096)) {
        syswrite($c, $buf);
    }
}

# a websocket through nginx: { sock, status, pid (of the worker) }
sub ws_open {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $t->port, Timeout => 5)
        or return { status => 0, error => "$!" };

    syswrite($s, "GET $WS_PATH HTTP/1.1\r\nHost: localhost\r\n"
                 . "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                 . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 . "Sec-WebSocket-Version: 13\r\n\r\n");

    my $head = read_until($s, qr/\r\n\r\n/);
    my ($status) = $head =~ m{^HTTP/1\.1 (\d+)};
    my ($pid) = $head =~ /^X-Worker-Pid: (\d+)\r$/mi;

    return { sock => $s, status => $status || 0, pid => $pid || 0,
             head => $head };
}

sub read_until {
    my ($s, $re) = @_;
    my $sel = IO::Select->new($s);
    my $got = '';
    my $deadline = time + 5;

    while ($got !~ $re && time < $deadline) {
        last unless $sel->can_read($deadline - time);
        my $n = sysread($s, $got, 4096, length $got);
        last unless $n;
    }

    return $got;
}

sub ws_echo {
    my ($ws, $text) = @_;
    syswrite($ws->{sock}, $text) or return '';
    return read_until($ws->{sock}, qr/\Q$text\E/);
}

sub ws_close {
    my ($ws) = @_;
    close $ws->{sock} if $ws->{sock};
    $ws->{sock} = undef;
}

sub in_flight {
    my ($body) = @_;
    return PlayarrTest::sample($body, $GAUGE, {});
}

# scrapes until the gauge reads $want (closing is seen by nginx a little
# later); the last value read
sub in_flight_becomes {
    my ($want, $name) = @_;
    my $deadline = time + 10;
    my $v;

    while (1) {
        $v = in_flight($t->scrape($name));
        last if (defined $v && $v == $want) || time > $deadline;
        sleep 0.1;
    }

    return $v;
}

sub ws_101 {
    my ($body) = @_;
    return PlayarrTest::sample($body, $REQS,
               { endpoint => $EP, status_code => '101',
                 username => 'anonymous' }) // 0;
}

# websockets until a worker holds 2 at least and another one 1 at least
# (reuseport spreads the connections); returns them and the one with most
sub ws_spread {
    my (@ws, %held);

    for (1 .. 60) {
        my $w = ws_open();
        push @ws, $w;
        $held{ $w->{pid} }++;

        my @n = sort { $b <=> $a } values %held;
        last if @n >= 2 && $n[0] >= 2 && $n[1] >= 1 && @ws >= 3;
    }

    my ($most) = sort { $held{$b} <=> $held{$a} } keys %held;

    is(scalar(grep { $_->{status} == 101 && $_->{pid} } @ws), scalar @ws,
       scalar(@ws) . ' websockets open, each on a known worker');
    ok(keys %held >= 2 && $held{$most} >= 2,
       "worker $most holds $held{$most} of them, the others the rest")
        or diag(join ', ', map { "$_: $held{$_}" } keys %held);

    return (\@ws, $most, $held{$most});
}

sub polling {
    my $r = $t->get("/socket.io/?EIO=4&transport=polling");
    is($r->{status}, 200, 'a polling request: 200') or diag($r->{raw});
}


# --- the gauge, alone -------------------------------------------------------

my $body = $t->scrape('at start');

like($body, qr/^# HELP \Q$GAUGE\E HTTP requests being served by nginx, open websockets included\n# TYPE \Q$GAUGE\E gauge\n\Q$GAUGE\E \d+\n/m,
     'the gauge: HELP, TYPE, one sample without labels');
is(in_flight($body), 1, 'in flight at start: 1, the scrape itself');
$t->self_metrics_ok($body);

my $r = $t->get('/metrics/json',
                headers => { Authorization => "Bearer $TOKEN" });
is($r->{status}, 200, '/metrics/json: 200');
my $json = PlayarrTest::json_body($r) || [];
my ($jf) = grep { ref $_ eq 'HASH' && ($_->{name} // '') eq $GAUGE } @$json;
is_deeply($jf, { name => $GAUGE,
                 help => 'HTTP requests being served by nginx, '
                         . 'open websockets included',
                 type => 'gauge', aggregator => 'sum',
                 values => [ { value => 1, labels => {} } ] },
          '/metrics/json: the gauge as prom-client shows one, 1 in flight');


# requests refused before the post-read phase (a bad header: 400) never
# were in flight: they leave the gauge alone, on every worker
for my $i (1 .. 10) {
    my $raw = $t->raw("GET /bad HTTP/1.1\r\nHost: localhost\r\n"
                      . "No colon here\r\n\r\n");
    like($raw, qr{^HTTP/1\.1 400 }, "a bad header $i: 400") if $i == 1;
}

is(in_flight($t->scrape('after bad requests')), 1,
   'in flight after 10 bad requests: still 1, the scrape');


# --- three websockets -------------------------------------------------------

polling();
polling();

my @ws = map { ws_open() } 1 .. 3;

for my $i (0 .. $#ws) {
    is($ws[$i]{status}, 101, "websocket $i: 101") or diag($ws[$i]{head});
    is(ws_echo($ws[$i], "hello $i\n"), "hello $i\n", "websocket $i: echo");
}

$body = $t->scrape('3 websockets open');
is(in_flight($body), 4, 'in flight: the 3 websockets and the scrape');
is(ws_101($body), 0, 'an open websocket is not counted yet');

$r = $t->get('/metrics/json',
             headers => { Authorization => "Bearer $TOKEN" });
($jf) = grep { ref $_ eq 'HASH' && ($_->{name} // '') eq $GAUGE }
        @{ PlayarrTest::json_body($r) || [] };
is($jf && $jf->{values}[0]{value}, 4, '/metrics/json: 4 in flight');

ws_close($_) for @ws;

is(in_flight_becomes(1, 'websockets closed'), 1,
   'in flight once they are closed: back to 1');

$body = $t->scrape('after 3 websockets');
is(ws_101($body), 3, 'requests_total{status_code="101"}: 3');
is(PlayarrTest::sample($body, $REQS, { endpoint => $EP, status_code => '200',
                                       username => 'anonymous' }), 2,
   'requests_total{status_code="200"}: the 2 polling requests');
is(PlayarrTest::sample($body, "${DUR}_count",
                       { endpoint => $EP, username => 'anonymous' }), 2,
   'duration _count: the polling requests only, no websocket');
is(PlayarrTest::sample($body, "${DUR}_bucket",
                       { endpoint => $EP, username => 'anonymous',
                         le => '+Inf' }), 2,
   'duration +Inf bucket: 2');

# more, one at a time: each worker finds its cache entries for them
for my $i (1 .. 4) {
    my $w = ws_open();
    is($w->{status}, 101, "websocket again $i: 101");
    ws_close($w);
}

is(in_flight_becomes(1, 'one at a time'), 1, 'in flight: 1 again');
polling();

$body = $t->scrape('after 7 websockets');
is(ws_101($body), 7, 'requests_total{status_code="101"}: 7, each counted');
is(PlayarrTest::sample($body, "${DUR}_count",
                       { endpoint => $EP, username => 'anonymous' }), 3,
   'duration _count: 3 polling requests, still no websocket');

my @no101 = grep { /status_code="101"/ } grep { /^\Q$DUR\E/ } split /\n/,
            $body;
is_deeply(\@no101, [], 'no duration series carries a status');


# --- kill -9 of a worker holding websockets -----------------------------

my ($ws, $victim, $held) = ws_spread();
@ws = @$ws;
my $total = @ws;
my $left = $total - $held;
my $closed = 7;

is(in_flight($t->scrape('before the kill')), $total + 1,
   "in flight before the kill: $total websockets and the scrape");

$t->allow_log(qr/\b$victim exited on signal 9\b/);
kill 'KILL', $victim;

my $deadline = time + 15;
my @now;

while (time < $deadline) {
    @now = $t->worker_pids;
    last if @now == 2 && !grep { $_ == $victim } @now;
    sleep 0.05;
}

ok(@now == 2 && !grep({ $_ == $victim } @now),
   'the master started another worker') or diag("workers: @now");

is(in_flight($t->scrape('after the kill')), $left + 1,
   "in flight after the kill: the $left websockets left and the scrape");

for my $w (@ws) {
    next if $w->{pid} == $victim;
    is(ws_echo($w, "still\n"), "still\n", 'a websocket of the other worker: '
       . 'still open');
}

# a scrape served by each worker, the new one included, reads the same
my ($resp, $seen) = $t->hit_all_workers(sub {
    $t->get('/metrics', headers => { Authorization => "Bearer $TOKEN" });
});

my %one;
for my $x (grep { !$one{ PlayarrTest::header($_, 'x-worker-pid') }++ }
           @$resp)
{
    $t->promtool_ok($x->{body}, 'a scrape of each worker');
    is(in_flight($x->{body}), $left + 1,
       'in flight, as the worker ' . PlayarrTest::header($x, 'x-worker-pid')
       . ' sees it');
}

ws_close($_) for @ws;

is(in_flight_becomes(1, 'after the kill, closed'), 1, 'in flight: 1 again');
$closed += $left;
is(ws_101($t->scrape('after the kill')), $closed,
   'requests_total{status_code="101"}: those closed; the killed worker\'s '
   . 'were never answered to the end');


# --- a reload while websockets are open -------------------------------------

($ws, undef, undef) = ws_spread();
@ws = @$ws;
$total = @ws;

my @old = $t->worker_pids;
kill 'HUP', $t->master_pid;

$deadline = time + 15;

while (time < $deadline) {
    @now = $t->worker_pids;
    last if @now == 2 && !grep { my $p = $_; grep { $_ == $p } @old } @now;
    sleep 0.05;
}

ok(@now == 2 && !grep({ my $p = $_; grep { $_ == $p } @old } @now),
   'new workers after the reload') or diag("old @old, now @now");

# the old workers still serve their websockets, with their slots
is(in_flight($t->scrape('after the reload')), $total + 1,
   "in flight after the reload: the old workers' $total websockets and "
   . 'the scrape');

for my $i (0 .. $#ws) {
    is(ws_echo($ws[$i], "reloaded $i\n"), "reloaded $i\n",
       "websocket $i: still open after the reload");
}

# an old worker killed now is not replaced: its share goes with it
my %held;
$held{ $_->{pid} }++ for @ws;
($victim) = sort { $held{$b} <=> $held{$a} } keys %held;
$left = $total - $held{$victim};

$t->allow_log(qr/\b$victim exited on signal 9\b/);
kill 'KILL', $victim;

$deadline = time + 10;
sleep 0.05 while kill(0, $victim) && time < $deadline;
ok(!kill(0, $victim), "old worker $victim is gone");

is(in_flight($t->scrape('an old worker killed')), $left + 1,
   "in flight: the old worker's $held{$victim} websockets are gone");

ws_close($_) for @ws;

is(in_flight_becomes(1, 'after the reload, closed'), 1,
   'in flight once the old workers\' websockets are closed: 1');

$closed += $left;
is(ws_101($t->scrape('after the reload, closed')), $closed,
   "requests_total{status_code=\"101\"}: $closed, those of the old workers "
   . 'counted when they closed');

$deadline = time + 10;
sleep 0.1 while grep({ kill 0, $_ } @old) && time < $deadline;
ok(!grep({ kill 0, $_ } @old), 'the old workers exited');

is(in_flight($t->scrape('at the end')), 1, 'in flight at the end: 1');

$t->stop;

PlayarrTest::stop_upstream($UPSTREAM);

done_testing;
