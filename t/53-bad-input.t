#!/usr/bin/perl

# Bad input, clear answers (docs/directives.md):
# - Authorization headers of 16 KiB, duplicated, scheme only, extra
#   spaces, NUL and control bytes: 400 or 401 (or nginx's own 400), never
#   500, never a crash, never a copy into the zone;
# - push bodies nested 10000 deep, numbers out of range, label values with
#   NUL, invalid UTF-8 or 64 KiB, batches of 100000 updates, duplicate
#   keys: a clear 4xx with a short JSON error, counted once in
#   playarr_metrics_updates_rejected_total, and nothing applied (/metrics
#   and the zone's used bytes unchanged);
# - client-chosen user names with control bytes, invalid UTF-8, 16 KiB;
# - a token file that becomes a symlink, empty, garbage, a directory, a
#   FIFO, unreadable or missing at runtime fails closed (500 or 401, never
#   200 with the old token) on every worker, and recovers when fixed.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use POSIX qw(mkfifo);
use Test::More;
use Time::HiRes qw(time sleep);
use PlayarrTest;

PlayarrTest::need_module();

my $SCHEMA = PlayarrTest::need_schema();

my $JSON = JSON::PP->new->canonical->utf8;
my $T0 = time;

# the same locations on two ports: nginx's default header buffers (8k
# lines) on the first, room for 64 KiB headers on the second
my $LOCATIONS = <<'EOF';
        playarr_metrics_username $http_x_user;
        add_header X-Worker-Pid $pid always;

        location = /metrics { playarr_metrics_export; }
        location = /push {
            client_body_buffer_size 1m;
            playarr_metrics_push;
        }
        location = /push-big {
            client_max_body_size 8m;
            client_body_buffer_size 1m;
            playarr_metrics_push;
        }
        location /api/ { return 200 "ok"; }
EOF

my $t = PlayarrTest->new(http => <<"EOF");
    playarr_metrics_zone playarr:1m;
    playarr_metrics_token_file %%DIR%%/metrics.token;
    playarr_metrics_schema $SCHEMA;
    playarr_metrics_route /api/titles/:title_key;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        server_name localhost;
$LOCATIONS
    }

    server {
        listen 127.0.0.1:%%PORT2%% reuseport;
        server_name big;
        large_client_header_buffers 4 64k;
$LOCATIONS
    }
EOF

my $TOKEN = '5f' x 32;
$t->write_secret('metrics.token', "$TOKEN\n");
$t->start;

my $P1 = $t->port(1);
my $P2 = $t->port(2);
my %AUTH = (Authorization => "Bearer $TOKEN");
$t->scrape_setup(token => $TOKEN);


# --- local helpers ----------------------------------------------------------

# every sample but the self metrics (which count the rejections)
# the values pushes could change: not the self metrics, nor the requests
# in flight (a request just answered may not be freed yet)
sub state_of {
    my ($body) = @_;
    my $m = PlayarrTest::parse_metrics($body);
    return { map { $_ => $m->{$_} }
             grep { !/^playarr_metrics_|^playarr_http_requests_in_flight$/ }
             keys %$m };
}

sub zone_used {
    my ($body) = @_;
    return PlayarrTest::sample($body, 'playarr_metrics_zone_used_bytes',
                               { zone => 'playarr' });
}

sub rejected {
    my ($body, $reason) = @_;
    return PlayarrTest::sample($body, 'playarr_metrics_updates_rejected_total',
                               { source => 'push', reason => $reason });
}

# a request written byte for byte; returns the parsed response
sub raw_request {
    my ($bytes, %opt) = @_;
    my $out = $t->raw($bytes, port => $opt{port} || $P1, timeout => 10);
    return PlayarrTest::parse_response($out, 'GET')
           // { status => 599, body => '', headers => {}, raw => $out };
}

sub short {
    my $s = shift // '';
    return length $s > 200 ? substr($s, 0, 200) . '...' : $s;
}

# for test names: bytes outside printable ASCII as \xNN, long ones counted
sub show {
    my $s = shift // '';
    return length($s) . ' bytes' if length $s > 40;
    $s =~ s/([^\x20-\x7e])/sprintf '\\x%02x', ord $1/ge;
    return $s;
}


# --- 1: Authorization headers ------------------------------------------------

my $before = $t->scrape('before the header abuse');
my $used0 = zone_used($before);

my $BIG = 'a' x 16384;
my $push_intruder = $JSON->encode({ metric => 'stream_requests', op => 'inc',
                                    labels => { user => 'intruder' } });

# [name, port, header value(s) or raw request bytes (a scalar ref), statuses]
my @auth = (
    [ '16 KiB token, default buffers (nginx 400)', $P1, ["Bearer $BIG"],
      [400] ],
    [ '16 KiB token, 64k buffers', $P2, ["Bearer $BIG"], [401] ],
    [ '16 KiB of bytes no token has', $P2, ['Bearer ' . ('!' x 16384)],
      [400] ],
    [ 'the token, then 16 KiB of padding', $P2,
      ["Bearer $TOKEN" . ('=' x 16384)], [401] ],
    [ '16 KiB of spaces then the token', $P2,
      ['Bearer' . (' ' x 16384) . $TOKEN], [200, 400, 401] ],
    [ '16 KiB scheme name', $P2, [('B' x 16384) . " $TOKEN"], [401] ],
    [ 'duplicated (nginx 400)', $P1, ["Bearer $TOKEN", "Bearer $TOKEN"],
      [400] ],
    [ 'duplicated, one of them empty', $P1, ["Bearer $TOKEN", ''], [400] ],
    [ 'duplicated, other case', $P1,
      \("GET %PATH% HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
       . "Authorization: Bearer $TOKEN\r\nAUTHORIZATION: Bearer $TOKEN\r\n"
       . "%BODYHDR%\r\n%BODY%"), [400] ],
    [ 'scheme only', $P1, ['Bearer'], [400] ],
    [ 'scheme and spaces', $P1, ['Bearer      '], [400] ],
    [ 'extra spaces before a wrong token', $P1, ['Bearer    ' . ('0' x 64)],
      [401] ],
    [ 'extra spaces before the token (RFC 6750: 1*SP)', $P1,
      ["Bearer    $TOKEN"], [200] ],
    [ 'spaces inside the token', $P1,
      ['Bearer ' . substr($TOKEN, 0, 10) . ' ' . substr($TOKEN, 10)], [400] ],
    [ 'tab instead of space', $P1, ["Bearer\t$TOKEN"], [400] ],
    [ 'NUL byte in the token (nginx 400)', $P1,
      \("GET %PATH% HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
       . "Authorization: Bearer ab\0cd\r\n%BODYHDR%\r\n%BODY%"), [400] ],
    [ 'NUL byte after the token (nginx 400)', $P1,
      \("GET %PATH% HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
       . "Authorization: Bearer $TOKEN\0\r\n%BODYHDR%\r\n%BODY%"), [400] ],
    [ 'control byte \x01 in the token', $P1, ["Bearer ab\x01cd"], [400] ],
    [ 'escape sequence after the token', $P1, ["Bearer $TOKEN\x1b[31m"],
      [400] ],
    [ 'DEL in the token', $P1, ["Bearer ab\x7fcd"], [400] ],
    [ 'UTF-8 in the token', $P1, ["Bearer caf\xc3\xa9"], [400] ],
    [ 'invalid UTF-8 in the token', $P1, ["Bearer \xff\xfe\xfd"], [400] ],
    [ 'obs-fold continuation line', $P1,
      \("GET %PATH% HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
       . "Authorization: Bearer\r\n $TOKEN\r\n%BODYHDR%\r\n%BODY%"),
      [400, 401] ],
    [ 'empty value', $P1, [''], [401] ],
);

my ($after_get, $pushed) = (undef, 0);

for my $path ('/metrics', '/push') {
    $after_get = $t->scrape('after the GET header abuse') if $path eq '/push';

    for my $c (@auth) {
        my ($name, $port, $h, $ok) = @$c;
        my $body = $path eq '/push' ? $push_intruder : undef;
        my $r;

        if (ref $h eq 'SCALAR') {
            my $req = $$h;
            my $bh = defined $body
                     ? "Content-Type: application/json\r\n"
                       . 'Content-Length: ' . length($body) . "\r\n"
                     : '';
            $req =~ s/%PATH%/$path/;
            $req =~ s/%BODYHDR%/$bh/;
            my $b = $body // '';
            $req =~ s/%BODY%/$b/;
            $r = raw_request($req, port => $port);
        } else {
            my @ct = defined $body ? ('Content-Type' => 'application/json')
                                   : ();
            $r = $t->request($path eq '/push' ? 'POST' : 'GET', $path,
                             port => $port, body => $body,
                             headers => [(map { (Authorization => $_) } @$h),
                                         @ct]);
        }

        # a push with the right token after all is fine: it is counted
        my @want = map { $path eq '/push' && $_ == 200 ? 204 : $_ } @$ok;

        $pushed++ if $path eq '/push' && $r->{status} == 204;

        ok((grep { $r->{status} == $_ } @want),
           "$path, Authorization $name: $r->{status} (@want)")
            or diag(short($r->{error} // $r->{raw}));

        if ($r->{status} == 401
            || ($r->{status} == 400
                && PlayarrTest::header($r, 'WWW-Authenticate')))
        {
            my $j = PlayarrTest::json_body($r);
            ok(ref $j eq 'HASH' && defined $j->{error},
               "$path, Authorization $name: a JSON error");
        }
    }
}

{
    my $m = $t->scrape('after the header abuse');
    my $intruder = PlayarrTest::sample($m, 'playarr_stream_requests_total',
                                       { user => 'intruder' }) // 0;
    # requests nginx itself refuses (too large, duplicate, NUL) never
    # reach the /metrics location: they are recorded as any client request
    # answered 400, with nothing of the header in their labels
    my $new = {};
    {
        my $b = PlayarrTest::parse_metrics($before);
        my $a = PlayarrTest::parse_metrics($after_get);
        for my $s (PlayarrTest::samples($a, 'playarr_http_requests_total')) {
            my $k = PlayarrTest::series_key('playarr_http_requests_total',
                                            $s->[0]);
            $new->{$k} = $s->[1] - ($b->{$k} // 0)
                if $s->[1] != ($b->{$k} // 0);
        }
    }
    is_deeply([keys %$new],
              [PlayarrTest::series_key('playarr_http_requests_total',
                                       { endpoint => 'unknown_endpoint',
                                         status_code => 400,
                                         username => 'anonymous' })],
              'headers: the requests nginx refused are counted as'
              . ' unknown_endpoint 400 anonymous, nothing else');
    ok(zone_used($after_get) - $used0 < 1024,
       'headers: GET /metrics: the zone grew by '
       . (zone_used($after_get) - $used0) . ' bytes (that one series)');
    is($intruder, $pushed, "headers: only the $pushed pushes answered 204"
                           . ' applied');
    unlike($m, qr/a{1000}|!{1000}/, 'headers: no header text in /metrics');
    unlike($t->error_log_text, qr/a{1000}|\Q$TOKEN\E/,
           'headers: neither the long header nor the token in the error log');
}


# --- 2: push bodies ----------------------------------------------------------

sub nest {
    my ($open, $close, $n, $inner) = @_;
    return ($open x $n) . $inner . ($close x $n);
}

my $u = sub {
    my ($labels, %more) = @_;
    return $JSON->encode({ metric => 'stream_requests', op => 'inc',
                           labels => $labels, %more });
};

my $LONG = 'L' x 65536;
my $small_update = '{"metric":"active_users","op":"inc"}';    # 36 bytes

# [name, body, path, expected status, reason counted ('': none)]
my @bad = (
    [ 'arrays nested 10000 deep', nest('[', ']', 10000, ''), 400, 'malformed' ],
    [ 'objects nested 10000 deep', nest('{"a":', '}', 10000, '1'), 400,
      'malformed' ],
    [ 'a label value nested 10000 deep',
      '{"metric":"stream_requests","op":"inc","labels":{"user":'
      . nest('[', ']', 10000, '') . '}}', 400, 'malformed' ],
    [ 'a label value nested 100 deep (under the parser limit)',
      '{"metric":"stream_requests","op":"inc","labels":{"user":'
      . nest('[', ']', 100, '"x"') . '}}', 400, 'invalid' ],
    [ 'value 1e400', '{"metric":"stream_requests","op":"inc",'
      . '"labels":{"user":"x"},"value":1e400}', 400, 'malformed' ],
    [ 'value -1e400', '{"metric":"provider_active","op":"set",'
      . '"labels":{"provider_id":"x"},"value":-1e400}', 400, 'malformed' ],
    [ 'value 1e309', '{"metric":"provider_active","op":"set",'
      . '"labels":{"provider_id":"x"},"value":1e309}', 400, 'malformed' ],
    [ 'integer value past 64 bits', '{"metric":"provider_active","op":"set",'
      . '"labels":{"provider_id":"x"},"value":123456789012345678901234567890}',
      400, 'malformed' ],
    [ 'integer label value past 64 bits', '{"metric":"stream_requests",'
      . '"op":"inc","labels":{"user":99999999999999999999999}}', 400,
      'malformed' ],
    [ 'label value 1e400', '{"metric":"stream_requests","op":"inc",'
      . '"labels":{"user":1e400}}', 400, 'malformed' ],
    [ 'value NaN', '{"metric":"provider_active","op":"set",'
      . '"labels":{"provider_id":"x"},"value":NaN}', 400, 'malformed' ],
    [ 'value Infinity', '{"metric":"provider_active","op":"set",'
      . '"labels":{"provider_id":"x"},"value":Infinity}', 400, 'malformed' ],
    [ 'value a string', $u->({ user => 'x' }, value => '1'), 400, 'invalid' ],
    [ 'label value with \u0000', '{"metric":"stream_requests","op":"inc",'
      . '"labels":{"user":"a\u0000b"}}', 400, 'malformed' ],
    [ 'label value only \u0000', '{"metric":"stream_requests","op":"inc",'
      . '"labels":{"user":"\u0000"}}', 400, 'malformed' ],
    [ 'label value with a raw NUL byte', '{"metric":"stream_requests",'
      . "\"op\":\"inc\",\"labels\":{\"user\":\"a\0b\"}}", 400, 'malformed' ],
    [ 'label value with invalid UTF-8', '{"metric":"stream_requests",'
      . "\"op\":\"inc\",\"labels\":{\"user\":\"\xff\xfe\"}}", 400,
      'malformed' ],
    [ 'label value with overlong UTF-8', '{"metric":"stream_requests",'
      . "\"op\":\"inc\",\"labels\":{\"user\":\"\xc0\xaf\"}}", 400,
      'malformed' ],
    [ 'label value with a surrogate in UTF-8', '{"metric":"stream_requests",'
      . "\"op\":\"inc\",\"labels\":{\"user\":\"\xed\xa0\x80\"}}", 400,
      'malformed' ],
    [ 'label value with a lone \ud800', '{"metric":"stream_requests",'
      . '"op":"inc","labels":{"user":"\ud800"}}', 400, 'malformed' ],
    [ 'label value with truncated UTF-8', '{"metric":"stream_requests",'
      . "\"op\":\"inc\",\"labels\":{\"user\":\"\xe2\x82\"}}", 400,
      'malformed' ],
    [ 'a 64 KiB label value', $u->({ user => $LONG }), 400, 'invalid' ],
    [ 'a 129-byte label value', $u->({ user => 'v' x 129 }), 400, 'invalid' ],
    [ 'a 64 KiB metric name', $JSON->encode({ metric => $LONG, op => 'inc' }),
      400, 'invalid' ],
    [ 'a 64 KiB label name', $u->({ user => 'x', $LONG => 'y' }), 400,
      'invalid' ],
    [ 'a 64 KiB field name', $u->({ user => 'x' }, $LONG => 1), 400,
      'invalid' ],
    [ 'duplicate key "metric"', '{"metric":"stream_requests","metric":'
      . '"cache_operations","op":"inc","labels":{"user":"x"}}', 400,
      'malformed' ],
    [ 'duplicate label', '{"metric":"stream_requests","op":"inc",'
      . '"labels":{"user":"x","user":"y"}}', 400, 'malformed' ],
    [ 'empty body', '', 400, 'malformed' ],
    [ 'null', 'null', 400, 'malformed' ],
    [ 'truncated JSON', '[{"metric":"stream_requests","op":"inc"', 400,
      'malformed' ],
    [ 'two JSON values', $u->({ user => 'x' }) . $u->({ user => 'y' }), 400,
      'malformed' ],
    [ '100000 updates that are not objects (200 KB)',
      '[' . join(',', ('0') x 100_000) . ']', 400, 'invalid' ],
    [ '28000 updates within 1 MiB, the last one bad',
      '[' . join(',', ($small_update) x 27_999,
                 '{"metric":"active_users","op":"dec","value":"x"}') . ']',
      400, 'invalid', 27_999 ],
    [ '100000 updates (3.6 MB): nginx refuses it (client_max_body_size)',
      '[' . join(',', ($small_update) x 100_000) . ']', 413, '' ],
    [ '100000 updates (3.6 MB) where nginx allows 8m: the module refuses',
      '[' . join(',', ($small_update) x 100_000) . ']', 413, 'too_large',
      undef, '/push-big' ],
);

my $pb = $t->scrape('before the push abuse');
my %rej0 = map { $_ => rejected($pb, $_) } qw(malformed invalid too_large);
my %rej;
my $used1 = zone_used($pb);

for my $c (@bad) {
    my ($name, $body, $status, $reason, $index, $path) = @$c;
    my $t1 = time;
    my $r = $t->request('POST', $path || '/push', body => $body,
                        headers => [%AUTH,
                                    'Content-Type' => 'application/json'],
                        timeout => 20);
    my $dt = time - $t1;

    is($r->{status}, $status, "push $name: $status")
        or diag(short($r->{raw} || $r->{error}));

    $rej{$reason}++ if $reason;

    next unless $reason;

    my $j = PlayarrTest::json_body($r);
    is(PlayarrTest::header($r, 'Content-Type'), 'application/json',
       "push $name: a JSON answer");
    ok(ref $j eq 'HASH' && defined $j->{error} && !ref $j->{error}
       && length $j->{error}, "push $name: {\"error\": ...}")
        or diag(short($r->{body}));
    ok(length($r->{body}) < 1024, "push $name: a short answer ("
                                  . length($r->{body}) . ' bytes)');
    is($j->{index}, $index, "push $name: index $index") if defined $index;
    ok(!defined $j->{index}, "push $name: no index")
        if $reason eq 'malformed';
    note(sprintf "push %s: %.0f ms: %s", $name, 1000 * $dt,
         short($j->{error}));
}

my $pa = $t->scrape('after the push abuse');

is_deeply(state_of($pa), state_of($pb), 'pushes: nothing applied');
is(zone_used($pa), $used1, 'pushes: the zone did not grow');
for my $reason (qw(malformed invalid too_large)) {
    is(rejected($pa, $reason) - $rej0{$reason}, $rej{$reason} // 0,
       "pushes: updates_rejected_total{reason=\"$reason\"} counted each"
       . ' once');
}
unlike($pa, qr/L{200}|v{129}/, 'pushes: no long value in /metrics');

# what is accepted: a number that underflows to 0, a big batch that fits
{
    my $r = $t->request('POST', '/push',
                        body => '{"metric":"provider_active","op":"set",'
                                . '"labels":{"provider_id":"tiny"},'
                                . '"value":1e-400}',
                        headers => [%AUTH,
                                    'Content-Type' => 'application/json']);
    ok($r->{status} == 204 || $r->{status} == 400,
       "push value 1e-400: $r->{status} (204 as 0, or refused)");

    my $v = PlayarrTest::sample($t->scrape('1e-400'), 'playarr_provider_active',
                                { provider_id => 'tiny' });
    if ($r->{status} == 204) {
        is($v, 0, 'value 1e-400 reads 0');
    } else {
        ok(!defined $v, 'value 1e-400 refused: no series');
    }

    my $n = 28_000;
    my $body = '[' . join(',', ($small_update) x $n) . ']';
    my $before_v = PlayarrTest::sample($pa, 'playarr_active_users', {}) // 0;
    my $t1 = time;
    $r = $t->request('POST', '/push', body => $body, timeout => 20,
                     headers => [%AUTH, 'Content-Type' => 'application/json']);
    my $dt = time - $t1;
    is($r->{status}, 204, sprintf 'a batch of %d updates (%d bytes) applies'
                                  . ' in %.0f ms', $n, length $body,
                                  1000 * $dt);
    is(PlayarrTest::sample($t->scrape('big batch'), 'playarr_active_users', {}),
       $before_v + $n, "... every one of the $n");
}


# --- 3: client-chosen user names ---------------------------------------------

{
    my @users = (
        [ "ctl\x01\x1b[31mred\tx", "ctl\x01\x1b[31mred\tx" ],
        [ "bad\xff\xfeutf8", "bad\xef\xbf\xbd\xef\xbf\xbdutf8" ],
        [ "q\"b\\s", "q\"b\\s" ],
        [ 'U' x 16384, 'U' x 128 ],
        [ ("\xe2\x82\xac" x 50), ("\xe2\x82\xac" x 42) ],    # cut at 126
    );

    my $m0 = $t->scrape('before the user names');

    for my $u (@users) {
        my $r = $t->get('/api/titles/x', port => $P2,
                        headers => { 'X-User' => $u->[0] });
        is($r->{status}, 200, 'user name ' . show($u->[0]) . ': 200');
    }

    my $body = $t->scrape('user names');
    my %got;
    for my $s (PlayarrTest::samples($body, 'playarr_http_requests_total')) {
        $got{ $s->[0]{username} } = $s->[1];
    }

    for my $u (@users) {
        is($got{ $u->[1] }, 1, 'user name stored as ' . show($u->[1]));
    }

    ok(zone_used($body) - zone_used($m0) < 8192,
       'five user names, a 16 KiB one among them, took '
       . (zone_used($body) - zone_used($m0)) . ' bytes of the zone');
}


# --- 4: the token file at runtime --------------------------------------------

my $tokfile = $t->path('metrics.token');

# every worker answers the old token with 500 or 401, never 200; pushes
# with it are not applied
sub fails_closed {
    my ($name) = @_;
    my $t1 = time;
    my ($resp, $seen, $all) = $t->hit_all_workers(sub {
        $t->get('/metrics', headers => \%AUTH, timeout => 5);
    });
    my $dt = time - $t1;
    my @st = map { $_->{status} } @$resp;

    ok($all, "token file $name: every worker asked (" . scalar(@st)
             . ' requests)');
    my %distinct = map { $_ => 1 } @st;
    is(scalar(grep { $_ != 500 && $_ != 401 } @st), 0,
       "token file $name: only 500 or 401 ("
       . join(' ', sort keys %distinct) . ')');
    ok($dt / @st < 1, sprintf "token file %s: answered in %.0f ms each",
                              $name, 1000 * $dt / @st);

    my $r = $t->request('POST', '/push', body => $u->({ user => "tok-$name" }),
                        headers => [%AUTH,
                                    'Content-Type' => 'application/json']);
    ok($r->{status} == 500 || $r->{status} == 401,
       "token file $name: a push is refused ($r->{status})");
}

sub recovers {
    my ($name) = @_;
    unlink $tokfile;
    rmdir $tokfile;
    $t->write_secret('metrics.token', "$TOKEN\n", rename => 1);

    my ($resp, $seen, $all) = $t->hit_all_workers(sub {
        $t->get('/metrics', headers => \%AUTH);
    });
    my @st = map { $_->{status} } @$resp;
    ok($all && !grep({ $_ != 200 } @st),
       "token file $name, fixed: 200 on every worker") or diag("@st");
}

my ($wuid, $wgid) = $t->worker_ids;

my @states = (
    [ 'a symlink to a file with the token', sub {
          $t->write_secret('real.token', "$TOKEN\n");
          unlink $tokfile;
          symlink $t->path('real.token'), $tokfile or die "symlink: $!";
      } ],
    [ 'a symlink to nowhere', sub {
          unlink $tokfile;
          symlink $t->path('nowhere'), $tokfile or die "symlink: $!";
      } ],
    [ 'empty', sub { $t->write_secret('metrics.token', '') } ],
    [ 'whitespace only', sub { $t->write_secret('metrics.token', " \n\t\n") } ],
    [ 'binary garbage', sub {
          $t->write_secret('metrics.token', "\x00\xff\x01garbage\x7f");
      } ],
    [ 'text with spaces', sub {
          $t->write_secret('metrics.token', "not a token at all\n",
                           rename => 1);
      } ],
    [ 'the token twice on two lines', sub {
          $t->write_secret('metrics.token', "$TOKEN\n$TOKEN\n");
      } ],
    [ '5000 bytes', sub { $t->write_secret('metrics.token', 'x' x 5000) } ],
    [ 'a directory', sub { unlink $tokfile; mkdir $tokfile or die $! } ],
    [ 'a FIFO', sub {
          unlink $tokfile;
          mkfifo($tokfile, 0600) or die "mkfifo: $!";
          chown $wuid, $wgid, $tokfile;
      } ],
    [ 'missing', sub { unlink $tokfile } ],
    ($> == 0 ? [ 'unreadable by the workers', sub {
          $t->write_secret('metrics.token', "$TOKEN\n", rename => 1);
          chown 0, 0, $tokfile;
          chmod 0600, $tokfile;
      } ] : ()),
);

for my $s (@states) {
    my ($name, $make) = @$s;
    # past the kernel's timestamp granularity, for the in-place writes
    sleep 0.02;
    $make->();
    fails_closed($name);
    recovers($name);
}

my $final = $t->scrape('final');
is(scalar(grep { /user="tok-/ } keys %{ PlayarrTest::parse_metrics($final) }),
   0, 'token file: no push was applied while it was broken');

$t->stop;

unlike($t->error_log_text . ($t->read_file('access.log') // ''),
       qr/\Q$TOKEN\E/, 'the token is in no log');

note(sprintf 'took %.1f s', time - $T0);

done_testing;
