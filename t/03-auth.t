#!/usr/bin/perl

# Every answer of the Bearer check (issue 2, DESIGN.md section 6): status,
# WWW-Authenticate challenge, JSON body; and playarr_metrics_auth off.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use PlayarrTest;

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

my $MISSING = {
    error => 'Missing or invalid Authorization header. '
             . 'Expected: Authorization: Bearer <token>',
};
my $INVALID = { error => 'Invalid metrics token' };

# expected answers: [status, challenge error param (undef: none), body]
my %A = (
    ok       => [200],
    missing  => [401, undef, $MISSING],
    invalid  => [401, 'invalid_token', $INVALID],
    bad_req  => [400, 'invalid_request', undef],
    core_400 => ['core 400'],
);

# [name, Authorization header values (none, one, or several), answer]
my @cases = (
    [ 'no Authorization header',        [],                        'missing' ],
    [ 'empty Authorization header',     [''],                      'missing' ],
    [ 'Basic credentials',              ['Basic dXNlcjpwYXNz'],    'missing' ],
    [ 'Digest scheme',                  ['Digest username="u"'],   'missing' ],
    [ 'scheme name containing Bearer',  ["Bearerx $TOKEN"],        'missing' ],
    [ 'right token',                    ["Bearer $TOKEN"],         'ok' ],
    [ 'lowercase scheme',               ["bearer $TOKEN"],         'ok' ],
    [ 'uppercase scheme',               ["BEARER $TOKEN"],         'ok' ],
    [ 'wrong token',                    ['Bearer ' . ('9' x 64)],  'invalid' ],
    [ 'token in uppercase hex',         ['Bearer ' . uc $TOKEN],   'invalid' ],
    [ 'strict prefix of the token',     ['Bearer ' . substr($TOKEN, 0, 63)],
                                                                   'invalid' ],
    [ 'first character only',           ['Bearer 0'],              'invalid' ],
    [ 'token with one more character',  ["Bearer ${TOKEN}0"],      'invalid' ],
    [ 'token twice',                    ["Bearer $TOKEN$TOKEN"],   'invalid' ],
    [ '16 KiB token',                   ['Bearer ' . ('a' x 16384)],
                                                                   'invalid' ],
    [ 'Bearer alone',                   ['Bearer'],                'bad_req' ],
    [ 'Bearer and spaces',              ['Bearer    '],            'bad_req' ],
    [ 'two words after Bearer',         ['Bearer a b'],            'bad_req' ],
    [ 'token then a second word',       ["Bearer $TOKEN x"],       'bad_req' ],
    [ 'duplicated header (nginx core)', ["Bearer $TOKEN", "Bearer $TOKEN"],
                                                                   'core_400' ],
);

for my $c (@cases) {
    my ($name, $values, $answer) = @$c;
    my ($status, $error, $body) = @{ $A{$answer} };
    my $r = $t->get('/metrics',
                    headers => [map { (Authorization => $_) } @$values]);

    if ($answer eq 'core_400') {
        is($r->{status}, 400, "$name: 400");
        like($r->{body}, qr{<center>nginx/[0-9.]+</center>},
             "$name: nginx's own error page, before the module");
        next;
    }

    is($r->{status}, $status, "$name: status $status")
        or diag($r->{error} // $r->{raw});

    unlike($r->{raw} // '', qr/\Q$TOKEN\E/, "$name: token not in the answer");

    if ($status == 200) {
        like(PlayarrTest::header($r, 'Content-Type') // '', qr{^text/plain},
             "$name: metrics body");
        ok(!defined $r->{headers}{'www-authenticate'},
           "$name: no challenge");
        next;
    }

    my $www = $r->{headers}{'www-authenticate'};
    ok(defined $www && !ref $www, "$name: one WWW-Authenticate header");

    my ($scheme, $p, $rest) = PlayarrTest::parse_challenge($www);
    is($scheme, 'Bearer', "$name: Bearer challenge");
    is($rest, '', "$name: challenge fully parsed") or diag($www);
    is($p->{realm}, 'playarr-metrics', "$name: realm");
    is($p->{error}, $error, "$name: error=" . ($error // '(none)'));
    is_deeply([grep { !/^(?:realm|error|error_description)$/ } keys %$p], [],
              "$name: no other challenge parameter");
    if (!defined $error) {
        is($www, 'Bearer realm="playarr-metrics"', "$name: exact challenge");
    }

    like(PlayarrTest::header($r, 'Content-Type') // '',
         qr{^application/json\b}, "$name: JSON content type");

    my $json = PlayarrTest::json_body($r);

    if ($body) {
        is_deeply($json, $body, "$name: JSON body") or diag($r->{body});
    } else {
        ok(ref $json eq 'HASH' && defined $json->{error} && !ref $json->{error},
           "$name: JSON body with an error string") or diag($r->{body});
    }

    my $cl = PlayarrTest::header($r, 'Content-Length');
    is($cl // length $r->{body}, length $r->{body},
       "$name: Content-Length, if any, matches the body");
}

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
