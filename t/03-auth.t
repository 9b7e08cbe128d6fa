#!/usr/bin/perl

# Every answer of the Bearer check (docs/directives.md): status,
# WWW-Authenticate challenge, JSON body; and playarr_metrics_auth off.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use PlayarrTest;
use PlayarrTest::Blocks qw(run_blocks);

PlayarrTest::need_module();

my $t = PlayarrTest->new(http => <<'EOF');
    playarr_metrics_zone playarr:1m;
    playarr_metrics_token_file %%DIR%%/metrics.token;

    # room for the 16 KiB Authorization header below
    large_client_header_buffers 4 32k;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;
        location = /metrics { playarr_metrics_export; }
        location = /open-metrics {
            playarr_metrics_export;
            playarr_metrics_auth off;
        }
    }
EOF

my $TOKEN = '0123456789abcdef' x 4;
$t->write_secret('metrics.token', "$TOKEN\n");
$t->start;

# every Authorization header of __DATA__ and its exact answer: status,
# Content-Type, the WWW-Authenticate challenge (or none), the body; the
# token never in it
run_blocks(t => $t, never => [$TOKEN],
           vars => { TOKEN => $TOKEN, TOKEN_UC => uc $TOKEN,
                     TOKEN_63 => substr($TOKEN, 0, 63) });

# HEAD without credentials: same status and challenge, no body
{
    my $r = $t->head('/metrics');
    is($r->{status}, 401, 'HEAD without token: 401');
    is(PlayarrTest::header($r, 'WWW-Authenticate'),
       'Bearer realm="playarr-metrics"', 'HEAD without token: challenge');
    is($r->{extra}, '', 'HEAD without token: no body');
}

# the same checks on a keep-alive connection: the connection survives
{
    my $c = $t->connect;
    my @got;
    for my $h ('', "Bearer $TOKEN", 'Bearer nope', 'Bearer a b',
               "Bearer $TOKEN")
    {
        my $r = $c->request('GET', '/metrics',
                            headers => [length $h ? (Authorization => $h) : ()]);
        push @got, $r->{status};
    }
    $c->close;
    is_deeply(\@got, [401, 200, 401, 400, 200],
              'keep-alive: answers in order on one connection');
}

# playarr_metrics_auth off
for my $c (['no header', {}],
           ['wrong token', { Authorization => 'Bearer nope' }],
           ['malformed header', { Authorization => 'Bearer a b' }])
{
    my $r = $t->get('/open-metrics', headers => $c->[1]);
    is($r->{status}, 200, "auth off, $c->[0]: 200");
    ok(!defined $r->{headers}{'www-authenticate'},
       "auth off, $c->[0]: no challenge");
}
$t->metrics(path => '/open-metrics', name => 'auth off');

$t->stop;

unlike($t->error_log_text, qr/\Q$TOKEN\E/, 'the token is not logged');

done_testing;

__DATA__

=== no Authorization header
--- request
GET /metrics
--- error_code: 401
--- response_headers
Content-Type: application/json
WWW-Authenticate: Bearer realm="playarr-metrics"
--- response_body
{"error":"Missing or invalid Authorization header. Expected: Authorization: Bearer <token>"}

=== empty Authorization header
--- request
GET /metrics
--- more_headers
Authorization: 
--- error_code: 401
--- response_headers
Content-Type: application/json
WWW-Authenticate: Bearer realm="playarr-metrics"
--- response_body
{"error":"Missing or invalid Authorization header. Expected: Authorization: Bearer <token>"}

=== Basic credentials
--- request
GET /metrics
--- more_headers
Authorization: Basic dXNlcjpwYXNz
--- error_code: 401
--- response_headers
Content-Type: application/json
WWW-Authenticate: Bearer realm="playarr-metrics"
--- response_body
{"error":"Missing or invalid Authorization header. Expected: Authorization: Bearer <token>"}

=== Digest scheme
--- request
GET /metrics
--- more_headers
Authorization: Digest username="u"
--- error_code: 401
--- response_headers
Content-Type: application/json
WWW-Authenticate: Bearer realm="playarr-metrics"
--- response_body
{"error":"Missing or invalid Authorization header. Expected: Authorization: Bearer <token>"}

=== scheme name containing Bearer
--- request
GET /metrics
--- more_headers
Authorization: Bearerx %%TOKEN%%
--- error_code: 401
--- response_headers
Content-Type: application/json
WWW-Authenticate: Bearer realm="playarr-metrics"
--- response_body
{"error":"Missing or invalid Authorization header. Expected: Authorization: Bearer <token>"}

=== right token
--- request
GET /metrics
--- more_headers
Authorization: Bearer %%TOKEN%%
--- response_headers
Content-Type: text/plain; version=0.0.4; charset=utf-8
!WWW-Authenticate

=== lowercase scheme
--- request
GET /metrics
--- more_headers
Authorization: bearer %%TOKEN%%
--- response_headers
Content-Type: text/plain; version=0.0.4; charset=utf-8
!WWW-Authenticate

=== uppercase scheme
--- request
GET /metrics
--- more_headers
Authorization: BEARER %%TOKEN%%
--- response_headers
Content-Type: text/plain; version=0.0.4; charset=utf-8
!WWW-Authenticate

=== wrong token
--- request
GET /metrics
--- more_headers
Authorization: Bearer 9999999999999999999999999999999999999999999999999999999999999999
--- error_code: 401
--- response_headers
Content-Type: application/json
WWW-Authenticate: Bearer realm="playarr-metrics", error="invalid_token"
--- response_body
{"error":"Invalid metrics token"}

=== token in uppercase hex
--- request
GET /metrics
--- more_headers
Authorization: Bearer %%TOKEN_UC%%
--- error_code: 401
--- response_headers
Content-Type: application/json
WWW-Authenticate: Bearer realm="playarr-metrics", error="invalid_token"
--- response_body
{"error":"Invalid metrics token"}

=== strict prefix of the token
--- request
GET /metrics
--- more_headers
Authorization: Bearer %%TOKEN_63%%
--- error_code: 401
--- response_headers
Content-Type: application/json
WWW-Authenticate: Bearer realm="playarr-metrics", error="invalid_token"
--- response_body
{"error":"Invalid metrics token"}

=== first character only
--- request
GET /metrics
--- more_headers
Authorization: Bearer 0
--- error_code: 401
--- response_headers
Content-Type: application/json
WWW-Authenticate: Bearer realm="playarr-metrics", error="invalid_token"
--- response_body
{"error":"Invalid metrics token"}

=== token with one more character
--- request
GET /metrics
--- more_headers
Authorization: Bearer %%TOKEN%%0
--- error_code: 401
--- response_headers
Content-Type: application/json
WWW-Authenticate: Bearer realm="playarr-metrics", error="invalid_token"
--- response_body
{"error":"Invalid metrics token"}

=== token twice
--- request
GET /metrics
--- more_headers
Authorization: Bearer %%TOKEN%%%%TOKEN%%
--- error_code: 401
--- response_headers
Content-Type: application/json
WWW-Authenticate: Bearer realm="playarr-metrics", error="invalid_token"
--- response_body
{"error":"Invalid metrics token"}

=== 16 KiB token
--- request
GET /metrics
--- more_headers eval
"Authorization: Bearer " . ("a" x 16384)
--- error_code: 401
--- response_headers
Content-Type: application/json
WWW-Authenticate: Bearer realm="playarr-metrics", error="invalid_token"
--- response_body
{"error":"Invalid metrics token"}

=== Bearer alone
--- request
GET /metrics
--- more_headers
Authorization: Bearer
--- error_code: 400
--- response_headers
Content-Type: application/json
WWW-Authenticate: Bearer realm="playarr-metrics", error="invalid_request"
--- response_body
{"error":"Malformed Authorization header"}

=== Bearer and spaces
--- request
GET /metrics
--- more_headers eval
"Authorization: Bearer    "
--- error_code: 400
--- response_headers
Content-Type: application/json
WWW-Authenticate: Bearer realm="playarr-metrics", error="invalid_request"
--- response_body
{"error":"Malformed Authorization header"}

=== two words after Bearer
--- request
GET /metrics
--- more_headers
Authorization: Bearer a b
--- error_code: 400
--- response_headers
Content-Type: application/json
WWW-Authenticate: Bearer realm="playarr-metrics", error="invalid_request"
--- response_body
{"error":"Malformed Authorization header"}

=== token then a second word
--- request
GET /metrics
--- more_headers
Authorization: Bearer %%TOKEN%% x
--- error_code: 400
--- response_headers
Content-Type: application/json
WWW-Authenticate: Bearer realm="playarr-metrics", error="invalid_request"
--- response_body
{"error":"Malformed Authorization header"}

=== duplicated header (nginx core)
--- request
GET /metrics
--- more_headers
Authorization: Bearer %%TOKEN%%
Authorization: Bearer %%TOKEN%%
--- error_code: 400
--- response_headers
Content-Type: text/html
!WWW-Authenticate
--- response_body_like
<center>nginx/[0-9.]+</center>
