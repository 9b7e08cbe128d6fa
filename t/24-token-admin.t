#!/usr/bin/perl

# playarr_metrics_token_admin (docs/directives.md): Playarr's
# Settings > Metrics page.  GET shows the token, POST writes a new one
# atomically (temporary file + rename, mode 0600) and returns it; the old
# token is refused at once by every worker.  The location is guarded by
# the Bearer token by default, or by nginx's own access control with
# playarr_metrics_auth off.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use PlayarrTest qw(bearer);

PlayarrTest::need_module();

my $t = PlayarrTest->new(http => <<'EOF');
    playarr_metrics_zone playarr:1m;
    playarr_metrics_token_file %%DIR%%/tok/metrics.token;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        server_name localhost;
        add_header X-Worker-Pid $pid always;

        location = /metrics { playarr_metrics_export; }

        # guarded by the token itself
        location = /api/settings/metrics { playarr_metrics_token_admin; }
        location = /api/settings/metrics/regenerate {
            playarr_metrics_token_admin;
        }

        # guarded by nginx
        location = /admin/allowed {
            playarr_metrics_token_admin;
            playarr_metrics_auth off;
            allow 127.0.0.1;
            deny all;
        }
        location = /admin/denied {
            playarr_metrics_token_admin;
            playarr_metrics_auth off;
            deny all;
        }
        location = /admin/authreq {
            playarr_metrics_token_admin;
            playarr_metrics_auth off;
            auth_request /_check;
        }
        location = /_check {
            internal;
            if ($http_x_admin = "yes") {
                return 204;
            }
            return 401;
        }
    }
EOF

# the workers write the new token next to the old one: the directory is
# theirs
my ($uid) = $t->worker_ids;
my $TOKDIR = $t->worker_dir('tok', 0700);

my $FILE = "$TOKDIR/metrics.token";
my $ADMIN = '/api/settings/metrics';
my $REGEN = '/api/settings/metrics/regenerate';
my @all_tokens;

$t->start;


sub file_token {
    my $s = $t->read_file($FILE) // '';
    $s =~ s/^\s+|\s+$//g;
    return $s;
}

sub json_value {
    my ($r, $name) = @_;
    my $j = PlayarrTest::json_body($r);

    is(PlayarrTest::header($r, 'Content-Type'), 'application/json',
       "$name: application/json");
    is(PlayarrTest::header($r, 'Cache-Control'), 'no-store',
       "$name: Cache-Control: no-store");
    is_deeply([ sort keys %{ $j || {} } ], ['value'], "$name: {\"value\"}")
        or diag($r->{body});

    return $j ? $j->{value} : undef;
}

sub file_ok {
    my ($name) = @_;
    my @st = stat $FILE;

    is(sprintf('%04o', $st[2] & 07777), '0600', "$name: file mode 0600");
    is($st[4], $uid, "$name: owned by the worker user");

    opendir my $dh, $TOKDIR or die "opendir $TOKDIR: $!";
    my @stray = grep { !/^\.\.?$/ && $_ ne 'metrics.token' } readdir $dh;
    closedir $dh;
    is_deeply(\@stray, [], "$name: no temporary file left");

    return $st[1];
}


# --- view ---

my $token = file_token();
like($token, qr/\A[0-9a-f]{64}\z/, 'a token was created at start');
push @all_tokens, $token;

{
    my $r = $t->get($ADMIN, headers => bearer($token));
    is($r->{status}, 200, 'GET: 200');
    is(json_value($r, 'GET'), $token, 'GET: the token in the file');

    $r = $t->head($ADMIN, headers => bearer($token));
    is($r->{status}, 200, 'HEAD: 200');
    is($r->{body}, '', 'HEAD: no body');

    $r = $t->get($ADMIN);
    is($r->{status}, 401, 'GET without a token: 401');
    like(PlayarrTest::header($r, 'WWW-Authenticate') // '',
         qr/^Bearer realm="playarr-metrics"/, 'GET without a token: challenge');
    unlike($r->{raw}, qr/\Q$token\E/, 'GET without a token: token not shown');

    $r = $t->get($ADMIN, headers => bearer('0' x 64));
    is($r->{status}, 401, 'GET with a wrong token: 401');
    unlike($r->{raw}, qr/\Q$token\E/, 'GET with a wrong token: not shown');

    for my $m (qw(PUT DELETE PATCH OPTIONS)) {
        $r = $t->request($m, $ADMIN, headers => bearer($token),
                         body => $m eq 'OPTIONS' ? undef : '{}');
        is($r->{status}, 405, "$m: 405");
        is(PlayarrTest::header($r, 'Allow'), 'GET, HEAD, POST', "$m: Allow");
        unlike($r->{raw}, qr/\Q$token\E/, "$m: token not shown");
    }

    # a POST without the token changes nothing
    $r = $t->request('POST', $REGEN, headers => bearer('0' x 64));
    is($r->{status}, 401, 'POST with a wrong token: 401');
    is(file_token(), $token, 'POST with a wrong token: file unchanged');
}


# --- regenerate ---

my $ino = (stat $FILE)[1];

for my $round (1 .. 4) {
    my $name = "regenerate $round";
    my $old = $token;
    my $r = $t->request('POST', $REGEN, headers => [
                            @{ bearer($old) },
                            'Content-Type' => 'application/json' ],
                        body => '{}');

    is($r->{status}, 200, "$name: 200") or diag($r->{raw});
    $token = json_value($r, $name) // '';
    like($token, qr/\A[0-9a-f]{64}\z/, "$name: 64 hex characters");
    ok(!grep({ $_ eq $token } @all_tokens), "$name: a token never seen");
    push @all_tokens, $token;

    is(file_token(), $token, "$name: written to the file");
    like($t->read_file($FILE), qr/\A[0-9a-f]{64}\n?\z/,
         "$name: the file holds the token alone");
    my $new_ino = file_ok($name);
    isnt($new_ino, $ino, "$name: a new file renamed over the old one");
    $ino = $new_ino;

    # at once, in both workers
    $t->all_workers_answer(401, "$name: old token",
                           token => $old, promtool => 1);
    $t->all_workers_answer(200, "$name: new token",
                           token => $token, promtool => 1);

    my ($resp, $seen, $all) = $t->hit_all_workers(sub {
        $t->get($ADMIN, headers => bearer($token));
    });
    ok($all && !grep({ ($_->{body} // '') ne "{\"value\":\"$token\"}" }
                     @$resp),
       "$name: GET shows the new token in both workers")
        or diag(join "\n", map { $_->{body} } @$resp);
}

is(scalar(() = $t->error_log_text =~ /regenerated/g), 4,
   'every regeneration logged');


# --- nginx's own access control, playarr_metrics_auth off ---

{
    my $r = $t->get('/admin/allowed');
    is($r->{status}, 200, 'allow: GET without a token: 200');
    is(json_value($r, 'allow: GET'), $token, 'allow: the token');

    $r = $t->get('/admin/denied', headers => bearer($token));
    is($r->{status}, 403, 'deny all: 403, even with the token');
    unlike($r->{raw}, qr/\Q$token\E/, 'deny all: token not shown');

    $r = $t->request('POST', '/admin/denied');
    is($r->{status}, 403, 'deny all: POST 403');
    is(file_token(), $token, 'deny all: the token did not change');

    $r = $t->get('/admin/authreq');
    is($r->{status}, 401, 'auth_request refuses: 401');
    unlike($r->{raw}, qr/\Q$token\E/, 'auth_request refuses: not shown');

    $r = $t->get('/admin/authreq', headers => [ 'X-Admin' => 'yes' ]);
    is($r->{status}, 200, 'auth_request allows: 200');
    is(json_value($r, 'auth_request: GET'), $token, 'auth_request: the token');

    my $old = $token;
    $r = $t->request('POST', '/admin/allowed');
    is($r->{status}, 200, 'allow: POST regenerates');
    $token = json_value($r, 'allow: POST') // '';
    isnt($token, $old, 'allow: a new token');
    is(file_token(), $token, 'allow: written');
    push @all_tokens, $token;
    file_ok('allow: POST');
    $t->all_workers_answer(401, 'allow: old token',
                           token => $old, promtool => 1);
    $t->all_workers_answer(200, 'allow: new token',
                           token => $token, promtool => 1);
}


# --- a token written by someone else is what GET shows ---

{
    my $old = $token;
    $token = 'e' x 64;
    $t->write_secret('tok/metrics.token', "$token\n", rename => 1);
    push @all_tokens, $token;

    my ($resp, $seen, $all) = $t->hit_all_workers(sub {
        $t->get('/admin/allowed');
    });
    ok($all && !grep({ ($_->{body} // '') ne "{\"value\":\"$token\"}" }
                     @$resp),
       'external rotation: GET shows the new token in both workers')
        or diag(join "\n", map { $_->{body} } @$resp);
    $t->all_workers_answer(401, 'external rotation: old token',
                           token => $old, promtool => 1);
}


# --- a directory the workers cannot write: 500, nothing changes ---

{
    chmod 0500, $TOKDIR or die "chmod $TOKDIR: $!";

    my $r = $t->request('POST', $REGEN, headers => bearer($token));
    is($r->{status}, 500, 'read-only directory: 500');
    is_deeply(PlayarrTest::json_body($r),
              { error => 'Could not write a new metrics token' },
              'read-only directory: JSON error');
    unlike($r->{raw}, qr/[0-9a-f]{64}/, 'read-only directory: no token shown');
    is(file_token(), $token, 'read-only directory: file unchanged');
    $t->all_workers_answer(200, 'read-only directory: the token still works',
                           token => $token, promtool => 1);
    like($t->error_log_text,
         qr/\[error\].*\Q$TOKDIR\E\/metrics\.token\.[0-9a-f]+" failed/,
         'read-only directory: the failure is logged');

    chmod 0700, $TOKDIR or die "chmod $TOKDIR: $!";
}


# --- a reload keeps the regenerated token ---

{
    my $r = $t->request('POST', $REGEN, headers => bearer($token));
    my $old = $token;
    $token = json_value($r, 'before reload') // '';
    push @all_tokens, $token;

    $t->reload;

    $t->all_workers_answer(200, 'after reload: the regenerated token',
                           token => $token, promtool => 1);
    $t->all_workers_answer(401, 'after reload: the one before',
                           token => $old, promtool => 1);
}

$t->stop;

for my $f (qw(error.log access.log)) {
    my $text = $t->read_file($f) // '';
    ok(!grep({ index($text, $_) >= 0 } @all_tokens),
       "no token in $f");
}


# --- nothing to administer without a token file, auth or not ---

for my $auth ('', ' playarr_metrics_auth off;') {
    my $c = PlayarrTest->new(http => <<"EOF");
    playarr_metrics_zone playarr:1m;

    server {
        listen 127.0.0.1:%%PORT%%;
        location = /api/settings/metrics {
            playarr_metrics_token_admin;$auth
        }
    }
EOF

    my $name = 'token admin without a token file' . ($auth ? ', auth off' : '');
    my ($rc, $out) = $c->test_config;
    my @emerg = grep { /\[emerg\]/ } split /\n/, $out;
    my $conf = $c->conf_file;

    isnt($rc, 0, "$name: nginx -t fails");
    is(scalar @emerg, 1, "$name: one [emerg]") or diag($out);
    like($emerg[0] // '', qr/"playarr_metrics_token_file".* in \Q$conf\E:\d+$/,
         "$name: names playarr_metrics_token_file, file and line")
        or diag($out);
}

done_testing;
