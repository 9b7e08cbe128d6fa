#!/usr/bin/perl

# playarr_metrics_auth bearer|jwt|off [role=NAME] (docs/app-integration.md): a
# jwt location lets in a valid session of Playarr's cookie and answers in
# Playarr's own words (401 Authentication required / Invalid or expired token,
# 403 Admin access required); bearer and jwt together; the Origin check of a
# POST let in by a session; what nginx -t says of bad modes.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use Test::More;
use PlayarrTest;
use PlayarrTest::Blocks qw(run_blocks);

PlayarrTest::need_module();

my $SECRET = 'auth-modes-secret';

sub jwt { PlayarrTest::session_jwt($SECRET, @_) }

my $later = time + 3600;
my $admin = jwt({ sub => 'root', role => 'admin', exp => $later });
my $user = jwt({ sub => 'joe', role => 'user', exp => $later });
my $expired = jwt({ sub => 'root', role => 'admin', exp => time - 60 });
my $forged = jwt({ sub => 'root', role => 'admin' }, key => 'guess');

my $t = PlayarrTest->new(http => <<'EOF');
    playarr_metrics_zone playarr:1m;
    playarr_metrics_token_file %%DIR%%/tok/metrics.token;
    playarr_metrics_jwt_secret_file %%DIR%%/jwt.secret;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location / { return 200 "app\n"; }

        location = /metrics {
            playarr_metrics_export;
        }
        location = /metrics/json {
            playarr_metrics_export json;
            playarr_metrics_auth jwt;
        }
        location = /both {
            playarr_metrics_export;
            playarr_metrics_auth bearer jwt;
        }
        location = /api/settings/metrics {
            playarr_metrics_token_admin;
            playarr_metrics_auth jwt role=admin;
        }
        location = /api/settings/metrics/regenerate {
            playarr_metrics_token_admin;
            playarr_metrics_auth jwt role=admin;
        }
        location = /push {
            playarr_metrics_push;
            playarr_metrics_auth jwt;
        }
    }
EOF

$t->write_file('jwt.secret', "$SECRET\n", 0600);

# the workers write the new token next to the old one: the directory is
# theirs
$t->worker_dir('tok', 0700);

$t->start;

my $port = $t->port;
my $self_origin = "http://127.0.0.1:$port";

sub call {
    my ($method, $path, %o) = @_;
    my @h;
    push @h, Cookie => "access_token=$o{cookie}" if defined $o{cookie};
    push @h, Origin => $o{origin} if defined $o{origin};
    push @h, Authorization => $o{auth} if defined $o{auth};
    push @h, 'Content-Type' => 'application/json' if defined $o{body};
    return $t->request($method, $path, headers => \@h,
                       host => "127.0.0.1:$port",
                       defined $o{body} ? (body => $o{body}) : ());
}

sub error_is {
    my ($r, $status, $text, $name) = @_;
    is($r->{status}, $status, "$name: $status");
    like($r->{headers}{'content-type'} // '', qr{^application/json},
         "$name: JSON");
    my $j = eval { decode_json($r->{body}) };
    is_deeply($j, { error => $text }, "$name: {\"error\":\"$text\"}")
        or diag($r->{body});
}

# --- /metrics/json with jwt ----------------------------------------------

error_is(call(GET => '/metrics/json'), 401, 'Authentication required',
         'json, no cookie');
ok(!defined call(GET => '/metrics/json')->{headers}{'www-authenticate'},
   'json, no cookie: no Bearer challenge');
error_is(call(GET => '/metrics/json', cookie => $expired), 401,
         'Invalid or expired token', 'json, expired session');
error_is(call(GET => '/metrics/json', cookie => $forged), 401,
         'Invalid or expired token', 'json, forged session');
error_is(call(GET => '/metrics/json', cookie => 'garbage'), 401,
         'Invalid or expired token', 'json, garbage cookie');

{
    my $r = call(GET => '/metrics/json', cookie => $user);
    is($r->{status}, 200, 'json, a user session: 200');
    my $j = eval { decode_json($r->{body}) };
    is(ref $j, 'ARRAY', 'json, a user session: the JSON array');
    ok((grep { $_->{name} eq 'playarr_http_requests_total' } @{ $j || [] }),
       'json, a user session: the families');
}

error_is(call(GET => '/metrics/json',
              auth => 'Bearer ' . $t->read_token('tok/metrics.token')),
         401, 'Authentication required',
         'json, jwt only: a Bearer token does not let in');

# --- the token pages with jwt role=admin ------------------------------------

error_is(call(GET => '/api/settings/metrics'), 401,
         'Authentication required', 'token page, logged out');
error_is(call(GET => '/api/settings/metrics', cookie => $user), 403,
         'Admin access required', 'token page, a plain user');
error_is(call(GET => '/api/settings/metrics', cookie => $expired), 401,
         'Invalid or expired token', 'token page, an expired admin');

{
    my $r = call(GET => '/api/settings/metrics', cookie => $admin);
    is($r->{status}, 200, 'token page, an admin: 200');
    is_deeply(eval { decode_json($r->{body}) },
              { value => $t->read_token('tok/metrics.token') },
              'token page, an admin: the file\'s token');
}

# regenerate: the Origin check
{
    my $before = $t->read_token('tok/metrics.token');

    for my $o ('http://evil.example', 'null', "https://127.0.0.1:$port",
               "http://127.0.0.1:" . ($port + 1), "http://localhost:$port",
               "$self_origin/x")
    {
        error_is(call(POST => '/api/settings/metrics/regenerate',
                      cookie => $admin, origin => $o),
                 403, 'Cross-origin request refused',
                 "regenerate from Origin $o");
    }

    is($t->read_token('tok/metrics.token'), $before,
       'regenerate refused: the token is the same');

    error_is(call(POST => '/api/settings/metrics/regenerate',
                  cookie => $user, origin => $self_origin),
             403, 'Admin access required', 'regenerate, a plain user');
    is($t->read_token('tok/metrics.token'), $before,
       'regenerate by a plain user: the token is the same');

    my $r = call(POST => '/api/settings/metrics/regenerate',
                 cookie => $admin, origin => $self_origin);
    is($r->{status}, 200, 'regenerate from our own origin: 200');
    my $new = eval { decode_json($r->{body})->{value} } // '';
    isnt($new, $before, 'regenerate: a new token');
    is($t->read_token('tok/metrics.token'), $new, 'regenerate: in the file');

    $r = call(POST => '/api/settings/metrics/regenerate', cookie => $admin);
    is($r->{status}, 200, 'regenerate without an Origin (no browser): 200');
}

# --- bearer and jwt together ---------------------------------------------------

{
    my $tok = $t->read_token('tok/metrics.token');

    is(call(GET => '/both', auth => "Bearer $tok")->{status}, 200,
       'both: the token');
    is(call(GET => '/both', cookie => $user)->{status}, 200,
       'both: a session');
    my $r = call(GET => '/both', cookie => $user, auth => 'Bearer wrong');
    is($r->{status}, 401, 'both: a wrong token with a session: 401');
    like($r->{headers}{'www-authenticate'} // '', qr/invalid_token/,
         'both: with an Authorization header, bearer answers');
    error_is(call(GET => '/both'), 401, 'Authentication required',
             'both: nothing, jwt answers');
    error_is(call(GET => '/both', cookie => 'x.y.z'), 401,
             'Invalid or expired token', 'both: a bad session');
}

# --- push with jwt ---------------------------------------------------------------

{
    my $u = encode_json({ metric => 'nothing_here', op => 'inc' });
    error_is(call(POST => '/push', body => $u), 401,
             'Authentication required', 'push, no session');
    error_is(call(POST => '/push', body => $u, cookie => $user,
                  origin => 'http://evil.example'),
             403, 'Cross-origin request refused', 'push, another origin');
    is(call(POST => '/push', body => $u, cookie => $user,
            origin => $self_origin)->{status}, 400,
       'push, a session from our origin: past the guard (400, no such'
       . ' metric)');
}

# the bearer-only /metrics is as it was
is(call(GET => '/metrics', cookie => $admin)->{status}, 401,
   'bearer only: a session does not let in');

$t->stop;

# --- nginx -t --------------------------------------------------------------------

# the blocks of __DATA__: a mode nginx -t refuses, in its exact words, at
# the line marked "# <-" (a missing secret file is said at the handler's
# directive, whose location needs it)
run_blocks();

done_testing;

__DATA__

=== nginx -t: jwt without a secret file
--- http
playarr_metrics_zone playarr:1m;
playarr_metrics_token_file %%DIR%%/metrics.token;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /metrics {
        playarr_metrics_export;    # <-
        playarr_metrics_auth jwt;
    }
}
--- file jwt.secret
auth-modes-secret
--- emerg
"playarr_metrics_auth jwt" needs "playarr_metrics_jwt_secret_file"

=== nginx -t: role without jwt
--- http
playarr_metrics_zone playarr:1m;
playarr_metrics_token_file %%DIR%%/metrics.token;
playarr_metrics_jwt_secret_file %%DIR%%/jwt.secret;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /metrics {
        playarr_metrics_export;
        playarr_metrics_auth bearer role=admin;    # <-
    }
}
--- file jwt.secret
auth-modes-secret
--- emerg
"role=" needs "jwt"

=== nginx -t: role alone
--- http
playarr_metrics_zone playarr:1m;
playarr_metrics_token_file %%DIR%%/metrics.token;
playarr_metrics_jwt_secret_file %%DIR%%/jwt.secret;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /metrics {
        playarr_metrics_export;
        playarr_metrics_auth role=admin;    # <-
    }
}
--- file jwt.secret
auth-modes-secret
--- emerg
"role=" needs "jwt"

=== nginx -t: off with jwt
--- http
playarr_metrics_zone playarr:1m;
playarr_metrics_token_file %%DIR%%/metrics.token;
playarr_metrics_jwt_secret_file %%DIR%%/jwt.secret;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /metrics {
        playarr_metrics_export;
        playarr_metrics_auth off jwt;    # <-
    }
}
--- file jwt.secret
auth-modes-secret
--- emerg
invalid parameter "off"

=== nginx -t: bearer twice
--- http
playarr_metrics_zone playarr:1m;
playarr_metrics_token_file %%DIR%%/metrics.token;
playarr_metrics_jwt_secret_file %%DIR%%/jwt.secret;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /metrics {
        playarr_metrics_export;
        playarr_metrics_auth bearer bearer;    # <-
    }
}
--- file jwt.secret
auth-modes-secret
--- emerg
invalid parameter "bearer"

=== nginx -t: an unknown mode
--- http
playarr_metrics_zone playarr:1m;
playarr_metrics_token_file %%DIR%%/metrics.token;
playarr_metrics_jwt_secret_file %%DIR%%/jwt.secret;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /metrics {
        playarr_metrics_export;
        playarr_metrics_auth basic;    # <-
    }
}
--- file jwt.secret
auth-modes-secret
--- emerg
invalid parameter "basic"

=== nginx -t: an empty role
--- http
playarr_metrics_zone playarr:1m;
playarr_metrics_token_file %%DIR%%/metrics.token;
playarr_metrics_jwt_secret_file %%DIR%%/jwt.secret;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /metrics {
        playarr_metrics_export;
        playarr_metrics_auth jwt role=;    # <-
    }
}
--- file jwt.secret
auth-modes-secret
--- emerg
invalid parameter "role="

=== nginx -t: two roles
--- http
playarr_metrics_zone playarr:1m;
playarr_metrics_token_file %%DIR%%/metrics.token;
playarr_metrics_jwt_secret_file %%DIR%%/jwt.secret;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /metrics {
        playarr_metrics_export;
        playarr_metrics_auth jwt role=a role=b;    # <-
    }
}
--- file jwt.secret
auth-modes-secret
--- emerg
invalid parameter "role=b"
