#!/usr/bin/perl

# The guards of the handlers and of the token file (issue 15, DESIGN.md
# sections 6 and 10), tried from the attacker's side:
# 1. subrequests (SSI include virtual, add_after_body, mirror) run no
#    access phase: a location guarded by nginx (playarr_metrics_auth off
#    plus deny/allow/auth_request) refuses them with 403; the token, the
#    metrics and pushes do not leak through a public page;
# 2. a push is authenticated from its headers, before its body is read:
#    an anonymous 2 MiB POST gets 401 (not 413), moves no counter, and
#    gets its answer before it has sent its body;
# 3. concurrent regenerations are serialised: every token answered was
#    the file's when it was sent, the last one answered is the file's.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Select;
use Test::More;
use Time::HiRes qw(time sleep);
use PlayarrTest;

plan skip_all => 'module not built: ' . PlayarrTest::module_path()
    unless -e PlayarrTest::module_path();

my $MiB = 1024 * 1024;

my $SCHEMA = <<'EOF';
{"metrics": {
    "guard_probe": {"type": "counter", "name": "playarr_guard_probe_total",
                    "help": "Pushed by the guard tests",
                    "labelNames": ["via"]}
}}
EOF

# the directory of the token file is the workers' (they regenerate it)
sub token_dir {
    my ($t) = @_;
    my ($uid, $gid) = $t->worker_ids;
    my $dir = $t->path('tok');

    mkdir $dir or die "mkdir $dir: $!";
    chown $uid, $gid, $dir or die "chown $dir: $!";
    chmod 0700, $dir or die "chmod $dir: $!";

    return $dir;
}

sub bearer { [ Authorization => "Bearer $_[0]" ] }

sub json_push {
    my ($token) = @_;
    return [ ($token ? @{ bearer($token) } : ()),
             'Content-Type' => 'application/json' ];
}


# === 1. subrequests ======================================================

{
    my $t = PlayarrTest->new(http => <<'EOF');
    playarr_metrics_zone playarr:1m;
    playarr_metrics_token_file %%DIR%%/tok/metrics.token;
    playarr_metrics_schema %%DIR%%/schema.json;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        # guarded by nginx's access phase only
        location = /metrics-denied {
            playarr_metrics_export;
            playarr_metrics_auth off;
            deny all;
        }
        location = /json-denied {
            playarr_metrics_export json;
            playarr_metrics_auth off;
            deny all;
        }
        location = /metrics-local {
            playarr_metrics_export;
            playarr_metrics_auth off;
            allow 127.0.0.2;
            deny all;
        }
        location = /admin-denied {
            playarr_metrics_token_admin;
            playarr_metrics_auth off;
            deny all;
        }
        location = /admin-authreq {
            playarr_metrics_token_admin;
            playarr_metrics_auth off;
            auth_request /_refuse;
        }
        location = /_refuse {
            internal;
            return 403;
        }
        location = /push-denied {
            playarr_metrics_push;
            playarr_metrics_auth off;
            deny all;
        }

        # guarded by the token
        location = /metrics { playarr_metrics_export; }
        location = /admin { playarr_metrics_token_admin; }

        # public
        location /pub/ {
            root %%DIR%%/www;
            default_type text/html;
            ssi on;
        }
        location = /add/after.html {
            root %%DIR%%/www;
            default_type text/html;
            add_after_body /admin-denied;
        }
        location = /add/before.html {
            root %%DIR%%/www;
            default_type text/html;
            add_before_body /metrics-denied;
        }
        location = /mirror/push {
            root %%DIR%%/www;
            mirror /push-denied;
        }
        location = /mirror/regenerate {
            root %%DIR%%/www;
            mirror /admin-denied;
        }
    }
EOF

    token_dir($t);
    $t->write_file('schema.json', $SCHEMA);
    mkdir $t->path($_) for qw(www www/pub www/add www/mirror);

    my %page = (
        metrics => '/metrics-denied',
        json    => '/json-denied',
        local   => '/metrics-local',
        admin   => '/admin-denied',
        authreq => '/admin-authreq',
        push    => '/push-denied',
        bearer  => '/metrics',
        tokbear => '/admin',
    );

    for my $p (sort keys %page) {
        $t->write_file("www/pub/$p.shtml",
                       "<html><body>\nBEGIN\n"
                       . "<!--# include virtual=\"$page{$p}\" -->"
                       . "END\n</body></html>\n");
    }

    $t->write_file("www/add/$_.html", "<html><body>page $_</body></html>\n")
        for qw(after before);

    $t->start;

    my $token = $t->read_token('tok/metrics.token');
    like($token, qr/\A[0-9a-f]{64}\z/, 'subrequests: a token');

    # what a metrics body or the token would show
    my $leak = qr/\Q$token\E|# TYPE|playarr_metrics_build_info|"value"/;

    # the guards hold for the client itself
    for my $p (qw(/metrics-denied /json-denied /metrics-local /admin-denied
                  /admin-authreq))
    {
        my $r = $t->get($p);
        is($r->{status}, 403, "direct GET $p: 403");
        unlike($r->{raw}, $leak, "direct GET $p: nothing shown");
    }

    # and for its subrequests
    for my $p (qw(metrics json local admin authreq push)) {
        my $r = $t->get("/pub/$p.shtml");
        my ($inc) = ($r->{body} // '') =~ /BEGIN\n(.*)END/s;

        is($r->{status}, 200, "SSI include of $page{$p}: the page is served");
        ok(defined $inc, "SSI include of $page{$p}: the include ran");
        unlike($r->{body}, $leak, "SSI include of $page{$p}: nothing leaks")
            or diag($r->{body});
        like($inc // '', qr/403 Forbidden/,
             "SSI include of $page{$p}: the subrequest got 403");
    }

    for my $p (qw(after before)) {
        my $r = $t->get("/add/$p.html");
        is($r->{status}, 200, "add_${p}_body: the page is served");
        like($r->{body}, qr/page $p/, "add_${p}_body: the page itself");
        unlike($r->{body}, $leak, "add_${p}_body: nothing leaks")
            or diag($r->{body});
        like($r->{body}, qr/403 Forbidden/, "add_${p}_body: 403 added");
    }

    # a mirror subrequest has the method and the body of the client's
    my $mark = $t->log_mark;
    my $r = $t->request('POST', '/mirror/push', headers => json_push(),
                        body => '{"metric":"guard_probe","op":"inc",'
                                . '"labels":{"via":"mirror"}}');
    ok($r->{status} >= 400, "mirror of a push: the page refuses POST"
                            . " ($r->{status})");

    $r = $t->request('POST', '/mirror/regenerate', body => '');
    ok($r->{status} >= 400, "mirror of a regeneration ($r->{status})");
    unlike($r->{raw}, $leak, 'mirror of a regeneration: nothing shown');

    # the mirrors are background subrequests: wait for their log lines
    ok($t->wait_for_log(qr/(?:subrequest forbidden.*){2}/s, 5, $mark),
       'mirrors: both subrequests refused and logged');

    is($t->read_token('tok/metrics.token'), $token,
       'mirror of a regeneration: the token did not change');

    my $m = $t->metrics(token => $token, name => 'after the mirrors');
    is(PlayarrTest::sample($m, 'playarr_guard_probe_total',
                           { via => 'mirror' }),
       undef, 'mirror of a push: nothing applied');

    # with the token, a subrequest is let in on its client's token
    $r = $t->get('/pub/bearer.shtml');
    unlike($r->{body}, $leak, 'SSI include of /metrics, no token: no leak');
    like($r->{body}, qr/Missing or invalid Authorization header/,
         'SSI include of /metrics, no token: the 401 answer');

    $r = $t->get('/pub/bearer.shtml', headers => bearer('0' x 64));
    unlike($r->{body}, $leak, 'SSI include of /metrics, wrong token: no leak');

    $r = $t->get('/pub/bearer.shtml', headers => bearer($token));
    my ($inc) = ($r->{body} // '') =~ /BEGIN\n(.*)END/s;
    like($inc // '', qr/^# TYPE playarr_metrics_build_info/m,
         'SSI include of /metrics with the token: the metrics');
    $t->promtool_ok($inc // '', 'SSI include of /metrics: valid exposition');

    $r = $t->get('/pub/tokbear.shtml', headers => bearer($token));
    like($r->{body}, qr/\{"value":"\Q$token\E"\}/,
         'SSI include of the token page with the token: the token');

    $r = $t->get('/pub/tokbear.shtml');
    unlike($r->{body}, $leak, 'SSI include of the token page, no token');

    like($t->error_log_text,
         qr/\[error\].*playarr metrics: subrequest forbidden, the location has "playarr_metrics_auth off"/,
         'the refusal is logged at error');

    $t->stop;

    unlike($t->error_log_text . ($t->read_file('access.log') // ''),
           qr/\Q$token\E/, 'subrequests: the token is in no log');
}


# === 2. a push is authenticated before its body is read ==================

{
    my $t = PlayarrTest->new(http => <<'EOF');
    playarr_metrics_zone playarr:1m;
    playarr_metrics_token_file %%DIR%%/metrics.token;
    playarr_metrics_schema %%DIR%%/schema.json;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location = /metrics { playarr_metrics_export; }
        location = /push {
            client_max_body_size 8m;
            client_body_buffer_size 16k;
            playarr_metrics_push;
        }
    }
EOF

    $t->write_file('schema.json', $SCHEMA);
    $t->start;

    my $token = $t->read_token('metrics.token');
    my %rej = (source => 'push', reason => 'too_large');

    my $too_large = sub {
        my $m = $t->metrics(token => $token, name => $_[0]);
        return PlayarrTest::sample($m, 'playarr_metrics_updates_rejected_total',
                                   \%rej) // 0;
    };

    my $big = ' ' x (2 * $MiB);
    my $mid = '{"metric":"guard_probe","op":"inc","labels":{"via":"anon"}}';
    $mid .= ' ' x (900 * 1024 - length $mid);

    my $before = $too_large->('before');
    my $mark = $t->log_mark;

    my $r = $t->request('POST', '/push', headers => json_push(),
                        body => $big);
    is($r->{status}, 401, 'anonymous 2 MiB push: 401, not 413');
    like(PlayarrTest::header($r, 'WWW-Authenticate') // '',
         qr/^Bearer realm="playarr-metrics"$/, 'anonymous 2 MiB: challenge');

    $r = $t->request('POST', '/push', headers => json_push('0' x 64),
                     body => $big);
    is($r->{status}, 401, 'wrong token, 2 MiB push: 401');

    $r = $t->request('POST', '/push',
                     headers => [ @{ json_push() },
                                  'Transfer-Encoding' => 'chunked' ],
                     body => sprintf("%x\r\n%s\r\n0\r\n\r\n",
                                     length $big, $big));
    is($r->{status}, 401, 'anonymous chunked 2 MiB push: 401');

    $r = $t->request('POST', '/push', headers => json_push(), body => $mid);
    is($r->{status}, 401, 'anonymous 900 KiB push: 401');

    is($too_large->('after the anonymous pushes'), $before,
       'anonymous pushes: too_large not counted');
    unlike($t->log_since($mark), qr/buffered to a temporary file/,
           'anonymous pushes: no body buffered to a temporary file');
    unlike($t->log_since($mark), qr/larger than 1 MiB/,
           'anonymous pushes: no "larger than 1 MiB" warning');

    # the answer comes while the client still holds back its body
    {
        my $c = $t->connect(timeout => 5);
        $c->write("POST /push HTTP/1.1\r\nHost: localhost\r\n"
                  . "Content-Type: application/json\r\n"
                  . "Content-Length: " . (512 * 1024) . "\r\n\r\n"
                  . (' ' x 1024));
        my $t0 = time;
        my $resp;
        my $deadline = $t0 + 3;

        until ($resp = PlayarrTest::parse_response($c->{buf}, 'POST')) {
            last unless $c->_fill($deadline);
        }

        is($resp ? $resp->{status} : 'no answer', 401,
           'anonymous push, body held back: 401 before the body is sent');
        ok(time - $t0 < 2, sprintf 'answered in %.0f ms', 1000 * (time - $t0));
        $c->close;
    }

    # no "100 Continue" invites the body of a refused request
    {
        my $c = $t->connect(timeout => 5);
        $c->write("POST /push HTTP/1.1\r\nHost: localhost\r\n"
                  . "Content-Type: application/json\r\n"
                  . "Expect: 100-continue\r\n"
                  . "Content-Length: " . (2 * $MiB) . "\r\n\r\n");
        my $deadline = time + 3;
        1 while $c->{buf} !~ /\r\n\r\n/ && $c->_fill($deadline);
        my ($line) = $c->{buf} =~ /\A([^\r\n]*)/;

        is($line, 'HTTP/1.1 401 Unauthorized',
           'anonymous push with Expect: 100-continue: 401 straight away');
        $c->close;
    }

    # a keep-alive connection goes on after a refused push with a body
    {
        my $c = $t->connect;
        my $r1 = $c->request('POST', '/push', headers => json_push(),
                             body => ' ' x 65536);
        my $r2 = $c->request('GET', '/metrics', headers => bearer($token));
        is($r1->{status}, 401, 'keep-alive: the refused push');
        is($r2->{status}, 200, 'keep-alive: the next request on the same '
                               . 'connection');
        $c->close;
    }

    # with the token, the limits are as before
    $r = $t->request('POST', '/push', headers => json_push($token),
                     body => $big);
    is($r->{status}, 413, 'authenticated 2 MiB push: 413');
    is($too_large->('after the authenticated push'), $before + 1,
       'authenticated 2 MiB push: too_large counted');

    $r = $t->request('POST', '/push', headers => json_push($token),
                     body => $mid);
    is($r->{status}, 204, 'authenticated 900 KiB push: applied');

    my $m = $t->metrics(token => $token, name => 'final');
    is(PlayarrTest::sample($m, 'playarr_guard_probe_total', { via => 'anon' }),
       1, 'only the authenticated push applied');

    $t->stop;
}


# === 3. concurrent regenerations =========================================

{
    my $N = 20;
    my $ROUNDS = 20;

    my $t = PlayarrTest->new(http => <<'EOF');
    playarr_metrics_zone playarr:1m;
    playarr_metrics_token_file %%DIR%%/tok/metrics.token;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        server_name localhost;
        add_header X-Worker-Pid $pid always;

        location = /metrics { playarr_metrics_export; }
        location = /regenerate {
            playarr_metrics_token_admin;
            playarr_metrics_auth off;
            allow 127.0.0.1;
            deny all;
        }
    }
EOF

    token_dir($t);
    $t->start;

    my $file = $t->path('tok/metrics.token');
    my (%pids, $late, $last_ok, $count_ok, $distinct_ok, $rounds_ok);

    # One process sends the N requests at once, then loops: it reads the
    # answers that have arrived, then the file.  Under the lock, a token
    # is sent before the next one is renamed into place: when the file
    # shows B, every token answered before B was written is already in
    # its socket, and is read by the next iteration.  A token seen in the
    # file before B and read three iterations or more after B appeared
    # (one of margin) was sent when it was dead.
    for my $round (1 .. $ROUNDS) {
        my @c = map { $t->connect } 1 .. $N;
        my %conn = map { ($c[$_]{sock} => $c[$_]) } 0 .. $#c;
        my $sel = IO::Select->new(map { $_->{sock} } @c);
        my (%recv, %seen, @order, @got);
        my ($it, $prev) = (0, '');
        my $deadline = time + 20;

        $_->write("POST /regenerate HTTP/1.1\r\nHost: localhost\r\n"
                  . "Content-Length: 0\r\n\r\n") for @c;

        while ($sel->count && time < $deadline) {
            $it++;

            for my $s ($sel->can_read(0)) {
                my $c = $conn{$s};
                my $more = $c->_fill(time + 1);
                my $r = PlayarrTest::parse_response($c->{buf}, 'POST');

                next unless $r || !$more;
                $sel->remove($s);
                next unless $r;

                push @got, $r;
                $pids{ PlayarrTest::header($r, 'X-Worker-Pid') // '?' }++;

                my ($tok) = ($r->{body} // '') =~ /"value":"([0-9a-f]{64})"/;
                $recv{$tok} = $it if $r->{status} == 200 && $tok;
            }

            if (open my $fh, '<', $file) {
                local $/;
                my $x = <$fh> // '';
                close $fh;
                $x =~ s/\s+//g;

                if ($x ne $prev && length $x == 64) {
                    $seen{$x} //= $it;
                    push @order, $x;
                    $prev = $x;
                }
            }
        }

        $_->close for @c;

        my $ok200 = grep { $_->{status} == 200 } @got;
        $count_ok++ if $ok200 == $N;
        $distinct_ok++ if keys %recv == $ok200;

        # the file's token came with the last answers read
        my $final = $t->read_token('tok/metrics.token');
        my $max = 0;
        $max < $_ and $max = $_ for values %recv;
        $last_ok++ if ($recv{$final} // -1) == $max;

        for my $i (0 .. $#order) {
            my $A = $order[$i];
            next unless exists $recv{$A};

            for my $B (@order[$i + 1 .. $#order]) {
                if ($recv{$A} >= $seen{$B} + 3) {
                    $late++;
                    diag("round $round: a token answered "
                         . ($recv{$A} - $seen{$B})
                         . " iterations after the next one was in the file");
                    last;
                }
            }
        }

        # the final token works in every worker, the others in none
        my ($resp, undef, $all) = $t->hit_all_workers(sub {
            $t->get('/metrics', headers => bearer($final));
        });
        my @dead = grep { $_ ne $final } keys %recv;
        my $dead = $t->get('/metrics', headers => bearer($dead[0] // 'x'));
        $rounds_ok++ if $all && !grep({ $_->{status} != 200 } @$resp)
                        && $dead->{status} == 401;
    }

    ok(keys %pids >= 2, 'concurrent regenerations: both workers answered ('
                        . join(' ', map { "$_: $pids{$_}" } sort keys %pids)
                        . ')');
    is($count_ok // 0, $ROUNDS, "every round: $N answers 200");
    is($distinct_ok // 0, $ROUNDS, "every round: $N distinct tokens");
    is($last_ok // 0, $ROUNDS,
       'every round: the file holds the token answered last');
    is($late // 0, 0, 'no token was answered after a later one was in '
                      . 'the file');
    is($rounds_ok // 0, $ROUNDS,
       'every round: the file\'s token works in every worker, another not');

    $t->stop;
}


done_testing;
