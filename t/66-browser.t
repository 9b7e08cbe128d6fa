#!/usr/bin/perl

# Playarr's UI, unmodified, behind the README's configuration
# (docs/app-integration.md): a page of the project's own
# (t/browser/playarr-ui.html) makes the calls Playarr's UI makes (fetch
# /metrics/json with credentials: 'include', GET /api/settings/metrics, POST
# .../regenerate; a session cookie, no Bearer), in Debian's chromium driven by
# puppeteer-core (t/browser/drive.js), as a logged-out visitor, a plain user
# and an admin; then a page of another origin posts a form to regenerate with
# the admin's cookie.  The nginx runs docs/examples/nginx.conf itself, in front
# of a stand-in Playarr that serves the page and logs users in with a session
# signed by its JWT_SECRET_KEY.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use Test::More;
use PlayarrTest;

PlayarrTest::need_module();

my $REPO = PlayarrTest::repo();
my $CHROMIUM = $ENV{PLAYARR_CHROMIUM} || '/usr/bin/chromium';
my $DRIVER = "$REPO/t/browser/drive.js";

# make test installs both (make deps, make browser-deps)
BAIL_OUT("no $CHROMIUM: make deps installs Debian's chromium")
    unless -x $CHROMIUM;
BAIL_OUT('no puppeteer-core in t/browser/node_modules: make browser-deps')
    unless -d "$REPO/t/browser/node_modules/puppeteer-core";

my $SECRET = 'browser-test-secret';
my $later = time + 3600;
my %session = (
    admin => PlayarrTest::session_jwt($SECRET, { sub => 'ada',
                                                 role => 'admin',
                                                 exp => $later }),
    user => PlayarrTest::session_jwt($SECRET, { sub => 'bob',
                                                role => 'user',
                                                exp => $later }),
);

my ($ex, $changes) = PlayarrTest::example_http();

ok($_->[1], "the example has $_->[0]") for @$changes;

my $login = join '', map { <<"EOF" } sort keys %session;
        location = /api/auth/login/$_ {
            add_header Set-Cookie
                "access_token=$session{$_}; Path=/; HttpOnly; SameSite=Lax";
            return 200 "logged in\\n";
        }
EOF

my $t = PlayarrTest->new(http => $ex->{http} . <<"EOF");

    # the stand-in Playarr: the UI's page, its login and logout, and
    # "upstream" for the rest
    server {
        listen 127.0.0.1:%%PORT2%%;
        playarr_metrics off;
        default_type text/plain;

        location /ui/ {
            alias %%DIR%%/ui/;
        }
$login
        # Playarr's own prom-client registry, which the merge of the
        # README's /metrics/json fetches with the user's session cookie
        location = /metrics/json {
            if (\$http_cookie !~ "access_token=") {
                return 401 '{"error":"Authentication required"}';
            }
            default_type application/json;
            return 200 '[{"name":"playarr_titles_total","help":"Titles.","type":"gauge","values":[{"value":42,"labels":{"type":"movies"}}],"aggregator":"sum"}]';
        }

        location = /api/auth/logout {
            add_header Set-Cookie
                "access_token=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax";
            return 200 "logged out\\n";
        }

        location / {
            return 200 "upstream\\n";
        }
    }

    # another site
    server {
        listen 127.0.0.1:%%PORT3%%;
        playarr_metrics off;
        root %%DIR%%/cross;
    }
EOF

my $base = 'http://127.0.0.1:' . $t->port;
my $cross = 'http://127.0.0.1:' . $t->port(3);

mkdir $t->path($_) or die "mkdir: $!" for qw(ui cross);
$t->worker_dir('tok');

$t->write_file('ui/playarr-ui.html',
               PlayarrTest->read_file("$REPO/t/browser/playarr-ui.html"));
$t->write_file('cross/cross-site.html',
               PlayarrTest->read_file("$REPO/t/browser/cross-site.html")
               =~ s/TARGET/$base/r);
$t->write_file('jwt.secret', "$SECRET\n", 0600);
$t->write_file('app-token.conf',
               "proxy_set_header Authorization \"Bearer app-token\";\n",
               0600);

$t->start;

my $TOKEN = 'tok/playarr-metrics.token';
my $first = $t->read_token($TOKEN);
like($first, qr/^[0-9a-f]{64}$/, 'the token file was created');

my $out = `'$^X' -e 'alarm 120; exec \@ARGV' node '$DRIVER' '$CHROMIUM' '$base' '$cross' 2>&1`;
is($?, 0, 'the browser ran') or diag($out);

my %run;
for my $line (split /\n/, $out) {
    my $j = eval { decode_json($line) } or next;
    $run{ $j->{who} } = $j;
}

# --- logged out --------------------------------------------------------------

for my $who ('logged out', 'logged out again') {
    my $r = $run{$who}{results} || {};

    is($r->{json}{status}, 401, "$who: /metrics/json 401");
    is_deeply($r->{json}{body}, { error => 'Authentication required' },
              "$who: /metrics/json, Playarr's error");
    is($r->{token}{status}, 401, "$who: the token page 401");
    is($r->{regenerate}{status}, 401, "$who: regenerate 401");
    is($run{$who}{shown}{token}, '', "$who: no token shown");
    like($run{$who}{shown}{error}, qr/^Authentication required/,
         "$who: the page shows Playarr's error");
}

# --- a plain user --------------------------------------------------------------

{
    my $u = $run{user} || {};
    my $r = $u->{results} || {};

    ok((grep { $_->{name} eq 'access_token' && $_->{httpOnly} }
        @{ $u->{cookies} || [] }),
       'user: the httpOnly session cookie is set');
    is($r->{json}{status}, 200, 'user: /metrics/json 200');
    like($r->{json}{type} // '', qr{^application/json}, 'user: JSON');
    is(ref $r->{json}{body}, 'ARRAY', 'user: the prom-client array');
    ok($u->{shown}{requests} > 0,
       "user: the page shows the requests ($u->{shown}{requests})");

    # Playarr's own families, merged from its /metrics/json
    my ($app) = grep { $_->{name} eq 'playarr_titles_total' }
                @{ ref $r->{json}{body} eq 'ARRAY' ? $r->{json}{body} : [] };
    is($app && $app->{values}[0]{value}, 42,
       'user: Playarr\'s own family, merged');
    my ($up) = grep { $_->{name} eq 'playarr_metrics_merge_up' }
               @{ ref $r->{json}{body} eq 'ARRAY' ? $r->{json}{body} : [] };
    is($up && $up->{values}[0]{value}, 1, 'user: merge_up 1');
    is($r->{token}{status}, 403, 'user: the token page 403');
    is_deeply($r->{token}{body}, { error => 'Admin access required' },
              'user: the token page, Playarr\'s error');
    is($r->{regenerate}{status}, 403, 'user: regenerate 403');
    is($u->{shown}{token}, '', 'user: no token shown');
}

# --- an admin ---------------------------------------------------------------------

{
    my $a = $run{admin} || {};
    my $r = $a->{results} || {};

    is($r->{json}{status}, 200, 'admin: /metrics/json 200');
    is($r->{token}{status}, 200, 'admin: the token page 200');
    is($r->{token}{body}{value}, $first, 'admin: it shows the file\'s token');
    is($r->{regenerate}{status}, 200, 'admin: regenerate 200');

    my $new = $r->{regenerate}{body}{value} // '';

    like($new, qr/^[0-9a-f]{64}$/, 'admin: a new token');
    isnt($new, $first, 'admin: not the old one');
    is($a->{shown}{token}, $new, 'admin: the page shows the new token');
    is($a->{shown}{error}, '', 'admin: no error shown');

    # the cross-site form, with the admin's cookie
    my $c = $run{'cross-site'} || {};
    is($c->{first}, 403, 'cross-site form: 403');
    like($c->{body} // '', qr/Cross-origin request refused/,
         'cross-site form: refused, in the module\'s words');
    is($t->read_token($TOKEN), $new,
       'cross-site form: the token is still the admin\'s new one');

    my @regen2 = $t->error_log_text =~ /regenerated, client/g;
    is(scalar @regen2, 1, 'regenerated once in all: the admin\'s');

    my $m = $t->metrics(token => $new, name => 'after the browser');
    my $reqs = PlayarrTest::parse_metrics($m);
    for my $who (qw(ada bob)) {
        ok((grep { /^playarr_http_requests_total\{.*username="$who"/ }
            keys %$reqs),
           "the requests of ${who}'s session are counted for $who");
    }
}

$t->stop;

done_testing;
