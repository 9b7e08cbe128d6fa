#!/usr/bin/perl

# Route templates (docs/directives.md): every Playarr route is
# matched by a concrete URL and labelled with its template; the most
# specific template wins; matching uses the path the client asked for
# after nginx's normalization (case, trailing slash, merged slashes,
# percent-encoding, dot segments), never the query string nor a URI
# rewritten internally; secrets in paths and query strings never reach
# /metrics or /metrics/json; subrequests and internal redirects count once.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use PlayarrTest qw(delta);
use PlayarrTest::Blocks qw(run_blocks);

PlayarrTest::need_module();

my $REPO = PlayarrTest::repo();
my $ROUTES_TXT = $ENV{PLAYARR_ROUTES_TXT}
                 || "$REPO/docs/playarr/routes.txt";
my $ROUTES_CONF = $ENV{PLAYARR_ROUTES_CONF}
                  || "$REPO/docs/playarr-routes.conf";

my $REQS = 'playarr_http_requests_total';
my $DUR = 'playarr_http_request_duration_seconds';

# --- the routes --------------------------------------------------------------

# [method, template] of routes.txt, one per distinct template (the first
# method it is listed with)
sub playarr_routes {
    open my $fh, '<', $ROUTES_TXT or return;
    my (@r, %seen);

    while (<$fh>) {
        next if /^\s*(?:#|$)/;
        my ($method, $tpl) = /^\s*([A-Z]+)\s+(\S+)\s*$/ or next;
        push @r, [$method, $tpl] unless $seen{$tpl}++;
    }

    return @r;
}

my @ROUTES = playarr_routes();

plan skip_all => "no routes in $ROUTES_TXT" unless @ROUTES;

my %TEMPLATE = map { $_->[1] => 1 } @ROUTES;

# The http-level lines declaring the routes: docs/playarr-routes.conf
# when it holds the real list, else lines generated from routes.txt.
my ($ROUTES_HTTP, $GENERATED);
{
    my $conf = -e $ROUTES_CONF ? PlayarrTest::slurp($ROUTES_CONF) : undef;

    if (defined $conf && $conf !~ /PLACEHOLDER/) {
        $ROUTES_HTTP = "include $ROUTES_CONF;\n";

    } else {
        $GENERATED = 1;
        $ROUTES_HTTP = join '',
                       map { "    playarr_metrics_route $_->[1];\n" } @ROUTES;
    }
}

note($GENERATED
     ? "docs/playarr-routes.conf is still a placeholder: the route lines"
       . " are generated from $ROUTES_TXT"
     : "routes from $ROUTES_CONF");

# a concrete URL for a template: params -> v1, v2..., ":id.json" ->
# top.json, "*" -> a/b
sub url_for {
    my ($tpl) = @_;
    my $n = 0;
    my @seg;

    for my $s (split m{/}, $tpl) {
        if ($s eq '*') {
            push @seg, 'a/b';
        } elsif ($s =~ /^:[A-Za-z0-9_]+(\.[A-Za-z0-9]+)$/) {
            push @seg, "top$1";
        } elsif ($s =~ /^:/) {
            push @seg, 'v' . ++$n;
        } else {
            push @seg, $s;
        }
    }

    return join '/', @seg;
}

# --- nginx -------------------------------------------------------------------

# /metrics and /metrics/json are Playarr routes too: the export locations
# live elsewhere so that those two are recorded like any other path.
# The second server (%%PORT2%%) does internal redirects and subrequests.
my $t = PlayarrTest->new(http => <<"EOF");
    playarr_metrics_zone playarr:4m;
    playarr_metrics_token_file %%DIR%%/metrics.token;
$ROUTES_HTTP
    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location = /scrape { playarr_metrics_export; }
        location = /scrape/json { playarr_metrics_export json; }

        location / {
            return 200 "\$playarr_metrics_endpoint";
        }
    }

    server {
        listen 127.0.0.1:%%PORT2%%;
        server_name localhost;
        root %%DIR%%/www;
        add_header X-Endpoint \$playarr_metrics_endpoint always;

        # the log phase runs for subrequests too: still counted once
        log_subrequest on;

        location = /scrape { playarr_metrics_export; }

        location = /api/healthcheck {
            return 200 "\$playarr_metrics_endpoint";
        }

        # rewrite ... last
        location ^~ /api/profile {
            rewrite ^ /api/healthcheck last;
        }
        location ^~ /nowhere {
            rewrite ^ /api/healthcheck last;
        }

        # try_files with a fallback URI
        location ^~ /api/livetv/ {
            try_files \$uri /api/healthcheck;
        }

        # error_page to a URI
        location ^~ /api/users {
            error_page 404 = /api/healthcheck;
        }

        # a named location
        location ^~ /api/stats {
            error_page 404 = \@fallback;
        }
        location \@fallback {
            return 200 "\$playarr_metrics_endpoint";
        }

        # a subrequest (auth_request), then a static file
        location ^~ /api/auth/ {
            auth_request /api/auth/verify/sub;
        }
        location = /api/auth/verify/sub {
            internal;
            return 204;
        }

        # subrequests (SSI), one of them to a template
        location = /api/jobs {
            ssi on;
            default_type text/html;
            alias %%DIR%%/www/ssi.html;
        }
        location ^~ /api/titles/ {
            return 200 "\$playarr_metrics_endpoint";
        }
    }
EOF

mkdir $t->path($_) or die "mkdir: $!" for qw(www www/api www/api/auth);
$t->write_file('www/api/auth/verify', 'static');
$t->write_file('www/ssi.html', '<!--# include virtual="/api/healthcheck" -->|'
                               . '<!--# include virtual="/api/titles/ssi" -->');

$t->start;
my $token = $t->read_token('metrics.token');
my %auth = (Authorization => "Bearer $token");

$t->scrape_setup(token => $token, path => '/scrape');

# the user a request is counted for without playarr_metrics_username
# (docs/app-integration.md): the path's segment at the template's ":username",
# else the username query argument, else anonymous
sub route_user {
    my ($tpl, $path) = @_;
    my ($p, $q) = split /\?/, $path, 2;
    my @t = grep { length } split m{/}, $tpl;
    my @p = grep { length } split m{/}, $p;

    for my $i (0 .. $#t) {
        return $p[$i] if $t[$i] eq ':username' && defined $p[$i];
    }

    return $1 if defined $q && $q =~ /(?:^|&)username=([^&]+)/;

    return undef;
}

sub key_req {
    my ($ep, $status, $user) = @_;
    return PlayarrTest::series_key($REQS,
                                   { endpoint => $ep,
                                     status_code => $status // '200',
                                     username => $user // 'anonymous' });
}

sub key_count {
    my ($ep, $user) = @_;
    return PlayarrTest::series_key("${DUR}_count",
                                   { endpoint => $ep,
                                     username => $user // 'anonymous' });
}

# checks that exactly one request was recorded between two scrapes,
# with endpoint $ep and status $status: one requests_total series +1 and
# one duration _count +1, nothing else
sub recorded_as {
    my ($name, $method, $path, $ep, $status, $before, $after) = @_;
    my $dr = delta($before, $after, $REQS);
    my $dc = delta($before, $after, "${DUR}_count");
    my $user = $status == 401 ? undef : route_user($ep, $path);

    is_deeply($dr, { key_req($ep, $status, $user) => 1 },
              "$name: $method $path counted once as $ep")
        or diag(explain($dr));
    is_deeply($dc, { key_count($ep, $user) => 1 },
              "$name: one duration observation for $ep")
        or diag(explain($dc));
}

# sends one request on the keep-alive client $cl, checks its status and
# that it was recorded as $ep
sub endpoint_is {
    my ($cl, $method, $path, $ep, $name, %opt) = @_;
    my $status = $opt{status} // 200;

    my $before = $t->quiet_series(client => $cl);
    my $r = $cl->req($method, $path, %opt);
    my $after = $t->quiet_series(client => $cl);

    is($r->{status}, $status, "$name: $method $path answered $status")
        or diag($r->{error} // $r->{raw});
    recorded_as($name, $method, $path, $ep, $status, $before, $after);

    return $r;
}

my $cl = PlayarrTest::Client->new($t, $t->port);

# --- the route list itself ---------------------------------------------------

SKIP: {
    skip 'docs/playarr-routes.conf is a placeholder', 2 if $GENERATED;

    my $conf = PlayarrTest::slurp($ROUTES_CONF);
    my @lines = $conf =~ /^\s*playarr_metrics_route\s+(\S+?)\s*;/mg;
    my %dup;
    $dup{$_}++ for @lines;

    is_deeply([sort @lines], [sort keys %TEMPLATE],
              'docs/playarr-routes.conf declares every template of'
              . ' routes.txt, and only those');
    ok(!grep({ $dup{$_} > 1 } keys %dup),
       'docs/playarr-routes.conf: no template twice');
}

# --- every template, by a concrete URL ---------------------------------------

{
    my $before = $t->quiet_series(client => $cl);
    my %answered;

    for my $rt (@ROUTES) {
        my ($method, $tpl) = @$rt;
        my $url = url_for($tpl);
        my $r = $cl->req($method, $url);

        $answered{$tpl} = $r->{status};
        is($r->{body}, $tpl, "$method $url: \$playarr_metrics_endpoint")
            if $r->{status} == 200;
    }

    my $after = $t->quiet_series(client => $cl);
    my $dr = delta($before, $after, $REQS);
    my $dc = delta($before, $after, "${DUR}_count");

    for my $rt (@ROUTES) {
        my ($method, $tpl) = @$rt;
        my $url = url_for($tpl);

        is($answered{$tpl}, 200, "$method $url answered 200");
        my $user = route_user($tpl, $url);

        is($dr->{ key_req($tpl, 200, $user) }, 1,
           "$url: requests_total{endpoint=\"$tpl\",status_code=\"200\"} 1");
        is($dc->{ key_count($tpl, $user) }, 1,
           "$url: duration count for \"$tpl\" is 1");
    }

    my %want = map { key_req($_->[1], 200, route_user($_->[1],
                                                      url_for($_->[1])))
                     => 1 } @ROUTES;
    my @extra = grep { !$want{$_} } sort keys %$dr;
    ok(!@extra, scalar(@ROUTES) . ' templates: no other series counted')
        or diag("extra: @extra");
}

# the full scrape, through promtool and the python parser
$t->scrape('all templates');

# --- precedence, what matches nothing, normalization ---------------------------

# the blocks of __DATA__: a request, and the template it is recorded and
# answered ($playarr_metrics_endpoint) as: the most specific template
# wins; paths that match no template are unknown_endpoint; matching uses
# the path after nginx's normalization (case, trailing slash, merged
# slashes, percent-encoding, dot segments), never the query string
run_blocks(t => $t, client => $cl,
           send => sub {
               my ($b, $request) = @_;
               $b->{before} = $t->quiet_series(client => $cl);
               my $r = $request->();
               $b->{after} = $t->quiet_series(client => $cl);
               return $r;
           },
           sections => { endpoint => sub {
               my ($b, $r, undef, $ep) = @_;
               recorded_as($b->{name}, $b->{method}, $b->{path}, $ep, 200,
                           $b->{before}, $b->{after});
               is($r->{body}, $ep,
                  "$b->{name}: \$playarr_metrics_endpoint is $ep");
           } });

# --- secrets in paths and query strings --------------------------------------

my @secrets = qw(S3cretPass APIKEY123 PASSWORD QSECRET99 Zq8uerySecret
                 S3cretOnly2 KEYnotROUTE);

my @secret_req = (
    ['/movie/alice/S3cretPass/123', '/movie/:username/:password/:streamId'],
    ['/stremio/APIKEY123/manifest.json', '/stremio/:api_key/manifest.json'],
    ['/stremio/APIKEY123/meta/movie/tt1', '/stremio/:api_key/meta/:type/*'],
    ['/player_api.php/u/PASSWORD/1?password=QSECRET99',
     '/player_api.php/:username/:password/:streamId'],
    ['/get.php?username=u&password=Zq8uerySecret', '/get.php'],
    ['/live/alice/S3cretOnly2', 'unknown_endpoint'],
    ['/stremio/KEYnotROUTE/nothing/here', 'unknown_endpoint'],
);

for my $s (@secret_req) {
    endpoint_is($cl, 'GET', @$s, 'secret');
}

{
    my $body = $t->scrape('after secrets');
    my $json = $cl->req('GET', '/scrape/json', headers => \%auth);

    is($json->{status}, 200, '/metrics/json answered 200');
    ok(defined PlayarrTest::json_body($json), '/metrics/json is JSON');
    like($json->{body}, qr{"/movie/:username/:password/:streamId"},
         '/metrics/json holds the Xtream template');

    for my $s (@secrets) {
        ok(index($body, $s) < 0, "$s appears nowhere in /metrics");
        ok(index($json->{body}, $s) < 0,
           "$s appears nowhere in /metrics/json");
    }
}

# --- internal redirects and subrequests (server on %%PORT2%%) ---------------

my $cl2 = PlayarrTest::Client->new($t, $t->port(2));

# every test: the original path, its template, what the client gets
my @redirect = (
    ['/api/profile', '/api/profile', 'rewrite ... last'],
    ['/api/profile/change-password', '/api/profile/change-password',
     'rewrite ... last'],
    ['/nowhere/at/all', 'unknown_endpoint', 'rewrite ... last (unknown path)'],
    ['/api/livetv/m3u', '/api/livetv/m3u', 'try_files fallback'],
    ['/api/livetv/stream/ch1', '/api/livetv/stream/:channelKey',
     'try_files fallback'],
    ['/api/users/bob', '/api/users/:username', 'error_page 404 = /uri'],
    ['/api/stats', '/api/stats', 'error_page 404 = @named'],
    ['/api/auth/verify', '/api/auth/verify', 'auth_request subrequest'],
);

for my $rd (@redirect) {
    my ($path, $ep, $what) = @$rd;
    my $r = endpoint_is($cl2, 'GET', $path, $ep, $what);
    is(PlayarrTest::header($r, 'X-Endpoint'), $ep,
       "$what: \$playarr_metrics_endpoint after the redirect is $ep");
}

# SSI: two subrequests, one of them to a path with a template
{
    my $r = endpoint_is($cl2, 'GET', '/api/jobs', '/api/jobs',
                        'SSI subrequests');
    like($r->{body}, qr/\|/, 'SSI: the page was served');
}

$t->scrape('final');

$cl->close;
$cl2->close;

$t->stop;

done_testing;

__DATA__

=== precedence: GET /api/titles/watchlist/bulk
--- request
GET /api/titles/watchlist/bulk
--- endpoint: /api/titles/watchlist/bulk

=== precedence: PUT /api/titles/watchlist/bulk
--- request
PUT /api/titles/watchlist/bulk
--- endpoint: /api/titles/watchlist/bulk

=== precedence: GET /api/titles/tt123/watchlist
--- request
GET /api/titles/tt123/watchlist
--- endpoint: /api/titles/:title_key/watchlist

=== precedence: GET /api/titles/watchlist/watchlist
--- request
GET /api/titles/watchlist/watchlist
--- endpoint: /api/titles/:title_key/watchlist

=== precedence: GET /api/titles/bulk/watchlist
--- request
GET /api/titles/bulk/watchlist
--- endpoint: /api/titles/:title_key/watchlist

=== precedence: GET /api/titles/watchlist
--- request
GET /api/titles/watchlist
--- endpoint: /api/titles/:title_key

=== precedence: GET /api/titles
--- request
GET /api/titles
--- endpoint: /api/titles

=== precedence: GET /api/settings/metrics
--- request
GET /api/settings/metrics
--- endpoint: /api/settings/metrics

=== precedence: GET /api/settings/metrics/regenerate
--- request
GET /api/settings/metrics/regenerate
--- endpoint: /api/settings/metrics/regenerate

=== precedence: GET /api/settings/log_stream_level
--- request
GET /api/settings/log_stream_level
--- endpoint: /api/settings/log_stream_level

=== precedence: GET /api/settings/theme
--- request
GET /api/settings/theme
--- endpoint: /api/settings/:key

=== precedence: GET /api/settings/metricsx
--- request
GET /api/settings/metricsx
--- endpoint: /api/settings/:key

=== precedence: GET /api/iptv/providers/priorities
--- request
GET /api/iptv/providers/priorities
--- endpoint: /api/iptv/providers/priorities

=== precedence: GET /api/iptv/providers/validate
--- request
GET /api/iptv/providers/validate
--- endpoint: /api/iptv/providers/validate

=== precedence: GET /api/iptv/providers/p1
--- request
GET /api/iptv/providers/p1
--- endpoint: /api/iptv/providers/:provider_id

=== precedence: GET /api/iptv/providers/priorities/counts
--- request
GET /api/iptv/providers/priorities/counts
--- endpoint: /api/iptv/providers/:provider_id/counts

=== precedence: GET /api/provider-titles/ignored
--- request
GET /api/provider-titles/ignored
--- endpoint: /api/provider-titles/ignored

=== precedence: GET /api/provider-titles/ignored/7
--- request
GET /api/provider-titles/ignored/7
--- endpoint: /api/provider-titles/ignored/:id

=== precedence: GET /api/livetv/channels
--- request
GET /api/livetv/channels
--- endpoint: /api/livetv/channels

=== precedence: GET /api/livetv/channels/c1/programs
--- request
GET /api/livetv/channels/c1/programs
--- endpoint: /api/livetv/channels/:channelKey/programs

=== precedence: GET /api/playlist/movies/data
--- request
GET /api/playlist/movies/data
--- endpoint: /api/playlist/:title_type/data

=== precedence: GET /api/stream/tvshows/t1/1/2
--- request
GET /api/stream/tvshows/t1/1/2
--- endpoint: /api/stream/tvshows/:title_id/:season/:episode

=== precedence: GET /stremio/k1/manifest.json
--- request
GET /stremio/k1/manifest.json
--- endpoint: /stremio/:api_key/manifest.json

=== precedence: GET /stremio/k1/catalog/movie/top.json
--- request
GET /stremio/k1/catalog/movie/top.json
--- endpoint: /stremio/:api_key/catalog/:type/:id.json

=== precedence: GET /stremio/k1/catalog/movie/a.b.json
--- request
GET /stremio/k1/catalog/movie/a.b.json
--- endpoint: /stremio/:api_key/catalog/:type/:id.json

=== precedence: GET /stremio/k1/meta/movie/tt1
--- request
GET /stremio/k1/meta/movie/tt1
--- endpoint: /stremio/:api_key/meta/:type/*

=== precedence: GET /stremio/k1/meta/movie/tt1.json
--- request
GET /stremio/k1/meta/movie/tt1.json
--- endpoint: /stremio/:api_key/meta/:type/*

=== precedence: GET /stremio/k1/stream/series/tt1:1:2/x/y/z
--- request
GET /stremio/k1/stream/series/tt1:1:2/x/y/z
--- endpoint: /stremio/:api_key/stream/:type/*

=== precedence: GET /player_api.php
--- request
GET /player_api.php
--- endpoint: /player_api.php

=== precedence: GET /player_api.php/u/p/1
--- request
GET /player_api.php/u/p/1
--- endpoint: /player_api.php/:username/:password/:streamId

=== precedence: GET /metrics
--- request
GET /metrics
--- endpoint: /metrics

=== precedence: GET /metrics/json
--- request
GET /metrics/json
--- endpoint: /metrics/json

=== no template: GET /
--- request
GET /
--- endpoint: unknown_endpoint

=== no template: GET /nope
--- request
GET /nope
--- endpoint: unknown_endpoint

=== no template: GET /api
--- request
GET /api
--- endpoint: unknown_endpoint

=== no template: GET /api/
--- request
GET /api/
--- endpoint: unknown_endpoint

=== no template: GET /api/titles/a/b
--- request
GET /api/titles/a/b
--- endpoint: unknown_endpoint

=== no template: GET /api/titles/a/watchlist/b
--- request
GET /api/titles/a/watchlist/b
--- endpoint: unknown_endpoint

=== no template: GET /api/settings/metrics/other
--- request
GET /api/settings/metrics/other
--- endpoint: unknown_endpoint

=== no template: GET /stremio/k1/catalog/movie/top
--- request
GET /stremio/k1/catalog/movie/top
--- endpoint: unknown_endpoint

=== no template: GET /stremio/k1/catalog/movie/top.jsonx
--- request
GET /stremio/k1/catalog/movie/top.jsonx
--- endpoint: unknown_endpoint

=== no template: GET /stremio/k1/meta/movie
--- request
GET /stremio/k1/meta/movie
--- endpoint: unknown_endpoint

=== no template: GET /stremio/k1/meta/movie/
--- request
GET /stremio/k1/meta/movie/
--- endpoint: unknown_endpoint

=== no template: GET /stremio/k1
--- request
GET /stremio/k1
--- endpoint: unknown_endpoint

=== no template: GET /movie/u/p
--- request
GET /movie/u/p
--- endpoint: unknown_endpoint

=== no template: GET /movie/u/p/1/2
--- request
GET /movie/u/p/1/2
--- endpoint: unknown_endpoint

=== no template: GET /index.html
--- request
GET /index.html
--- endpoint: unknown_endpoint

=== no template: GET /api/healthcheckx
--- request
GET /api/healthcheckx
--- endpoint: unknown_endpoint

=== no template: GET /xapi/healthcheck
--- request
GET /xapi/healthcheck
--- endpoint: unknown_endpoint

=== case: GET /API/Titles/X
--- request
GET /API/Titles/X
--- endpoint: /api/titles/:title_key

=== case: GET /API/HEALTHCHECK
--- request
GET /API/HEALTHCHECK
--- endpoint: /api/healthcheck

=== case: GET /Stremio/K/MANIFEST.JSON
--- request
GET /Stremio/K/MANIFEST.JSON
--- endpoint: /stremio/:api_key/manifest.json

=== case: GET /api/titles/WATCHLIST/Bulk
--- request
GET /api/titles/WATCHLIST/Bulk
--- endpoint: /api/titles/watchlist/bulk

=== case of a suffix: GET /stremio/k/catalog/movie/top.JSON
--- request
GET /stremio/k/catalog/movie/top.JSON
--- endpoint: /stremio/:api_key/catalog/:type/:id.json

=== trailing slash: GET /api/titles/x/
--- request
GET /api/titles/x/
--- endpoint: /api/titles/:title_key

=== trailing slash: GET /api/healthcheck/
--- request
GET /api/healthcheck/
--- endpoint: /api/healthcheck

=== trailing slash: GET /api/titles/
--- request
GET /api/titles/
--- endpoint: /api/titles

=== trailing slash after *: GET /stremio/k/meta/movie/tt1/
--- request
GET /stremio/k/meta/movie/tt1/
--- endpoint: /stremio/:api_key/meta/:type/*

=== merged slashes: GET //api//titles/x
--- request
GET //api//titles/x
--- endpoint: /api/titles/:title_key

=== merged slashes: GET /api///healthcheck
--- request
GET /api///healthcheck
--- endpoint: /api/healthcheck

=== merged slashes: GET /api/titles//watchlist//bulk
--- request
GET /api/titles//watchlist//bulk
--- endpoint: /api/titles/watchlist/bulk

=== percent-encoding: GET /api/%74itles/x
--- request
GET /api/%74itles/x
--- endpoint: /api/titles/:title_key

=== percent-encoding: GET /%61%70%69/%68ealthcheck
--- request
GET /%61%70%69/%68ealthcheck
--- endpoint: /api/healthcheck

=== percent-encoding: GET /api/settings/%6Detrics
--- request
GET /api/settings/%6Detrics
--- endpoint: /api/settings/metrics

=== percent-encoded space in a param: GET /api/titles/a%20b
--- request
GET /api/titles/a%20b
--- endpoint: /api/titles/:title_key

=== dot segments: GET /api/x/../titles/y
--- request
GET /api/x/../titles/y
--- endpoint: /api/titles/:title_key

=== dot segments: GET /api/./titles/./y
--- request
GET /api/./titles/./y
--- endpoint: /api/titles/:title_key

=== dot segments: GET /api/titles/x/../../healthcheck
--- request
GET /api/titles/x/../../healthcheck
--- endpoint: /api/healthcheck

=== percent-encoded dot segments: GET /api/%2e%2e/api/titles/y
--- request
GET /api/%2e%2e/api/titles/y
--- endpoint: /api/titles/:title_key

=== query string: GET /api/titles/x?api_key=SECRET
--- request
GET /api/titles/x?api_key=SECRET
--- endpoint: /api/titles/:title_key

=== query string: GET /api/healthcheck?/api/titles/x
--- request
GET /api/healthcheck?/api/titles/x
--- endpoint: /api/healthcheck

=== query string: GET /nope?/api/healthcheck
--- request
GET /nope?/api/healthcheck
--- endpoint: unknown_endpoint

=== empty query string: GET /api/titles?
--- request
GET /api/titles?
--- endpoint: /api/titles
