#!/usr/bin/perl

# The recording's two caches of a worker (docs/source.md): the paths cache
# finds the series of a request by what it gives (the server's routes, its
# path, its status, the value its user is read from) before any route is
# matched; the recent requests cache by its endpoint, status and user.
# Neither may ever count a request in another's series: a status, a user,
# a path, a query string that stands for the route user and a header user
# of the same bytes, more keys than the caches hold, paths too long to be
# kept, an HTTP/2 stream cut in its headers (an empty key).  And what the
# log phase now does for every request: the requests in flight end there
# (a bad request, an internal redirect, not a logged subrequest), and
# $playarr_metrics_path is the path the route is matched against.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::INET;
use Test::More;
use PlayarrTest qw(delta requests_key);

PlayarrTest::need_module();

my $REQS = 'playarr_http_requests_total';
my $DUR = 'playarr_http_request_duration_seconds';
my $GAUGE = 'playarr_http_requests_in_flight';

my $t = PlayarrTest->new(http => <<'EOF');
    playarr_metrics_zone playarr:8m;
    playarr_metrics_max_series 20000;
    playarr_metrics_token_file %%DIR%%/metrics.token;

    playarr_metrics_route /api/titles/:title_key;
    playarr_metrics_route /api/titles/:title_key/details;
    playarr_metrics_route /player_api.php;
    playarr_metrics_route /movie/:username/:password/:streamId;

    log_format paths '$playarr_metrics_path|$playarr_metrics_endpoint|$uri';

    # the route user: from the path, or the query of /player_api.php
    server {
        listen 127.0.0.1:%%PORT%%;
        server_name route;

        access_log %%DIR%%/paths.log paths;

        location = /scrape { playarr_metrics_export; }

        location / {
            if ($arg_s = 404) {
                return 404;
            }
            return 200 "route";
        }

        location /old/ {
            rewrite ^/old/(.*)$ /api/$1 last;
        }

        location /gone/ {
            error_page 404 /api/titles/fallback;
            return 404;
        }
    }

    # the user from a request header
    server {
        listen 127.0.0.1:%%PORT2%%;
        server_name header;

        playarr_metrics_username $http_x_user;

        location / {
            if ($arg_s = 404) {
                return 404;
            }
            return 200 "header";
        }
    }

    # routes of its own: the same path is another endpoint here
    server {
        listen 127.0.0.1:%%PORT3%%;
        server_name own;

        playarr_metrics_route /api/:section/:id;
        playarr_metrics_username $http_x_user;

        location / {
            return 200 "own";
        }
    }
EOF

$t->start;

my $token = $t->read_token('metrics.token');
$t->scrape_setup(token => $token, path => '/scrape');

my $route = PlayarrTest::Client->new($t, $t->port(1));
my $header = PlayarrTest::Client->new($t, $t->port(2));
my $own = PlayarrTest::Client->new($t, $t->port(3));

sub K { PlayarrTest::series_key(@_) }

sub dur_count_key {
    my ($ep, $user) = @_;
    return K("${DUR}_count", { endpoint => $ep,
                               username => $user // 'anonymous' });
}

# sends every request (client, path, user or undef), in order; what the
# HTTP families counted meanwhile
sub count_of {
    my (@reqs) = @_;
    my $before = $t->quiet_series;

    for my $q (@reqs) {
        my ($cl, $path, $user) = @$q;
        my $r = $cl->req('GET', $path,
                         headers => defined $user ? [ 'X-User' => $user ]
                                                  : []);
        die "GET $path: $r->{status}\n"
            unless $r->{status} == 200 || $r->{status} == 404;
    }

    return delta($before, $t->quiet_series, qr/^playarr_http_/);
}

# an HTTP/2 connection that sends the start of a header block (":method
# GET", END_STREAM, no END_HEADERS) and goes away
sub h2_frame {
    my ($type, $flags, $sid, $payload) = @_;
    my $len = length $payload;

    return pack('CnCCN', $len >> 16, $len & 0xffff, $type, $flags, $sid)
           . $payload;
}

sub h2_cut {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $port)
        or die "connect: $!\n";

    print $s "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    print $s h2_frame(4, 0, 0, '');
    print $s h2_frame(1, 0x1, 1, "\x82");
    select undef, undef, undef, 0.2;
    close $s;
    select undef, undef, undef, 0.2;
}

my $TITLE = '/api/titles/:title_key';
my $DETAILS = '/api/titles/:title_key/details';

# --- the status is in the key -------------------------------------------------

{
    my @reqs = map { ([ $header, '/api/titles/tt1', 'alice' ],
                      [ $header, '/api/titles/tt1?s=404', 'alice' ]) } 1 .. 6;
    my $d = count_of(@reqs);

    is($d->{ requests_key($TITLE, 200, 'alice') }, 6, 'one path, 200: 6');
    is($d->{ requests_key($TITLE, 404, 'alice') }, 6, 'the same path, 404: 6');
    is($d->{ dur_count_key($TITLE, 'alice') }, 12,
       'one duration series for both statuses: 12');
    is(scalar(grep { /^\Q$REQS\E\{/ } keys %$d), 2, 'no other series moved');
}

# --- the server's routes are in the key ------------------------------------

{
    my @reqs = map { ([ $header, '/api/titles/tt5', 'mia' ],
                      [ $own, '/api/titles/tt5', 'mia' ]) } 1 .. 4;
    my $d = count_of(@reqs);

    is($d->{ requests_key($TITLE, 200, 'mia') }, 4,
       'one path on two servers: the first one\'s route, 4');
    is($d->{ requests_key('/api/:section/:id', 200, 'mia') }, 4,
       'the other server\'s route, 4');
}

# --- users: the header's value, many of them, more than the caches hold ------

{
    my @users = map { sprintf 'u%04d', $_ } 0 .. 2599;
    my @paths = ('/api/titles/tt2', '/api/titles/tt3/details',
                 '/api/titles/tt2/');
    my @reqs;

    for my $round (1 .. 2) {
        for my $u (@users) {
            push @reqs, map { [ $header, $_, $u ] } @paths;
        }
    }

    my $d = count_of(@reqs);
    my @bad;

    for my $u (@users) {
        push @bad, "$u title" if ($d->{ requests_key($TITLE, 200, $u) } // 0) != 4;
        push @bad, "$u details"
            if ($d->{ requests_key($DETAILS, 200, $u) } // 0) != 2;
    }

    ok(!@bad, '2,600 users x 3 paths, twice: every user counted exactly')
        or diag("wrong: @bad[0 .. ($#bad < 9 ? $#bad : 9)]");
    is(scalar(grep { /^\Q$REQS\E\{/ } keys %$d), 2 * @users,
       'two series a user, no other');
}

# --- a query string for the route user, a header user of the same bytes ------

{
    my $q = '/player_api.php?username=alice&password=p';
    my @reqs = map { ([ $route, $q, undef ],
                      [ $header, $q, 'username=alice&password=p' ]) } 1 .. 4;
    my $d = count_of(@reqs);

    is($d->{ requests_key('/player_api.php', 200, 'alice') }, 4,
       'the route user from the query: alice, 4');
    is($d->{ requests_key('/player_api.php', 200, 'username=alice&password=p') },
       4, 'the same bytes as a header user: their own series, 4');

    # the other way round, on fresh keys
    $q = '/player_api.php?username=bob&password=p';
    @reqs = map { ([ $header, $q, 'username=bob&password=p' ],
                   [ $route, $q, undef ]) } 1 .. 3;
    $d = count_of(@reqs);

    is($d->{ requests_key('/player_api.php', 200, 'bob') }, 3,
       'header first: the route user is still bob, 3');
    is($d->{ requests_key('/player_api.php', 200, 'username=bob&password=p') }, 3,
       'header first: the header user, 3');
}

# --- the route user in the path, and the query string's -----------------------

{
    my @reqs = ((map { [ $route, '/movie/bob/pw/1.ts', undef ] } 1 .. 3),
                [ $route, '/movie/carol/pw/1.ts', undef ],
                (map { [ $route, "/player_api.php?username=$_", undef ] }
                     qw(dave dave erin)),
                [ $route, '/player_api.php', undef ]);
    my $d = count_of(@reqs);

    my $MOVIE = '/movie/:username/:password/:streamId';
    is($d->{ requests_key($MOVIE, 200, 'bob') }, 3, 'the path names bob: 3');
    is($d->{ requests_key($MOVIE, 200, 'carol') }, 1, 'the path names carol: 1');
    is($d->{ requests_key('/player_api.php', 200, 'dave') }, 2, 'dave: 2');
    is($d->{ requests_key('/player_api.php', 200, 'erin') }, 1, 'erin: 1');
    is($d->{ requests_key('/player_api.php', 200) }, 1, 'no query: anonymous, 1');
}

# --- a path too long to be kept, and one just short enough -------------------

{
    my $long = '/api/titles/' . ('x' x 120);
    my $fits = '/api/titles/' . ('y' x 70);
    my @reqs = map { ([ $header, $long, 'kim' ], [ $header, $fits, 'kim' ],
                      [ $header, $long, 'lee' ]) } 1 .. 5;
    my $d = count_of(@reqs);

    is($d->{ requests_key($TITLE, 200, 'kim') }, 10, 'long and short paths: kim 10');
    is($d->{ requests_key($TITLE, 200, 'lee') }, 5, 'a long path: lee 5');
}

# --- requests in flight end in the log phase ---------------------------------

{
    # a request line nginx refuses (400, before the post-read phase), an
    # internal redirect, a rewrite: none is left in flight
    for (1 .. 3) {
        my $s = $t->raw("BAD\r\n\r\n");
        like($s, qr{^HTTP/1\.1 400 }, 'a bad request line: 400');
    }

    my $d = count_of(map { ([ $route, '/gone/x', undef ],
                            [ $route, '/old/titles/tt9', undef ]) } 1 .. 3);

    is($d->{ requests_key($TITLE, 200) }, undef,
       'the redirect and the rewrite: not the target route');
    is($d->{ requests_key('unknown_endpoint', 200) }, 3,
       'the rewrite: the route of the path before it, 3');
    is($d->{ requests_key('unknown_endpoint', 404) }, 3,
       'the internal redirect: its first path, the status of its end, 3');

    my $body = $t->scrape('in flight');
    is(PlayarrTest::sample($body, $GAUGE, {}), 1,
       'in flight: only the scrape itself');
}

# --- $playarr_metrics_path ---------------------------------------------------

{
    my $r = $route->req('GET', '/old/titles/tt7');
    is($r->{status}, 200, 'rewritten: 200');
    $route->close;
    $t->raw("BAD\r\n\r\n");

    my @lines;
    for (1 .. 50) {
        @lines = split /\n/, $t->read_file('paths.log') // '';
        last if grep { m{^-\|} } @lines;
        select undef, undef, undef, 0.1;
    }

    ok((grep { $_ eq '/old/titles/tt7|unknown_endpoint|/api/titles/tt7' }
            @lines),
       '$playarr_metrics_path: the path before the rewrite')
        or diag(join "\n", @lines[-3 .. -1]);
    ok((grep { m{^-\|unknown_endpoint\|} } @lines),
       'a request refused before the post-read phase: no path');
}

$t->stop;

# --- a second nginx: a server without routes, HTTP/2, subrequests logged ----

{
    my $h = PlayarrTest->new(http => <<'EOF');
    playarr_metrics_zone playarr:2m;
    playarr_metrics_token_file %%DIR%%/metrics.token;

    server {
        listen 127.0.0.1:%%PORT%%;
        playarr_metrics_route /api/titles/:id;
        playarr_metrics_username $http_x_user;

        location = /scrape { playarr_metrics_export; }
        location / { return 200 "x"; }

        location /ssi {
            log_subrequest on;
            ssi on;
            ssi_types text/plain;
            return 200 '<!--# include virtual="/part" --><!--# include virtual="/part" -->';
        }

        location /auth {
            log_subrequest on;
            auth_request /check;
            return 200 "ok";
        }

        location = /check { internal; return 204; }
        location = /part { return 200 "p"; }
    }

    # no routes: a stream cut before its headers ended has an empty path,
    # status 0 and no user, a key as empty as an unused entry
    server {
        listen 127.0.0.1:%%PORT2%% http2;
        playarr_metrics_username $http_x_user;
        location / { return 200 "h2"; }
    }
EOF
    $h->start;
    $h->scrape_setup(token => $h->read_token('metrics.token'),
                     path => '/scrape');

    my $cl = PlayarrTest::Client->new($h, $h->port(1));
    my $before = $h->quiet_series;

    for my $i (1 .. 5) {
        my $r = $cl->req('GET', "/api/titles/tt$i",
                         headers => [ 'X-User' => "user$i" ]);
        is($r->{status}, 200, "HTTP/1.1 request $i: 200");
        h2_cut($h->port(2));
    }

    my $d = delta($before, $h->quiet_series, qr/^\Q$REQS\E/);

    is($d->{ requests_key('unknown_endpoint', '000') }, 5,
       'HTTP/2 streams cut in their headers: 5, status 000, anonymous');
    is(scalar(grep { $d->{ requests_key('/api/titles/:id', 200, "user$_") } }
                   1 .. 5), 5, 'the requests between them: their own series');

    for my $path ('/ssi/x', '/auth/x') {
        for (1 .. 4) {
            my $r = $cl->req('GET', $path);
            is($r->{status}, 200, "$path: 200");
        }
    }

    my $body = $h->scrape('logged subrequests');
    is(PlayarrTest::sample($body, $GAUGE, {}), 1,
       'after SSI includes and auth_request, logged: in flight 1');

    $h->stop;
}

# --- the module loaded without a zone: its variables still answer ------------

{
    my $idle = PlayarrTest->new(http => <<'EOF');
    log_format vars '$playarr_metrics_endpoint|$playarr_metrics_path|'
                    '$playarr_metrics_route_username|$uri';

    server {
        listen 127.0.0.1:%%PORT%%;
        access_log %%DIR%%/vars.log vars;

        location / {
            return 200 "idle";
        }
    }
EOF
    $idle->start;

    my $r = $idle->get('/api/titles/tt1');
    is($r->{status}, 200, 'no zone: 200');

    my @lines;
    for (1 .. 50) {
        @lines = split /\n/, $idle->read_file('vars.log') // '';
        last if @lines;
        select undef, undef, undef, 0.1;
    }

    is($lines[0], 'unknown_endpoint|-|-|/api/titles/tt1',
       'no zone: the endpoint unknown, no path, no route user');

    $idle->stop;
}

done_testing;
