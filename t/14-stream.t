#!/usr/bin/perl

# Streaming exports ("memory bounded"): /metrics and
# /metrics/json are rendered a step at a time, each step once the previous
# one is sent, so that a worker holds a few chunks of a body, never the
# whole of it, however many series there are and however slowly the
# client reads.  With 50,000 series (a body of about 28 MB), on one
# worker:
#
# - a client reading slowly (a small receive buffer, a few KB every
#   10 ms) leaves the worker's anonymous memory (RssAnon: VmRSS less the
#   zone's pages) far below the body's size; series pushed meanwhile are
#   shown whole or not at all, and every series exactly once;
# - other requests to the same worker are answered at once, during a slow
#   scrape and during back-to-back fast ones (the render never holds the
#   event loop for long);
# - a client that goes away mid-body (FIN, RST, before reading anything,
#   or past send_timeout) costs nothing: no [alert], the worker keeps
#   serving, its memory returns;
# - HTTP/1.1 is chunked, HTTP/1.0 is closed, HEAD has headers only and
#   renders nothing; gzip and limit_rate still see the whole body;
# - /metrics/json is streamed too, valid JSON holding what the text holds.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Select;
use IO::Uncompress::Gunzip qw(gunzip $GunzipError);
use Socket qw(:DEFAULT);
use Test::More;
use Time::HiRes qw(sleep time);
use PlayarrTest;

PlayarrTest::need_module();

# under AddressSanitizer or valgrind (make test ASAN=1, VALGRIND=1) memory
# and time mean nothing: fewer series, and what is checked is what the
# sanitizers watch, the paths of a body sent in steps or cut short
my $WRAP = $ENV{PLAYARR_WRAP} // '';
my $COUNTERS = $WRAP ? 6000 : 30000;
my $HISTOGRAMS = $WRAP ? 2000 : 20000;
my $RATE = $WRAP ? '4m' : '32m';
my $NEW = 1000000;              # usernames of series pushed mid-scrape
my $BATCH = 4000;
my @EP = ('/api/titles/:title_key', '/api/healthcheck', '/api/stats',
          '/api/livetv/channels', '/api/users/:username');
my @LE = qw(0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 30);

my $t = PlayarrTest->new(workers => 1, http => <<"EOF");
    playarr_metrics_zone metrics:64m;
    playarr_metrics_max_series 100000;
    playarr_metrics_schema %%DIR%%/schema.json;
    playarr_metrics_token_file %%DIR%%/metrics.token;

    server {
        # a send buffer of a few steps, not the megabytes loopback allows:
        # the worker meets a full socket as it would a distant client
        listen 127.0.0.1:%%PORT%% sndbuf=64k;
        listen 127.0.0.1:%%PORT2%%;
        server_name localhost;
        keepalive_requests 100000;

        location = /metrics { playarr_metrics_export; playarr_metrics_auth off; }
        location = /metrics/json {
            playarr_metrics_export json;
            playarr_metrics_auth off;
        }
        location = /metrics-t {
            send_timeout 1s;
            playarr_metrics_export;
            playarr_metrics_auth off;
        }
        location = /metrics-gz {
            gzip on;
            gzip_types *;
            gzip_min_length 0;
            playarr_metrics_export;
            playarr_metrics_auth off;
        }
        location = /metrics-rate {
            limit_rate_after 1m;
            limit_rate $RATE;
            playarr_metrics_export;
            playarr_metrics_auth off;
        }
        location = /push {
            client_body_buffer_size 1m;
            playarr_metrics_push;
            playarr_metrics_auth off;
        }
        location = /hello { playarr_metrics off; return 200 "hello"; }
    }
EOF

$t->write_file('schema.json', <<'EOF');
{"metrics": {
  "s_counter": {"type": "counter", "name": "stream_test_total",
                "help": "t/14 counter",
                "labelNames": ["endpoint", "status_code", "username"]},
  "s_hist": {"type": "histogram", "name": "stream_test_seconds",
             "help": "t/14 histogram",
             "labelNames": ["endpoint", "username"],
             "buckets": [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                         5, 10, 30]}
}}
EOF

$t->start;

my ($worker) = $t->worker_pids;
my $port = $t->port;
my $port2 = $t->port(2);        # the kernel's own send buffer size


# --- helpers ---------------------------------------------------------------

sub proc_kb {
    my ($pid, $key) = @_;
    open my $fh, '<', "/proc/$pid/status" or return undef;
    while (<$fh>) {
        return $1 if /^\Q$key\E:\s+(\d+)\s+kB/;
    }
    return undef;
}

# anonymous memory: VmRSS less the shared zone's pages the worker touched
sub rss_anon {
    return proc_kb($worker, 'RssAnon') // proc_kb($worker, 'VmRSS');
}

# nanoseconds the worker spent on a cpu
sub cpu_ns {
    open my $fh, '<', "/proc/$worker/schedstat" or return 0;
    my ($ns) = split ' ', scalar <$fh>;
    return $ns;
}

sub counter_update {
    my ($i) = @_;
    return sprintf '{"metric":"s_counter","op":"inc","labels":{"endpoint":'
                   . '"%s","status_code":"200","username":"u%07d"},'
                   . '"value":%d}', $EP[$i % @EP], $i, 1 + $i % 97;
}

sub hist_update {
    my ($i) = @_;
    return sprintf '{"metric":"s_hist","op":"observe","labels":{"endpoint":'
                   . '"%s","username":"u%07d"},"value":%s}',
                   $EP[$i % @EP], $i, ($i % 5000) / 1000;
}

# pushes the updates $make->($i) for $i in @ids, $BATCH a request
sub push_all {
    my ($make, @ids) = @_;
    my $bad = 0;

    while (my @b = splice @ids, 0, $BATCH) {
        my $r = $t->push_updates('[' . join(',', map { $make->($_) } @b)
                                 . ']');
        $bad++ if $r->{status} != 204;
        diag("push: $r->{status} " . substr($r->{body} // '', 0, 200))
            if $r->{status} != 204;
    }

    return !$bad;
}

# a connection with a small receive buffer, set before connect
sub small_socket {
    my ($rcvbuf, $to) = @_;
    socket(my $s, PF_INET, SOCK_STREAM, getprotobyname('tcp'))
        or die "socket: $!";
    setsockopt($s, SOL_SOCKET, SO_RCVBUF, $rcvbuf) or die "SO_RCVBUF: $!"
        if $rcvbuf;
    connect($s, sockaddr_in($to || $port, inet_aton('127.0.0.1')))
        or die "connect: $!";
    binmode $s;
    return $s;
}

sub send_request {
    my ($s, $path, %opt) = @_;
    my $proto = $opt{proto} || 'HTTP/1.1';
    my $req = "GET $path $proto\r\nHost: localhost\r\n";
    $req .= "Connection: close\r\n" if $proto eq 'HTTP/1.1';
    $req .= "$_: $opt{headers}{$_}\r\n" for sort keys %{ $opt{headers} || {} };
    local $SIG{PIPE} = 'IGNORE';
    syswrite($s, "$req\r\n") or die "write: $!";
}

# reads up to $max bytes that are there within $wait seconds; undef at eof
sub read_some {
    my ($s, $max, $wait) = @_;
    my $sel = IO::Select->new($s);
    return '' unless $sel->can_read($wait);
    my $buf;
    my $n = sysread $s, $buf, $max;
    return $n ? $buf : undef;
}

# everything up to eof (or $timeout seconds)
sub read_rest {
    my ($s, $timeout) = @_;
    my $sel = IO::Select->new($s);
    my $deadline = time + ($timeout || 60);
    my ($text, $eof) = ('', 0);

    while (time < $deadline) {
        last unless $sel->can_read($deadline - time);
        my $buf;
        my $n = sysread $s, $buf, 1 << 20;
        if (!$n) {
            $eof = 1;
            last;
        }
        $text .= $buf;
    }

    return ($text, $eof);
}

# a whole scrape on a socket of its own, read to the end (60 s at most):
# the response as parse_response has it
sub socket_scrape {
    my ($path, %opt) = @_;
    my $s = small_socket(0);
    send_request($s, $path, %opt);
    my ($text, $eof) = read_rest($s, 60);
    close $s;
    my $r = PlayarrTest::parse_response($text, 'GET');
    return $r || { status => 599, headers => {}, body => '',
                   error => "incomplete (eof $eof, " . length($text)
                            . " bytes)" };
}

# a scrape read as fast as can be and thrown away: true when it was whole
# (chunked, to its last chunk; or as long as its Content-Length says)
sub scrape_discard {
    my ($path, $to) = @_;
    my $s = small_socket(0, $to);
    my ($buf, $head, $tail, $len, $n) = ('', '', '', 0);

    send_request($s, $path);

    while ($n = sysread $s, $buf, 1 << 20) {
        $head .= substr($buf, 0, 4096) if length $head < 4096;
        $tail = substr($tail . $buf, -5);
        $len += $n;
    }

    close $s;

    return 0 unless defined $n && $head =~ /^HTTP\/1\.1 200 /;

    if ($head =~ /\r\ncontent-length: (\d+)\r\n/i) {
        my $end = index($head, "\r\n\r\n");
        return $end > 0 && $len == $end + 4 + $1;
    }

    return $tail eq "0\r\n\r\n";
}

# one GET on a keep-alive connection: seconds until the answer
sub timed_hello {
    my ($c) = @_;
    my $t0 = time;
    my $r = $c->request('GET', '/hello');
    return ($r->{status} == 200 && $r->{body} eq 'hello') ? time - $t0 : -1;
}

# what a body holds of the test's families: { key => count }, values, and
# histograms' lines
sub census {
    my ($body) = @_;
    my (%cnt, %val, %hist);

    for my $line (split /\n/, $body) {
        next unless $line =~ /^stream_test_/;

        if ($line =~ /^stream_test_total\{endpoint="[^"]*",status_code="200",
                      username="u(\d+)"\}\ (\S+)$/x)
        {
            $cnt{$1 + 0}++;
            $val{$1 + 0} = $2;

        } elsif ($line =~ /^stream_test_seconds_(bucket|sum|count)
                           \{endpoint="[^"]*",username="u(\d+)"
                           (?:,le="([^"]+)")?\}\ (\S+)$/x)
        {
            $hist{$2 + 0}{ $1 . ($3 // '') }++;
            $hist{$2 + 0}{"v:$1"} = $4 if $1 ne 'bucket';

        } else {
            $cnt{"bad:$line"}++;
        }
    }

    return (\%cnt, \%val, \%hist);
}

# the lines of the test's families, in order, for comparisons
sub test_lines {
    my ($body) = @_;
    return join "\n", grep { /^(?:# (?:HELP|TYPE) )?stream_test_/ }
                      split /\n/, $body;
}


# --- 50,000 series ---------------------------------------------------------

my $t0 = time;
ok(push_all(\&counter_update, 0 .. $COUNTERS - 1), "$COUNTERS counters");
ok(push_all(\&hist_update, 0 .. $HISTOGRAMS - 1), "$HISTOGRAMS histograms");
note(sprintf 'pushed in %.1f s', time - $t0);

my $anon0 = rss_anon();
ok(defined $anon0, "worker $worker: RssAnon read") or diag('no /proc');


# --- a slow reader ---------------------------------------------------------

my ($slow_max, $slow_text, $pushed_ok, @lat);

{
    my $s = small_socket(16384);
    send_request($s, '/metrics');

    my $text = '';
    my $hello = $t->connect;
    my $t_end = time + 1.5;
    my $next_probe = 0;
    my $round = 0;
    $slow_max = $anon0;

    while (time < $t_end) {
        my $b = read_some($s, 4096, 0.01);
        last unless defined $b;
        $text .= $b;
        sleep 0.01;

        if (time >= $next_probe) {
            my $kb = rss_anon();
            $slow_max = $kb if defined $kb && $kb > $slow_max;
            push @lat, timed_hello($hello);
            $next_probe = time + 0.05;
        }

        # new series while the body is on its way: in the family being
        # sent (not shown, or once) and in one not yet begun (shown)
        if ($round++ == 2) {
            $pushed_ok = push_all(\&counter_update, $NEW .. $NEW + 1999)
                         && push_all(\&hist_update, $NEW .. $NEW + 499);
        }
    }

    $hello->close;

    my $kb = rss_anon();
    $slow_max = $kb if defined $kb && $kb > $slow_max;

    ok(length $text > 0 && length $text < 8 << 20,
       'slow reader: part of the body read slowly')
        or diag(length $text . ' bytes');

    my ($rest, $eof) = read_rest($s, 60);
    close $s;
    $slow_text = $text . $rest;
    ok($eof, 'slow reader: then the rest, fast, to the end');
}

ok($pushed_ok, 'series pushed during the slow scrape');

my $slow = PlayarrTest::parse_response($slow_text, 'GET');
ok($slow && $slow->{status} == 200, 'slow scrape: 200')
    or diag(substr $slow_text, 0, 300);
$slow //= { headers => {}, body => '' };

my $body = $slow->{body};
my $size = length $body;

is(lc(PlayarrTest::header($slow, 'Transfer-Encoding') // ''), 'chunked',
   'HTTP/1.1: chunked');
ok(!defined PlayarrTest::header($slow, 'Content-Length'),
   'HTTP/1.1: no Content-Length');
ok($size > ($WRAP ? 2 : 20) << 20, "the body is large: $size bytes");

my @slow_lat = grep { $_ >= 0 } @lat;
is(scalar @slow_lat, scalar @lat, 'other requests answered during it');

SKIP: {
    skip "memory and time under $WRAP", 2 if $WRAP;

    my $growth = $slow_max - $anon0;
    ok($growth < 8192 && $growth * 1024 < $size / 4,
       "worker memory during the slow scrape: +$growth kB for a body of "
       . int($size / 1024) . ' kB')
        or diag("RssAnon $anon0 kB before, $slow_max kB at most");

    ok(@slow_lat && (sort { $b <=> $a } @slow_lat)[0] < 0.25,
       sprintf('... at once (%d requests, slowest %.1f ms)',
               scalar @slow_lat,
               1000 * ((sort { $b <=> $a } @slow_lat)[0] // 0)));
}

$t->promtool_ok($body, 'slow scrape: promtool check metrics');

{
    my ($cnt, $val, $hist) = census($body);

    my @bad = grep { /^bad:/ } keys %$cnt;
    ok(!@bad, 'slow scrape: every line of the families understood')
        or diag(join "\n", @bad[0 .. ($#bad < 4 ? $#bad : 4)]);

    my @missing = grep { ($cnt->{$_} // 0) != 1 } 0 .. $COUNTERS - 1;
    ok(!@missing, "slow scrape: each of the $COUNTERS counters once")
        or diag("not once: @missing[0 .. ($#missing < 9 ? $#missing : 9)]");

    my @wrong = grep { defined $val->{$_} && $val->{$_} != 1 + $_ % 97 }
                0 .. $COUNTERS - 1;
    ok(!@wrong, 'slow scrape: counter values') or diag("@wrong[0 .. 4]");

    my @new = grep { $_ >= $NEW } grep { !/^bad/ } keys %$cnt;
    ok(!grep({ $cnt->{$_} != 1 } @new),
       'slow scrape: a counter pushed meanwhile at most once ('
       . scalar(@new) . ' shown)');

    # a histogram: 13 buckets, sum and count, each once, or nothing
    my $want = join ',', sort(map({ "bucket$_" } @LE, '+Inf'), 'count', 'sum');
    my (@torn, @absent);

    for my $i (0 .. $HISTOGRAMS - 1, $NEW .. $NEW + 499) {
        my $h = $hist->{$i};
        if (!$h) {
            push @absent, $i if $i < $NEW;
            next;
        }
        my $got = join ',', sort grep { !/^v:/ } map { ($_) x $h->{$_} }
                  keys %$h;
        push @torn, $i if $got ne $want;
    }

    ok(!@absent, "slow scrape: each of the $HISTOGRAMS histograms")
        or diag("absent: @absent[0 .. ($#absent < 9 ? $#absent : 9)]");
    ok(!@torn, 'slow scrape: every histogram whole, each line once')
        or diag("torn: @torn[0 .. ($#torn < 9 ? $#torn : 9)]");

    SKIP: {
        skip "timing under $WRAP", 1 if $WRAP;

        # the counters had begun when they came, the histograms had not
        is(scalar(grep { $hist->{$_} } $NEW .. $NEW + 499), 500,
           'slow scrape: histograms pushed before their family, shown');
    }

    my @sums = grep { $hist->{$_}{'v:count'} != 1
                      || abs($hist->{$_}{'v:sum'} - ($_ % 5000) / 1000)
                         > 1e-9 }
               grep { $hist->{$_} } 0 .. $HISTOGRAMS - 1;
    ok(!@sums, 'slow scrape: histogram sums and counts') or diag("first: $sums[0]");
}

# the other families (the test's are counted above, faster)
my @dup = PlayarrTest::duplicate_series(
              join "\n", grep { !/^stream_test_/ } split /\n/, $body);
ok(!@dup, 'slow scrape: no duplicate series in the other families')
    or diag("duplicates: @dup[0 .. ($#dup < 9 ? $#dup : 9)]");

like($body, qr/^playarr_metrics_build_info\{.*\} 1\n/m,
     'slow scrape: the self metrics follow');
like($body, qr/\n\z/, 'slow scrape: the body ends with a whole line');

# the series pushed meanwhile are all there now
{
    my $r = socket_scrape('/metrics');
    my ($cnt, undef, $hist) = census($r->{body});
    is(scalar(grep { ($cnt->{$_} // 0) == 1 } $NEW .. $NEW + 1999)
       + scalar(grep { $hist->{$_} } $NEW .. $NEW + 499), 2500,
       'next scrape: the series pushed meanwhile, all of them');
}


# --- fast scrapes back to back: the other requests do not wait ----------

{
    my $until = time + 2.5;
    my $kid = PlayarrTest::spawn(sub {
        my $n = 0;
        while (time < $until) {
            die "scrape $n incomplete\n"
                unless scrape_discard('/metrics', $port2);
            $n++;
        }
        die "no scrape\n" unless $n;
    });

    sleep 0.2;

    my $c = $t->connect(port => $port2);
    my @l;

    while (time < $until - 0.2) {
        push @l, timed_hello($c);
        sleep 0.002;
    }

    $c->close;

    is(PlayarrTest::reap_kids($kid), 0, 'fast scrapes: every one complete');

    my @ok = grep { $_ >= 0 } @l;
    my @slow = grep { $_ > 0.010 } @ok;
    is(scalar @ok, scalar @l, 'fast scrapes: other requests answered');

    SKIP: {
        skip "time under $WRAP", 1 if $WRAP;

        ok(@ok > 50 && @slow <= @ok / 20,
           sprintf('fast scrapes: other requests answered at once (%d of '
                   . '%d over 10 ms)', scalar @slow, scalar @ok))
            or diag(sprintf 'latencies ms: %s',
                    join ' ', map { sprintf '%.1f', 1000 * $_ }
                              grep { defined } (sort { $b <=> $a } @ok)
                                               [0 .. 19]);
    }
}


# --- clients that go away mid-body ----------------------------------------

{
    my $mark = $t->log_mark;

    for my $round (1 .. 5) {
        # FIN after a part of the body
        my $s = small_socket(16384);
        send_request($s, '/metrics');
        my $got = '';
        while (length $got < 200_000) {
            my $b = read_some($s, 65536, 5);
            last unless defined $b && length $b;
            $got .= $b;
        }
        close $s;

        # RST after a part of the body
        $s = small_socket(16384);
        send_request($s, '/metrics/json');
        read_some($s, 65536, 5);
        setsockopt($s, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0));
        close $s;

        # gone before the first byte
        $s = small_socket(0);
        send_request($s, '/metrics');
        close $s;
    }

    sleep 0.5;

    my $r = $t->get('/hello');
    is($r->{status}, 200, 'aborted scrapes: the worker keeps serving');
    is_deeply([$t->worker_pids], [$worker], 'aborted scrapes: same worker');

    SKIP: {
        skip "memory under $WRAP", 1 if $WRAP;

        my $kb = rss_anon();
        ok($kb - $anon0 < 8192,
           "aborted scrapes: memory returns (RssAnon +" . ($kb - $anon0)
           . ' kB)');
    }

    unlike($t->log_since($mark), qr/\[(?:alert|crit|emerg)\]/,
           'aborted scrapes: no alert');
}

# past send_timeout (1s): the connection is closed, nothing is left behind
{
    my $s = small_socket(16384);
    send_request($s, '/metrics-t');
    read_some($s, 4096, 5);
    sleep 1.8;

    my ($text, $eof) = read_rest($s, 30);
    close $s;

    ok($eof, 'send_timeout: the server closes the connection');
    unlike($text, qr/\r\n0\r\n\r\n\z/, 'send_timeout: the body stopped short');

    # a timer left behind would go off within send_timeout
    sleep 1.2;

    is($t->get('/hello')->{status}, 200, 'send_timeout: the worker serves');
    is_deeply([$t->worker_pids], [$worker], 'send_timeout: same worker');
}


# --- HTTP/1.0, HEAD, gzip, limit_rate ------------------------------------

my $ref = test_lines(socket_scrape('/metrics')->{body});

{
    my $r = socket_scrape('/metrics', proto => 'HTTP/1.0');
    is($r->{status}, 200, 'HTTP/1.0: 200');
    ok(!defined PlayarrTest::header($r, 'Content-Length')
       && !defined PlayarrTest::header($r, 'Transfer-Encoding'),
       'HTTP/1.0: neither Content-Length nor chunked');
    is(lc(PlayarrTest::header($r, 'Connection') // ''), 'close',
       'HTTP/1.0: the end of the connection ends the body');
    ok(test_lines($r->{body}) eq $ref, 'HTTP/1.0: the same body');
    like($r->{body}, qr/^playarr_metrics_updates_rejected_total\{.*\n\z/m,
         'HTTP/1.0: whole, to the last line');
}

{
    my $c = $t->connect;
    my $cpu0 = cpu_ns();
    my @h = map { $c->request('HEAD', '/metrics') } 1 .. 10;
    my $cpu_head = cpu_ns() - $cpu0;

    is_deeply([map { $_->{status} } @h], [(200) x 10], 'HEAD: 200');
    is(join('', map { $_->{body} } @h), '', 'HEAD: no body');
    ok(!grep({ defined PlayarrTest::header($_, 'Content-Length')
               || defined PlayarrTest::header($_, 'Transfer-Encoding') } @h),
       'HEAD: no length announced');
    like(PlayarrTest::header($h[0], 'Content-Type') // '',
         qr{^text/plain; version=0\.0\.4}, 'HEAD: Content-Type');

    $cpu0 = cpu_ns();
    my $g = $c->request('GET', '/metrics');
    my $cpu_get = cpu_ns() - $cpu0;
    $c->close;

    is($g->{status}, 200, 'HEAD: the connection serves a GET next');
    ok(test_lines($g->{body}) eq $ref, 'HEAD: then the whole body');
    SKIP: {
        skip "time under $WRAP", 1 if $WRAP;

        ok($cpu_head < $cpu_get / 2,
           sprintf('HEAD renders nothing: 10 HEAD %.1f ms of cpu, one GET '
                   . '%.1f', $cpu_head / 1e6, $cpu_get / 1e6));
    }
}

{
    my $r = socket_scrape('/metrics-gz',
                          headers => { 'Accept-Encoding' => 'gzip' });
    is(PlayarrTest::header($r, 'Content-Encoding'), 'gzip', 'gzip: gzipped');
    my $plain;
    gunzip(\$r->{body} => \$plain) or diag("gunzip: $GunzipError");
    ok(defined $plain && test_lines($plain) eq $ref, 'gzip: the same body');
}

{
    my $t1 = time;
    my $r = socket_scrape('/metrics-rate');
    is($r->{status}, 200, 'limit_rate: 200');
    ok(test_lines($r->{body}) eq $ref, 'limit_rate: the same body');
    ok(time - $t1 > 0.3, sprintf 'limit_rate: applied (%.2f s)', time - $t1);
}


# --- /metrics/json, streamed ------------------------------------------------

{
    my $r = socket_scrape('/metrics/json');
    is($r->{status}, 200, 'json: 200');
    is(lc(PlayarrTest::header($r, 'Transfer-Encoding') // ''), 'chunked',
       'json: chunked');
    ok(length $r->{body} > 4 * 256 * 1024,
       'json: a body of many steps (' . length($r->{body}) . ' bytes)');

    my $text = socket_scrape('/metrics')->{body};

    # python's json: JSON::PP is too slow for tens of megabytes
    my $jf = $t->write_file('scrape.json', $r->{body});
    my $tf = $t->write_file('scrape.txt', $text);
    my $py = $t->write_file('compare.py', <<'PY');
import json, re, sys

doc = json.load(open(sys.argv[1]))
assert isinstance(doc, list), "not an array"
keys = {"name", "help", "type", "values", "aggregator"}
json_samples = {}
for fam in doc:
    assert set(fam) == keys, "keys %r" % sorted(fam)
    if not fam["name"].startswith("stream_test_"):
        continue
    for v in fam["values"]:
        name = v.get("metricName", fam["name"])
        k = name + "{" + ",".join("%s=%s" % (l, v["labels"][l])
                                  for l in sorted(v["labels"])) + "}"
        assert k not in json_samples, "twice: " + k
        json_samples[k] = float(v["value"])

text_samples = {}
line = re.compile(r'^(stream_test_\w+)\{(.*)\} (\S+)$')
pair = re.compile(r'(\w+)="([^"]*)"')
for l in open(sys.argv[2]):
    m = line.match(l)
    if not m:
        continue
    labels = dict(pair.findall(m.group(2)))
    k = m.group(1) + "{" + ",".join("%s=%s" % (a, labels[a])
                                    for a in sorted(labels)) + "}"
    text_samples[k] = float(m.group(3))

if json_samples != text_samples:
    a = set(json_samples) ^ set(text_samples)
    print("differ", len(json_samples), len(text_samples), sorted(a)[:3])
else:
    print("same", len(json_samples))
PY
    my $out = `python3 '$py' '$jf' '$tf' 2>&1`;
    like($out, qr/^same (\d+)$/m, 'json: valid, the same samples as the text')
        or diag($out);
    my ($n) = $out =~ /^same (\d+)$/m;
    ok(($n // 0) >= $COUNTERS + 15 * $HISTOGRAMS,
       'json: every sample of the families (' . ($n // 0) . ')');
}

$t->stop;

done_testing;
