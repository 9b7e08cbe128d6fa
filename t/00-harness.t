#!/usr/bin/perl

# The test harness itself (t/lib/PlayarrTest.pm and t/lib/PlayarrTest/),
# against plain nginx: no module loaded, so this runs before the module
# builds.

use strict;
use warnings;

use FindBin;
use POSIX ();
use lib "$FindBin::Bin/lib";

use Test::More;
use PlayarrTest qw(delta);
use PlayarrTest::Blocks qw(run_blocks);

my $METRICS = '# HELP demo_requests_total Requests.\n'
    . '# TYPE demo_requests_total counter\n'
    . 'demo_requests_total{path=\"/a\",code=\"200\"} 3\n'
    . 'demo_requests_total{path=\"q\\\\\"x\",code=\"500\"} 1\n'
    . '# HELP demo_temp Temperature.\n'
    . '# TYPE demo_temp gauge\n'
    . 'demo_temp 21.5\n';

my $t = PlayarrTest->new(module => 0, http => <<'EOF');
    default_type text/plain;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        server_name localhost;

        add_header X-Worker-Pid $pid always;

        location = /hello { return 200 "hello\n"; }
        location = /metrics { return 200 "@@METRICS@@"; }
        location = /bad-metrics { return 200 "demo{a=\"b} 1\n"; }
        location = /lint-metrics {
            return 200 "# HELP demo counter\n# TYPE demo counter\ndemo 1\n";
        }
        location = /cookie {
            add_header Set-Cookie a=1;
            add_header Set-Cookie b=2;
            return 204;
        }
        location /list/ { alias %%DIR%%/list/; autoindex on; }
        location = /echo-auth { return 200 "[$http_authorization]"; }
        location = /up { proxy_pass http://127.0.0.1:%%PORT2%%/from-up; }
    }

    server {
        listen 127.0.0.1:%%PORT2%%;
        location / { return 200 "upstream saw $uri"; }
    }
EOF

# the metrics body goes in through configure (placeholders are not
# touched by it)
{
    my $http = $t->{opt}{http};
    $http =~ s/\@\@METRICS\@\@/$METRICS/;
    $t->configure(http => $http);
}

mkdir $t->path('list') or die;
$t->write_file("list/file$_.txt", "x") for 1 .. 40;

like($t->conf_text, qr/listen 127\.0\.0\.1:\d+ reuseport;/, 'port filled in');
unlike($t->conf_text, qr/%%/, 'no placeholder left');
isnt($t->port(1), $t->port(2), 'two distinct ports');

my ($rc, $out) = $t->test_config;
is($rc, 0, 'nginx -t on a good config') or diag($out);

$t->start;
ok($t->running, 'running');
is(scalar $t->worker_pids, 2, 'two workers');
ok(-e $t->path('nginx.pid'), 'pid file in the directory');
ok(-d $t->path('client_body_temp'), 'temp paths in the directory');

# --- requests ---

my @cases = (
    { name => 'GET', method => 'GET', path => '/hello',
      status => 200, body => "hello\n" },
    { name => 'HEAD has no body', method => 'HEAD', path => '/hello',
      status => 200, body => '' },
    { name => '404', method => 'GET', path => '/nope', status => 404 },
    { name => 'proxy to %%PORT2%%', method => 'GET', path => '/up',
      status => 200, body => 'upstream saw /from-up' },
    { name => 'header sent', method => 'GET', path => '/echo-auth',
      headers => { Authorization => 'Bearer abc' },
      status => 200, body => '[Bearer abc]' },
);

for my $c (@cases) {
    my $r = $t->request($c->{method}, $c->{path},
                        headers => $c->{headers} || {});
    is($r->{status}, $c->{status}, "$c->{name}: status");
    is($r->{body}, $c->{body}, "$c->{name}: body") if exists $c->{body};
    is($r->{extra}, '', "$c->{name}: nothing after the response");
}

my $h = $t->head('/hello');
is(PlayarrTest::header($h, 'Content-Length'), 6, 'HEAD keeps Content-Length');

my $r = $t->get('/cookie');
is($r->{status}, 204, 'status 204');
is_deeply($r->{headers}{'set-cookie'}, ['a=1', 'b=2'],
          'repeated header as an array');
is($r->{headers}{"x-worker-pid"}, undef, "add_header in a location overrides the server level");
$r = $t->get("/hello");
like($r->{headers}{"x-worker-pid"}, qr/^\d+$/, "single header as a scalar");

$r = $t->get('/list/');
is(PlayarrTest::header($r, 'Transfer-Encoding'), 'chunked', 'chunked answer');
like($r->{body}, qr/file40\.txt/, 'chunked body decoded');
unlike($r->{body}, qr/^[0-9a-f]+\r$/m, 'no chunk sizes left in the body');

# duplicated Authorization: nginx core refuses it
my $raw = $t->raw("GET /echo-auth HTTP/1.1\r\nHost: localhost\r\n"
                  . "Authorization: Bearer a\r\nAuthorization: Bearer b\r\n"
                  . "Connection: close\r\n\r\n");
my $p = PlayarrTest::parse_response($raw, 'GET');
is($p->{status}, 400, 'raw: duplicate Authorization is a 400');

$r = $t->request('GET', '/echo-auth',
                 headers => [Authorization => 'Bearer a',
                             Authorization => 'Bearer b']);
is($r->{status}, 400, 'request: repeated header via pairs');

$r = $t->get('/echo-auth', headers => { 'X-Big' => 'x' x 16384 });
is($r->{status}, 400, '16 KiB header: 400 from nginx');

# keep-alive
my $c = $t->connect;
my @st;
for my $i (1 .. 10) {
    my $m = $i % 3 ? 'GET' : 'HEAD';
    my $kr = $c->request($m, '/hello');
    push @st, "$kr->{status}:" . length($kr->{body});
}
$c->close;
is_deeply(\@st, [map { $_ % 3 ? '200:6' : '200:0' } 1 .. 10],
          'keep-alive: 10 answers on one connection');

# workers
my ($resp, $seen, $all) = $t->hit_all_workers(sub { $t->get('/hello') });
ok($all, 'hit_all_workers reached every worker in ' . @$resp . ' requests');
is(scalar(grep { $_->{status} != 200 } @$resp), 0, 'all of them 200');

# --- metrics helpers ---

my $body = $t->metrics(name => 'hand-written metrics');
my $m = PlayarrTest::parse_metrics($body);
is(PlayarrTest::sample($m, 'demo_requests_total',
                       { path => '/a', code => '200' }), 3, 'sample by labels');
is(PlayarrTest::sample($body, 'demo_requests_total',
                       { path => 'q"x', code => '500' }), 1,
   'escaped label value');
is(PlayarrTest::sample($m, 'demo_temp'), '21.5', 'sample without labels');
is(PlayarrTest::sample($m, 'demo_temp', { a => 1 }), undef, 'absent sample');
is(scalar(PlayarrTest::samples($m, 'demo_requests_total')), 2,
   'samples of a family');
is(PlayarrTest::metric_types($body)->{demo_temp}, 'gauge', 'types');
is(PlayarrTest::series_key('x', { b => 2, a => "1\n" }), 'x{a="1\n",b="2"}',
   'series key sorted and escaped');
is_deeply([PlayarrTest::duplicate_series("a 1\na 2\nb{x=\"1\"} 1\n")],
          ['a'], 'duplicate series found');

my ($ok, $pout) = $t->promtool_check($t->get('/bad-metrics')->{body});
ok(!$ok, 'promtool_check: a parse error fails') or diag($pout);
my $lint;
($ok, $pout, $lint) = $t->promtool_check($t->get('/lint-metrics')->{body});
ok(@$lint >= 1, "promtool_check: lint warning collected: @$lint");
is($ok, $ENV{PLAYARR_PROMTOOL_STRICT} ? 0 : 1,
   'promtool_check: lint alone is not a failure (unless strict)');
($ok) = $t->python_parse_check($t->get('/bad-metrics')->{body});
ok(!defined $ok || !$ok, 'python_parse_check: a parse error fails');

# --- reload ---

my @before = $t->worker_pids;
my $http = $t->{opt}{http};
$http =~ s{(location = /hello)}{location = /new { return 200 "new"; }\n        $1};
$t->configure(http => $http);
my @after = $t->reload;
is(scalar @after, 2, 'reload: two workers');
is(scalar(grep { my $o = $_; grep { $_ == $o } @after } @before), 0,
   'reload: all workers are new');
is($t->get('/new')->{body}, 'new', 'reload: new config active');

@after = $t->reload(signal => 1);
is(scalar @after, 2, 'reload by SIGHUP');

# --- crash detection ---

my @killed = $t->kill_workers(count => 1);
is(scalar @killed, 1, 'one worker killed');
is(scalar $t->worker_pids, 2, 'respawned');
ok($t->wait_for_log(qr/$killed[0] exited on signal 9/), 'crash logged');
is_deeply([$t->bad_log_lines], [], 'the expected crash is allowed');
is($t->get('/hello')->{status}, 200, 'still serving');

# a bad line is detected
{
    open my $fh, '>>', $t->path('error.log') or die;
    print {$fh} "2024/01/01 00:00:00 [crit] 1#1: harness self-test line\n";
    close $fh;
}
is(scalar($t->bad_log_lines), 1, 'a [crit] line is detected');
$t->allow_log(qr/harness self-test line/);

# --- nginx -t with an error ---

my $bad = PlayarrTest->new(module => 0, http => <<'EOF');
    server {
        listen 127.0.0.1:%%PORT%%;
        location / { return 200; }
        no_such_directive on;
    }
EOF
my $line = $bad->conf_line(qr/no_such_directive/);
($rc, $out) = $bad->test_config;
isnt($rc, 0, 'nginx -t fails');
like($out, qr/\[emerg\] unknown directive "no_such_directive" in \Q${\ $bad->conf_file }\E:$line\b/,
     'message names file and line');
like($bad->read_file('nginx-t.log'), qr/\[emerg\]/, 'nginx -t has its own log');
ok(!-s $bad->path('error.log'), 'main error log untouched');
eval { $bad->start };
like($@, qr/nginx failed to start.*unknown directive/s, 'start dies with the log');

# --- the block runner ---

{
    my @b = PlayarrTest::Blocks::parse(<<'EOF', 'self-test');
=== one
--- http
a;    # <-
b;

--- file x.txt 0640
line one
line two
--- file y eval
"\x01\n"
--- mkdir d1 d2
--- error_code: 401
--- emerg
msg %%V%%

=== two
--- request
GET /
EOF

    is(scalar @b, 2, 'blocks: two');
    is($b[0]{sec}{http}{text}, "a;    # <-\nb;",
       'blocks: a section, without its last newline and blank lines');
    is($b[0]{sec}{error_code}{text}, '401', 'blocks: "--- name: value"');
    my @f = grep { $_->{file} } @{ $b[0]{order} };
    is_deeply([ map { [ @{ $_->{file} }, $_->{text}, $_->{eval} ] } @f ],
              [ [ 'x.txt', 0640, "line one\nline two", 0 ],
                [ 'y', 0600, '"\x01\n"', 1 ] ],
              'blocks: files, their modes (0600 by default), eval');
    is(PlayarrTest::Blocks::_value($f[1], {}), "\x01\n", 'blocks: eval');
    is(PlayarrTest::Blocks::_value($b[0]{sec}{emerg}, { V => 'v' }),
       'msg v', 'blocks: %%NAME%% from vars');
    is_deeply($b[0]{mkdir}, ['d1', 'd2'], 'blocks: mkdir');
    ok(!eval { PlayarrTest::Blocks::parse("--- http\nx\n", 's'); 1 }
       && $@ =~ /before the first block/, 'blocks: a section needs a block');
    ok(!eval { run_blocks(blocks => [ $b[1] ]); 1 } && $@ =~ /no nginx/,
       'blocks: a request needs an nginx');

    # against the plain nginx above, right expectations, then wrong ones
    my $text = <<'EOF';
=== cookies
--- request
GET /cookie
--- error_code: 204
--- response_headers
Set-Cookie: a=1
Set-Cookie: b=2
!X-Nothing

=== echo
--- request
GET /echo-auth
--- more_headers
Authorization: %%WHO%%
--- response_body
[%%WHO%%]
--- response_body_like
^\[s
EOF

    run_blocks(t => $t, blocks => [ PlayarrTest::Blocks::parse($text, 's') ],
               vars => { WHO => 'self' });

    (my $wrong = $text) =~ s/204/200/;
    $wrong =~ s/b=2/b=3/;
    $wrong =~ s/X-Nothing/Set-Cookie/;
    $wrong =~ s/^\[%%WHO%%\]$/[%%WHO%%]x/m;
    $wrong =~ s/\^\\\[s/^\\[x/;

    # failures on purpose, in a child with a Test::Builder of its own
    my $pid = open my $from, '-|';
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        my $tb = Test::More->builder;
        $tb->reset;
        $tb->output(\*STDOUT);
        $tb->failure_output(\*STDOUT);
        run_blocks(t => $t, blocks => [ PlayarrTest::Blocks::parse($wrong,
                                                                   's') ],
                   vars => { WHO => 'self' }, never => ['self']);
        POSIX::_exit(0);
    }

    my @out = <$from>;
    close $from;
    my @failed = map { /^not ok \d+ - (.*)$/ ? $1 : () } @out;

    is_deeply(\@failed, [ 'cookies: status 200',
                          'cookies: set-cookie: a=1 | b=3',
                          'cookies: no Set-Cookie', 'echo: body',
                          'echo: body like /^\\[x/',
                          'echo: the answer holds no secret' ],
              'blocks: each wrong expectation fails (status, header, absent'
              . ' header, body, body like, a secret in the answer)')
        or diag(@out);
}

# a block with a configuration of its own: its own nginx, started for it
# and stopped after; an emerg block
run_blocks(new => { module => 0 },
           blocks => [ PlayarrTest::Blocks::parse(<<'EOF', 'self-test') ]);
=== own nginx
--- http
server {
    listen 127.0.0.1:%%PORT%%;
    location / { return 200 "own $uri"; }
}
--- request
GET /x
--- response_body
own /x

=== own nginx, nginx -t
--- http
server {
    listen 127.0.0.1:%%PORT%%;
    no_such_directive on;    # <-
}
--- emerg
unknown directive "no_such_directive"
EOF

# --- delta, upstreams, children ---

is_deeply(delta(qq{a 1\nb{x="1"} 2\nb{x="2"} 5\n},
                qq{a 1\nb{x="1"} 4\nb{x="2"} 5\nb{x="3"} 1\n}, 'b'),
          { 'b{x="1"}' => 2, 'b{x="3"}' => 1 }, 'delta: the changed series');

{
    my $port = $t->port(3);
    my $up = PlayarrTest::upstream($port, sub {
        my ($c) = @_;
        syswrite $c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                     . "Connection: close\r\n\r\nup";
    });
    my $r;
    PlayarrTest::wait_until(sub {
        ($r = $t->get('/', port => $port))->{status} == 200 }, 5);
    is($r->{body}, 'up', 'upstream: answers');
    PlayarrTest::stop_upstream($up);
    ok(!kill(0, $up), 'upstream: stopped');

    my $k = PlayarrTest::spawn(sub { Time::HiRes::sleep(0.5) });
    my $bad = PlayarrTest::spawn(sub {
        die "harness self-test: a child that fails on purpose\n" });
    is(scalar(PlayarrTest::kids_running($k)), 1, 'kids_running: running');
    PlayarrTest::wait_until(sub { !PlayarrTest::kids_running($k) }, 5);
    is(PlayarrTest::reap_kids($k, $bad), 1,
       'reap_kids: the one that died, after kids_running reaped the other');
}

$t->stop;
ok(!$t->running, 'stopped');
ok(!-e "/proc/$before[0]" || !PlayarrTest::_is_nginx_worker($before[0]),
   'workers gone');

done_testing;
