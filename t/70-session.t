#!/usr/bin/perl

# Playarr's session and route users (docs/app-integration.md): the access_token
# cookie verified with the JWT secret (HS256 only, exp and nbf, base64url and
# JSON strictly), $playarr_metrics_jwt_user and _role, the ":username" of the
# matched template or the username query argument, the default user (session,
# else route, else anonymous) and Playarr's 401 rule; and what nginx -t says of
# a bad secret file or cookie name.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use MIME::Base64 qw(encode_base64url);
use POSIX ();
use Test::More;
use PlayarrTest;

PlayarrTest::need_module();

my $REQS = 'playarr_http_requests_total';
my $DUR = 'playarr_http_request_duration_seconds';
my $AUTH = 'playarr_authentication_failures_total';
my $SECRET = 'playarr-secret-Xq7';

# a session signed with the secret; %o: see PlayarrTest::session_jwt
sub jwt {
    my ($payload, %o) = @_;
    return PlayarrTest::session_jwt($SECRET, $payload, %o);
}

my $now = time;
my $later = $now + 3600;

my $t = PlayarrTest->new(http => <<'EOF');
    playarr_metrics_zone playarr:2m;
    playarr_metrics_jwt_secret_file %%DIR%%/jwt.secret;

    playarr_metrics_route /api/profile;
    playarr_metrics_route /api/users/:username;
    playarr_metrics_route /movie/:username/:password/:streamId;
    playarr_metrics_route /player_api.php;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        add_header X-Jwt-User "[$playarr_metrics_jwt_user]" always;
        add_header X-Jwt-Role "[$playarr_metrics_jwt_role]" always;
        add_header X-Route-User "[$playarr_metrics_route_username]" always;

        location / { return 200 "ok\n"; }
        location /movie/denied/ { return 401 "no\n"; }
        location = /api/profile/fixed {
            playarr_metrics_username fixed;
            return 401 "no\n";
        }

        location = /metrics {
            playarr_metrics_export;
            playarr_metrics_auth off;
        }
    }

    server {
        listen 127.0.0.1:%%PORT2%%;
        server_name localhost;
        playarr_metrics_jwt_cookie sess;

        add_header X-Jwt-User "[$playarr_metrics_jwt_user]" always;

        location / { return 200 "ok\n"; }
    }
EOF

# as Playarr's .env has it: a final newline, removed
$t->write_file('jwt.secret', "$SECRET\r\n", 0600);

$t->start;

sub req {
    my ($path, $cookie, $port) = @_;
    my @h = defined $cookie ? (Cookie => $cookie) : ();
    return $t->get($path, headers => \@h, port => $port);
}

sub user_of {
    my ($cookie, $port) = @_;
    my $r = req('/api/profile', defined $cookie ? "access_token=$cookie"
                                                : undef, $port);
    my ($u) = ($r->{headers}{'x-jwt-user'} // '') =~ /^\[(.*)\]$/;
    return $u;
}

my $alice = jwt({ sub => 'alice', role => 'admin', exp => $later,
                  iat => $now });
my $bob = jwt({ sub => 'bob', role => 'user', exp => $later });

# --- verification -------------------------------------------------------

{
    my $r = req('/api/profile', "theme=dark; access_token=$alice; x=1");
    is($r->{status}, 200, 'a request with a session answered 200');
    is($r->{headers}{'x-jwt-user'}, '[alice]', 'jwt_user from the cookie');
    is($r->{headers}{'x-jwt-role'}, '[admin]', 'jwt_role from the cookie');
    is(user_of($bob), 'bob', 'another session, another user');
    is(user_of(undef), '', 'no cookie: empty');
    is(user_of(''), '', 'an empty cookie: empty');

    # longer than the cache keeps: verified at every request
    my $long = jwt({ sub => 'lena', exp => $later, pad => 'p' x 600 });
    ok(length $long > 800, 'a session of ' . length($long) . ' bytes');
    is(user_of($long), 'lena', 'a long session');
    is(user_of($long), 'lena', 'a long session again');
}

my @bad = (
    [ 'expired', jwt({ sub => 'eve', exp => $now - 10 }) ],
    [ 'exp now', jwt({ sub => 'eve', exp => $now - 1 }) ],
    [ 'not yet valid (nbf)', jwt({ sub => 'eve', nbf => $now + 600 }) ],
    [ 'another secret', jwt({ sub => 'eve' }, key => 'guess') ],
    [ 'alg none, unsigned',
      jwt({ sub => 'eve' }, header => { alg => 'none' }, sig => '') ],
    [ 'alg none, signed',
      jwt({ sub => 'eve' }, header => { alg => 'none' }) ],
    [ 'alg HS512', jwt({ sub => 'eve' }, header => { alg => 'HS512' },
                       hs512 => 1) ],
    [ 'alg hs256 (case)', jwt({ sub => 'eve' }, header => { alg => 'hs256' }) ],
    [ 'no alg', jwt({ sub => 'eve' }, header => { typ => 'JWT' }) ],
    [ 'header not an object', jwt({ sub => 'eve' }, header_text => '"HS256"') ],
    [ 'header duplicate alg',
      jwt({ sub => 'eve' },
          header_text => '{"alg":"none","alg":"HS256"}') ],
    [ 'payload not JSON', jwt('sub=eve') ],
    [ 'payload an array', jwt('["eve"]') ],
    [ 'payload duplicate sub', jwt('{"sub":"x","sub":"eve"}') ],
    [ 'no sub', jwt({ role => 'admin' }) ],
    [ 'sub a number', jwt({ sub => 42 }) ],
    [ 'sub null', jwt({ sub => undef }) ],
    [ 'sub an object', jwt({ sub => { name => 'eve' } }) ],
    [ 'sub empty', jwt({ sub => '' }) ],
    [ 'sub of 129 bytes', jwt({ sub => 'e' x 129 }) ],
    [ 'sub with a newline', jwt({ sub => "eve\n[emerg] forged" }) ],
    [ 'role a number', jwt({ sub => 'eve', role => 1 }) ],
    [ 'exp a string', jwt({ sub => 'eve', exp => "$later" }) ],
    [ 'nbf a string', jwt({ sub => 'eve', nbf => '0' }) ],
    [ 'payload tampered',
      do { my ($h, undef, $s) = split /\./, $alice;
           join '.', $h, encode_base64url('{"sub":"eve","role":"admin"}'),
                $s } ],
    [ 'signature cut', substr($alice, 0, -2) ],
    [ 'signature with padding', "$alice=" ],
    [ 'a fourth part', "$alice.x" ],
    [ 'two parts', join('.', (split /\./, $alice)[0, 1]) ],
    [ 'standard base64 characters',
      do { my $x = $alice; $x =~ tr/-_/+\//; $x =~ /[+\/]/ ? $x : "+$x" } ],
    [ 'spare bits set in the signature',
      do { my ($h, $p, $s) = split /\./, $alice;
           my $c = substr($s, -1);
           my $a = 'AEIMQUYcgkosw048';           # the values with 00 bits
           my $i = index($a, $c);
           my $all = join '', 'A' .. 'Z', 'a' .. 'z', '0' .. '9', '-', '_';
           my $v = index($all, $c) | 1;
           "$h.$p." . substr($s, 0, -1) . substr($all, $v, 1) } ],
    [ 'not a JWT at all', 'hello' ],
    [ 'a cookie of 5000 bytes', 'a' x 5000 ],
);

for my $b (@bad) {
    my ($name, $cookie) = @$b;
    my $r = req('/api/profile', "access_token=$cookie");

    is($r->{status}, 200, "$name: the request is served");
    is($r->{headers}{'x-jwt-user'}, '[]', "$name: no user");
    is($r->{headers}{'x-jwt-role'}, '[]', "$name: no role");
}

{
    my $r = req('/api/profile', "access_token=$alice", $t->port(2));
    is($r->{headers}{'x-jwt-user'}, '[]',
       'playarr_metrics_jwt_cookie sess: access_token is not read');
    $r = req('/api/profile', "sess=$alice", $t->port(2));
    is($r->{headers}{'x-jwt-user'}, '[alice]',
       'playarr_metrics_jwt_cookie sess: sess is read');
}

# a known session is looked up again, not trusted past its exp
{
    my $soon = jwt({ sub => 'carol', exp => time + 2 });
    is(user_of($soon), 'carol', 'a session valid for 2 s');
    is(user_of($soon), 'carol', 'the same session again (cached)');
    sleep 3;
    is(user_of($soon), '', 'the same session once expired');
}

# --- route users ------------------------------------------------------------

{
    my $r = req('/movie/dave/pw-S3cret/12');
    is($r->{headers}{'x-route-user'}, '[dave]', ':username of the template');
    $r = req('/player_api.php?password=pw-S3cret&username=fr%C3%A9d+x');
    is($r->{headers}{'x-route-user'}, "[fr\xc3\xa9d x]",
       'the username query argument, decoded');
    $r = req('/api/profile');
    is($r->{headers}{'x-route-user'}, '[]', 'no route user');

    # "+" a space, then %XX decoded, as Express's qs does
    $r = req('/player_api.php?username=a%2Bb+c');
    is($r->{headers}{'x-route-user'}, '[a+b c]', '"+" before %2B');

    # off the app's routes, the query names no one
    $r = req('/static/app.js?username=victim');
    is($r->{headers}{'x-route-user'}, '[]',
       'the username argument of a path that is no route: ignored');
}

# the cookie as Express's cookie parser reads it: the first of a name,
# blanks around the "=" trimmed
{
    my $r = req('/api/profile', "access_token =$bob; access_token=$alice");
    is($r->{headers}{'x-jwt-user'}, '[bob]',
       'a blank before "=": the same cookie, the first one counts');
    $r = req('/api/profile', "Access_Token=$bob; access_token=$alice");
    is($r->{headers}{'x-jwt-user'}, '[alice]', 'names are case-sensitive');
    $r = req('/api/profile', "access_token=\"$alice\"");
    is($r->{headers}{'x-jwt-user'}, '[alice]', 'a quoted value');
    $r = req('/api/profile', "xaccess_token=$bob;access_token = $alice");
    is($r->{headers}{'x-jwt-user'}, '[alice]',
       'another name that ends like it, then blanks around "="');
}

# --- the default user and the 401 rule ---------------------------------------

{
    my $before = PlayarrTest::parse_metrics($t->metrics);

    req('/api/profile', "access_token=$alice") for 1 .. 3;
    req('/api/profile', 'access_token='
                        . jwt({ sub => 'lena', exp => $later,
                                pad => 'p' x 600 })) for 1 .. 2;
    req('/movie/dave/pw-S3cret/12', "access_token=$bob");
    req('/movie/erin/pw-S3cret/12');
    req('/player_api.php?username=frank&password=pw-S3cret');
    req('/static/app.js?username=mallory');
    req('/movie/denied/pw-S3cret/1');
    req('/api/users/gina', 'access_token=' . jwt({ sub => 'x', exp => 1 }));
    req('/api/profile/fixed', "access_token=$alice");

    my $body = $t->metrics;
    my $m = PlayarrTest::parse_metrics($body);

    my $d = sub {
        my ($name, $l) = @_;
        my $k = PlayarrTest::series_key($name, $l);
        return ($m->{$k} // 0) - ($before->{$k} // 0);
    };

    is($d->($REQS, { endpoint => '/api/profile', status_code => 200,
                     username => 'alice' }), 3, 'the session user');
    is($d->($REQS, { endpoint => '/api/profile', status_code => 200,
                     username => 'lena' }), 2, 'the user of a long session');
    is($d->($REQS, { endpoint => '/movie/:username/:password/:streamId',
                     status_code => 200, username => 'bob' }), 1,
       'the session user wins over the route user');
    is($d->($REQS, { endpoint => '/movie/:username/:password/:streamId',
                     status_code => 200, username => 'erin' }), 1,
       'the route user without a session');
    is($d->($REQS, { endpoint => '/player_api.php', status_code => 200,
                     username => 'frank' }), 1, 'the query user');
    is($d->($REQS, { endpoint => '/api/users/:username', status_code => 200,
                     username => 'gina' }), 1,
       'an expired session: the route user');
    is($d->($REQS, { endpoint => '/movie/:username/:password/:streamId',
                     status_code => 401, username => 'anonymous' }), 1,
       '401: the request is anonymous');
    is($d->("${DUR}_count", { endpoint => '/movie/:username/:password/'
                                          . ':streamId',
                              username => 'anonymous' }), 1,
       '401: its duration is anonymous');
    is($d->($AUTH, { endpoint => '/movie/:username/:password/:streamId',
                     username => 'denied' }), 1,
       '401: the authentication failure is the claimed user');
    is($d->($REQS, { endpoint => 'unknown_endpoint', status_code => 401,
                     username => 'fixed' }), 1,
       'playarr_metrics_username still overrides, 401 included');
    is($d->($AUTH, { endpoint => 'unknown_endpoint', username => 'fixed' }),
       1, 'playarr_metrics_username: its authentication failure');
    unlike($body, qr/pw-S3cret/, 'no password reaches a label');
    unlike($body, qr/mallory/, 'a username argument off the routes: no label');
    unlike($body, qr/username="eve/, 'no unverified session user');
}

$t->stop;

# --- nginx -t ------------------------------------------------------------------

my @conf = (
    [ 'missing secret file', undef,
      qr/open\(\) "[^"]*jwt\.secret" failed \(2: No such file/ ],
    [ 'empty secret file', "\n",
      qr/playarr_metrics_jwt_secret_file "[^"]*jwt\.secret" is empty/ ],
    [ 'secret file a symbolic link', \'link',
      qr/playarr_metrics_jwt_secret_file "[^"]*jwt\.secret" is a symbolic/ ],
    [ 'secret file a FIFO', \'fifo',
      qr/playarr_metrics_jwt_secret_file "[^"]*jwt\.secret" is not a regular/ ],
    [ 'secret file too large', 'x' x 65537,
      qr/playarr_metrics_jwt_secret_file "[^"]*jwt\.secret" is larger than/ ],
);

for my $c (@conf) {
    my ($name, $content, $msg) = @$c;
    my $u = PlayarrTest->new(http => <<'EOF');
    playarr_metrics_zone playarr:1m;
    playarr_metrics_jwt_secret_file %%DIR%%/jwt.secret;
EOF
    my $f = $u->path('jwt.secret');

    if (ref $content && $$content eq 'link') {
        $u->write_file('real.secret', $SECRET, 0600);
        symlink $u->path('real.secret'), $f or die "symlink: $!";
    } elsif (ref $content) {
        POSIX::mkfifo($f, 0600) or die "mkfifo: $!";
    } elsif (defined $content) {
        $u->write_file('jwt.secret', $content, 0600);
    }

    my $start = time;
    my ($rc, $out) = $u->test_config;
    isnt($rc, 0, "nginx -t: $name fails");
    like($out, qr/\[emerg\].*$msg.* in \S+nginx\.conf:(\d+)/,
         "nginx -t: $name, said with file and line") or diag($out);
    my ($line) = $out =~ /nginx\.conf:(\d+)/;
    is($line, $u->conf_line(qr/playarr_metrics_jwt_secret_file/),
       "nginx -t: $name, the directive's line");
    ok(time - $start < 10, "nginx -t: $name, at once");
}

{
    my $u = PlayarrTest->new(http => <<'EOF');
    playarr_metrics_zone playarr:1m;
    playarr_metrics_jwt_cookie "bad;name";
EOF
    my ($rc, $out) = $u->test_config;
    isnt($rc, 0, 'nginx -t: a cookie name with ";" fails');
    like($out, qr/\[emerg\].*invalid cookie name "bad;name" in \S+:\d+/,
         'nginx -t: invalid cookie name, with file and line') or diag($out);
}

{
    my $u = PlayarrTest->new(http => <<'EOF');
    playarr_metrics_jwt_secret_file %%DIR%%/jwt.secret;
EOF
    $u->write_file('jwt.secret', $SECRET, 0600);
    my ($rc, $out) = $u->test_config;
    isnt($rc, 0, 'nginx -t: a secret file without a zone fails');
    like($out, qr/\[emerg\].*"playarr_metrics_jwt_secret_file" directive needs/,
         'nginx -t: the secret file needs a zone') or diag($out);
}

done_testing;
