#!/usr/bin/perl

# The username label (docs/directives.md and docs/metrics.md): the first
# non-empty value of playarr_metrics_username, evaluated when the request
# is logged (an upstream response header hidden from the client, the
# $remote_user of auth_basic), else "anonymous"; 401 answers counted as
# authentication failures; any bytes a client sends become a label that
# promtool accepts: escaped, valid UTF-8 (U+FFFD for invalid bytes), cut
# at 128 bytes.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Encode ();
use MIME::Base64 qw(encode_base64);
use JSON::PP;
use Test::More;
use PlayarrTest qw(delta samples);

PlayarrTest::need_module();

my $REQS = 'playarr_http_requests_total';
my $DUR = 'playarr_http_request_duration_seconds';
my $AUTH = 'playarr_authentication_failures_total';
my $FFFD = "\xef\xbf\xbd";

my $t = PlayarrTest->new(http => <<'EOF');
    playarr_metrics_zone playarr:2m;
    playarr_metrics_token_file %%DIR%%/metrics.token;

    playarr_metrics_route /api/profile;
    playarr_metrics_route /api/stats;
    playarr_metrics_route /api/users;
    playarr_metrics_route /api/users/:username;
    playarr_metrics_route /api/titles/:title_key;
    playarr_metrics_route /api/jobs;
    playarr_metrics_route /api/jobs/:jobName/trigger;
    playarr_metrics_route /api/livetv/m3u;
    playarr_metrics_route /api/healthcheck;

    # Playarr's stand-in: names the user in X-Playarr-User; not recorded
    server {
        listen 127.0.0.1:%%PORT2%%;
        server_name localhost;
        playarr_metrics off;

        location / {
            add_header X-Playarr-User alice;
            return 200 "upstream";
        }
        location /api/stats {
            return 200 "no user";
        }
        location /api/users {
            return 200 "users";
        }
    }

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        playarr_metrics_username $http_x_srv;

        location = /scrape { playarr_metrics_export; }
        location = /scrape/json { playarr_metrics_export json; }

        location /api/profile {
            playarr_metrics_username $upstream_http_x_playarr_user
                                     $remote_user;
            proxy_hide_header X-Playarr-User;
            proxy_pass http://127.0.0.1:%%PORT2%%;
        }

        location /api/stats {
            playarr_metrics_username $upstream_http_x_playarr_user
                                     $remote_user;
            proxy_hide_header X-Playarr-User;
            proxy_pass http://127.0.0.1:%%PORT2%%;
        }

        location /api/users {
            auth_basic "Playarr";
            auth_basic_user_file %%DIR%%/htpasswd;
            playarr_metrics_username $remote_user;
            proxy_pass http://127.0.0.1:%%PORT2%%;
        }

        location /api/titles/ {
            playarr_metrics_username $http_x_user;
            return 200 "title";
        }

        location = /api/jobs {
            playarr_metrics_username $http_x_a $http_x_b;
            return 200 "jobs";
        }

        location = /api/livetv/m3u {
            playarr_metrics_username $http_x_a "guest";
            return 200 "m3u";
        }

        location /api/jobs/ {
            return 200 "inherits the server's username";
        }

        location = /api/healthcheck {
            playarr_metrics_username "line1\nline2";
            return 200 "ok";
        }
    }
EOF

my $HASH = crypt('s3cret', '$6$abcdefgh$');
$t->write_file('htpasswd', "bob:$HASH\nplain:{PLAIN}pl41n\n");

$t->start;
my $token = $t->read_token('metrics.token');
my %auth = (Authorization => "Bearer $token");

my $cl = PlayarrTest::Client->new($t, $t->port);

$t->scrape_setup(token => $token, path => '/scrape');

# one request; returns the response and what changed, as [labels,
# difference] lists: { req => [...], count => [...], auth => [...],
# body => after }
sub record {
    my ($method, $path, %opt) = @_;
    my $before = $t->quiet_series(client => $cl);
    my $r = $cl->req($method, $path, %opt);
    my $body = $t->quiet_scrape(client => $cl);
    my %fam = (req => $REQS, count => "${DUR}_count", auth => $AUTH);
    my %d = (body => $body);

    for my $k (keys %fam) {
        my $f = $fam{$k};
        $d{$k} = [ samples(delta($before, $body, $f), $f) ];
    }

    return ($r, \%d);
}

# checks that exactly one request was recorded, for $ep / $status, and
# returns its username (undef when not exactly one)
sub user_of {
    my ($name, $method, $path, $ep, $status, %opt) = @_;
    my ($r, $d) = record($method, $path, %opt);

    is($r->{status}, $status, "$name: answered $status")
        or diag($r->{error} // $r->{raw});
    is(scalar @{ $d->{req} }, 1, "$name: one requests_total series changed")
        or diag(explain($d->{req}));
    is(scalar @{ $d->{count} }, 1, "$name: one duration series changed")
        or diag(explain($d->{count}));

    return (undef, $r, $d) unless @{ $d->{req} } == 1;

    my ($l, $v) = @{ $d->{req}[0] };
    is($v, 1, "$name: counted once");
    is($l->{endpoint}, $ep, "$name: endpoint $ep");
    is($l->{status_code}, "$status", "$name: status_code $status");

    if (@{ $d->{count} } == 1) {
        is($d->{count}[0][0]{username}, $l->{username},
           "$name: same username in the histogram");
    }

    return ($l->{username}, $r, $d);
}

sub basic {
    my ($user, $pass) = @_;
    return (Authorization => 'Basic ' . encode_base64("$user:$pass", ''));
}

# --- from an upstream response header ----------------------------------------

{
    my ($u, $r) = user_of('upstream header', 'GET', '/api/profile',
                          '/api/profile', 200);
    is($u, 'alice', 'upstream header: username="alice"');
    is($r->{body}, 'upstream', 'upstream header: the upstream answered');
    ok(!defined PlayarrTest::header($r, 'X-Playarr-User'),
       'upstream header: X-Playarr-User does not reach the client');

    # the upstream's name wins over $remote_user
    ($u) = user_of('upstream header before $remote_user', 'GET',
                   '/api/profile', '/api/profile', 200,
                   headers => { basic('carol', 'x') });
    is($u, 'alice', 'the first non-empty value wins: alice, not carol');

    # no upstream header: $remote_user, then anonymous
    ($u) = user_of('no upstream header, Basic credentials', 'GET',
                   '/api/stats', '/api/stats', 200,
                   headers => { basic('carol', 'x') });
    is($u, 'carol', 'no upstream header: $remote_user "carol"');

    ($u) = user_of('no upstream header, no credentials', 'GET',
                   '/api/stats', '/api/stats', 200);
    is($u, 'anonymous', 'nothing set: "anonymous"');
}

# --- auth_basic and $remote_user ---------------------------------------------

{
    my ($u, $r, $d) = user_of('auth_basic, no credentials', 'GET',
                              '/api/users', '/api/users', 401);
    is($u, 'anonymous', 'auth_basic 401 without credentials: anonymous');
    like(PlayarrTest::header($r, 'WWW-Authenticate') // '', qr/^Basic/,
         'auth_basic challenge');
    is_deeply($d->{auth},
              [[{ endpoint => '/api/users', username => 'anonymous' }, 1]],
              'auth_basic 401: authentication_failures_total'
              . '{endpoint="/api/users",username="anonymous"} +1');

    ($u, $r, $d) = user_of('auth_basic, wrong password', 'GET',
                           '/api/users/bob', '/api/users/:username', 401,
                           headers => { basic('bob', 'wrong') });
    is($u, 'bob', 'wrong password: the user $remote_user gives');
    is_deeply($d->{auth},
              [[{ endpoint => '/api/users/:username', username => 'bob' }, 1]],
              'wrong password: one authentication failure for bob');

    ($u, $r, $d) = user_of('auth_basic, unknown user', 'GET',
                           '/api/users', '/api/users', 401,
                           headers => { basic('mallory', 'x') });
    is($u, 'mallory', 'unknown user: the user $remote_user gives');
    is(scalar @{ $d->{auth} }, 1, 'unknown user: one authentication failure');

    ($u, $r, $d) = user_of('auth_basic, crypt() password', 'GET',
                           '/api/users/bob', '/api/users/:username', 200,
                           headers => { basic('bob', 's3cret') });
    is($u, 'bob', 'crypt() password: username="bob"');
    is($r->{body}, 'users', 'crypt() password: the upstream answered');
    is_deeply($d->{auth}, [], 'a 200 is no authentication failure');

    ($u, $r, $d) = user_of('auth_basic, {PLAIN} password', 'GET',
                           '/api/users', '/api/users', 200,
                           headers => { basic('plain', 'pl41n') });
    is($u, 'plain', '{PLAIN} password: username="plain"');

    my $m = PlayarrTest::parse_metrics($d->{body});
    is(PlayarrTest::sample($m, $REQS, { endpoint => '/api/users',
                                        status_code => '401',
                                        username => 'anonymous' }), 1,
       'requests_total{endpoint="/api/users",status_code="401",'
       . 'username="anonymous"} 1');
    is(PlayarrTest::sample($m, $AUTH, { endpoint => '/api/users/:username',
                                        username => 'bob' }), 1,
       'authentication_failures_total for bob is 1 after his 200');
}

# --- first non-empty, literals, inheritance ----------------------------------

{
    my ($u) = user_of('two variables, both empty', 'GET', '/api/jobs',
                      '/api/jobs', 200);
    is($u, 'anonymous', 'two empty variables: anonymous');

    ($u) = user_of('two variables, second set', 'GET', '/api/jobs',
                   '/api/jobs', 200, headers => { 'X-B' => 'bee' });
    is($u, 'bee', 'first empty: the second');

    ($u) = user_of('two variables, first empty string', 'GET', '/api/jobs',
                   '/api/jobs', 200,
                   headers => [ 'X-A' => '', 'X-B' => 'bee' ]);
    is($u, 'bee', 'an empty header is empty: the second');

    ($u) = user_of('two variables, both set', 'GET', '/api/jobs',
                   '/api/jobs', 200, headers => { 'X-A' => 'ay',
                                                  'X-B' => 'bee' });
    is($u, 'ay', 'both set: the first');

    ($u) = user_of('a literal fallback', 'GET', '/api/livetv/m3u',
                   '/api/livetv/m3u', 200);
    is($u, 'guest', 'literal value used when the variable is empty');

    ($u) = user_of('inherited from server', 'POST', '/api/jobs/j1/trigger',
                   '/api/jobs/:jobName/trigger', 200,
                   headers => { 'X-Srv' => 'srvuser' });
    is($u, 'srvuser', 'a location without the directive inherits it');

    ($u) = user_of('a newline in the value', 'GET', '/api/healthcheck',
                   '/api/healthcheck', 200);
    is($u, "line1\nline2", 'a newline survives (parsed back from \\n)');
    like($t->quiet_scrape(client => $cl), qr/username="line1\\nline2"/,
         'a newline is written \\n');
}

# --- bytes a client controls -------------------------------------------------

sub valid_utf8 {
    my ($s) = @_;
    my $copy = $s;
    my $ok = eval { Encode::decode('UTF-8', $copy, Encode::FB_CROAK); 1 };
    return $ok ? 1 : 0;
}

my @weird = (
    # header value (bytes), expected label (bytes) or undef, name
    ["a\"b\\c\xffd", "a\"b\\c${FFFD}d", 'quote, backslash, \xff'],
    ["\xff", $FFFD, 'a lone \xff'],
    ['u' x 300, 'u' x 128, '300 bytes cut to 128'],
    ['u' x 128, 'u' x 128, '128 bytes kept'],
    ["Zo\xc3\xab-\xf0\x9f\x98\x80", "Zo\xc3\xab-\xf0\x9f\x98\x80",
     'valid UTF-8 kept as is'],
    ["\xe2\x82\xac" x 100, undef, '100 euro signs (300 bytes)'],
    ["x\xc3(y", undef, 'a truncated sequence'],
    ["o\xc0\xafk", undef, 'an overlong encoding'],
    ["s\xed\xa0\x80g", undef, 'a surrogate'],
    ["h\xf4\x90\x80\x80i", undef, 'beyond U+10FFFF'],
    ["end\xe2\x82", undef, 'truncated at the end'],
    ['\\' x 200, '\\' x 128, '200 backslashes'],
    ['"' x 200, '"' x 128, '200 quotes'],
);

my %seen_users;

for my $w (@weird) {
    my ($value, $want, $name) = @$w;
    my ($u) = user_of("X-User: $name", 'GET', '/api/titles/x',
                      '/api/titles/:title_key', 200,
                      headers => { 'X-User' => $value });

    next unless defined $u;
    $seen_users{$u} = $name;

    ok(valid_utf8($u), "$name: the label is valid UTF-8");
    ok(length($u) <= 128, "$name: at most 128 bytes (" . length($u) . ')');

    if (defined $want) {
        is($u, $want, "$name: the label as expected")
            or diag(unpack('H*', $u));
        next;
    }

    if ($name =~ /euro/) {
        is(substr($u, 0, 126), "\xe2\x82\xac" x 42,
           "$name: the first 42 signs kept");
        ok(length($u) >= 126, "$name: no more than one sign lost");
        next;
    }

    like($u, qr/\Q$FFFD\E/, "$name: U+FFFD in place of the invalid bytes");
    my ($head) = $value =~ /^([a-z]+)/;
    like($u, qr/^\Q$head\E/, "$name: the valid bytes before are kept");
    my ($tail) = $value =~ /([a-z]+)$/;
    like($u, qr/\Q$tail\E$/, "$name: the valid bytes after are kept")
        if $name !~ /at the end/;
}

# the same bytes, through the whole exposition and the JSON export
{
    my $body = $t->scrape('weird usernames');

    like($body, qr/username="a\\"b\\\\c\Q$FFFD\Ed"/,
         'the quote and backslash are escaped, \xff is U+FFFD');
    ok(valid_utf8($body), 'the whole exposition is valid UTF-8');
    ok(index($body, "\xff") < 0, 'no \xff byte in the exposition');

    my $u128 = 'u' x 128;
    like($body, qr/username="$u128"/, 'the 128-byte cut is in the text');
    unlike($body, qr/username="u{129}/, 'no longer username');

    my $json = $cl->req('GET', '/scrape/json', headers => \%auth);
    is($json->{status}, 200, '/metrics/json answered 200');

    my $data = eval { JSON::PP->new->utf8->decode($json->{body}) };
    ok($data, '/metrics/json is JSON in valid UTF-8') or diag($@);

    my %users;
    for my $f (@{ ref $data eq 'ARRAY' ? $data : [] }) {
        next unless ($f->{name} // '') eq $REQS;
        for my $v (@{ $f->{values} || [] }) {
            my $u = $v->{labels}{username};
            $users{ Encode::encode('UTF-8', $u) } = 1 if defined $u;
        }
    }

    for my $u (sort keys %seen_users) {
        ok($users{$u}, "/metrics/json has the username of"
                       . " \"$seen_users{$u}\"");
    }
}

$cl->close;

$t->stop;

done_testing;
