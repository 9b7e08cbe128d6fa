#!/usr/bin/perl

# Configuration errors (docs/directives.md): every one is
# an [emerg] from `nginx -t`, with a non-zero exit, the exact message and
# the file and line of the directive; the few accepted edge cases start
# and serve /metrics.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use PlayarrTest;
use PlayarrTest::Blocks qw(run_blocks);

PlayarrTest::need_module();

# The refused configurations: the blocks of __DATA__ below, each an
# nginx -t that fails with exactly one [emerg], whose text is the block's
# --- emerg and which names the file and the line marked "# <-"; a file a
# block plants is left as it was (PlayarrTest::Blocks).
run_blocks();

# Accepted configurations: nginx -t passes, nginx starts, /metrics answers.
my @good = (
    { name => 'zone of exactly 8 pages (32k)',
      zone => 'm:32k', location => 'playarr_metrics_export;' },
    { name => 'explicit prometheus format',
      zone => 'm:1m', location => 'playarr_metrics_export prometheus;' },
    { name => 'json format accepted',
      zone => 'm:1m', location => 'playarr_metrics_export json;',
      no_scrape => 1 },
    { name => 'auth bearer explicit',
      zone => 'm:1m',
      location => 'playarr_metrics_export; playarr_metrics_auth bearer;' },
);

for my $c (@good) {
    my $t = PlayarrTest->new(http => <<"EOF");
    playarr_metrics_zone $c->{zone};
    playarr_metrics_token_file %%DIR%%/metrics.token;
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /metrics { $c->{location} }
    }
EOF

    my ($rc, $out) = $t->test_config;
    is($rc, 0, "$c->{name}: nginx -t passes") or diag($out);
    unlike($out, qr/\[(?:emerg|alert|crit|error)\]/, "$c->{name}: no error");

    $t->start;
    my $token = $t->read_token('metrics.token');
    if ($c->{no_scrape}) {
        is($t->get('/metrics', headers => { Authorization => "Bearer $token" })
           ->{status}, 200, "$c->{name}: 200");
    } else {
        $t->metrics(token => $token, name => $c->{name});
    }
    $t->stop;
}

# A group- or world-readable token file: [warn] naming it, but it works.
{
    my $t = PlayarrTest->new(http => <<'EOF');
    playarr_metrics_zone m:1m;
    playarr_metrics_token_file %%DIR%%/metrics.token;
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /metrics { playarr_metrics_export; }
    }
EOF
    my $token = '3f' x 32;
    $t->write_file('metrics.token', "$token\n", 0644);
    my $path = $t->path('metrics.token');

    my ($rc, $out) = $t->test_config;
    is($rc, 0, 'token file 0644: nginx -t passes') or diag($out);
    like($out, qr/\[warn\].*\Q$path\E/, 'token file 0644: nginx -t warns');

    $t->start;
    like($t->error_log_text, qr/\[warn\].*\Q$path\E/,
         'token file 0644: [warn] naming the file at start');
    unlike($t->error_log_text . $out, qr/\Q$token\E/,
           'token file 0644: the token is not logged');
    $t->metrics(token => $token, name => 'token file 0644');
    is($t->get('/metrics')->{status}, 401, 'token file 0644: still guarded');
    $t->stop;
}

# The module exports what nginx looks a dynamic module up by, and nothing
# else: its own functions cannot clash with another module's.  Names with
# a leading "_" are the toolchain's (_init, ASan's __odr_asan.*).
SKIP: {
    my @syms = `nm -D --defined-only @{[PlayarrTest::module_path()]} 2>&1`;
    skip "nm -D: $?", 1 if $?;
    my @names = sort map { /\s[A-Za-z]\s(\S+)$/ ? $1 : () } @syms;
    is_deeply([grep { !/^_/ } @names],
              [qw(ngx_module_names ngx_module_order ngx_modules)],
              'the module exports only ngx_modules and its two companions')
        or diag(join '', @syms);
}

done_testing;

__DATA__

=== zone below 8 pages (28k)
--- http
playarr_metrics_zone m:28k;    # <-
--- emerg
zone "m:28k" is too small, the minimum is 32768

=== zone of 4k
--- http
playarr_metrics_zone m:4k;    # <-
--- emerg
zone "m:4k" is too small, the minimum is 32768

=== zone without size
--- http
playarr_metrics_zone m;    # <-
--- emerg
invalid zone "m", expected NAME:SIZE

=== zone without name
--- http
playarr_metrics_zone :1m;    # <-
--- emerg
invalid zone ":1m", expected NAME:SIZE

=== zone with a bad size
--- http
playarr_metrics_zone m:lots;    # <-
--- emerg
invalid zone size "m:lots"

=== zone declared twice
--- http
playarr_metrics_zone a:1m;
playarr_metrics_zone b:1m;    # <-
--- emerg
"playarr_metrics_zone" directive is duplicate

=== same zone declared twice
--- http
playarr_metrics_zone a:1m;
playarr_metrics_zone a:1m;    # <-
--- emerg
"playarr_metrics_zone" directive is duplicate

=== zone in a server block
--- http
server {
    listen 127.0.0.1:%%PORT%%;
    playarr_metrics_zone m:1m;    # <-
}
--- emerg
"playarr_metrics_zone" directive is not allowed here

=== export without a zone
--- http
server {
    listen 127.0.0.1:%%PORT%%;
    location = /metrics {
        playarr_metrics_export;    # <-
        playarr_metrics_auth off;
    }
}
--- emerg
"playarr_metrics_export" directive needs a "playarr_metrics_zone"

=== token_file without a zone
--- http
playarr_metrics_token_file %%DIR%%/metrics.token;    # <-
--- emerg
"playarr_metrics_token_file" directive needs a "playarr_metrics_zone"

=== max_series without a zone
--- http
playarr_metrics_max_series 100;    # <-
--- emerg
"playarr_metrics_max_series" directive needs a "playarr_metrics_zone"

=== auth without a zone
--- http
server {
    listen 127.0.0.1:%%PORT%%;
    location / { playarr_metrics_auth off; }    # <-
}
--- emerg
"playarr_metrics_auth" directive needs a "playarr_metrics_zone"

=== export: unknown format
--- http
playarr_metrics_zone m:1m;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /metrics { playarr_metrics_export xml; }    # <-
}
--- emerg
invalid parameter "xml"

=== export: two formats
--- http
playarr_metrics_zone m:1m;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /metrics {
        playarr_metrics_export prometheus json;    # <-
    }
}
--- emerg
invalid number of arguments in "playarr_metrics_export" directive

=== export in a server block
--- http
playarr_metrics_zone m:1m;
server {
    listen 127.0.0.1:%%PORT%%;
    playarr_metrics_export;    # <-
}
--- emerg
"playarr_metrics_export" directive is not allowed here

=== auth: bad value
--- http
playarr_metrics_zone m:1m;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /metrics {
        playarr_metrics_export;
        playarr_metrics_auth maybe;    # <-
    }
}
--- emerg
invalid parameter "maybe"

=== auth: basic is not a value
--- http
playarr_metrics_zone m:1m;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /metrics {
        playarr_metrics_export;
        playarr_metrics_auth basic;    # <-
    }
}
--- emerg
invalid parameter "basic"

=== token file is a directory (unreadable)
--- http
playarr_metrics_zone m:1m;
playarr_metrics_token_file %%DIR%%/metrics.token;    # <-
--- mkdir metrics.token
--- emerg
playarr_metrics_token_file "%%DIR%%/metrics.token" is not a regular file

=== token file empty
--- http
playarr_metrics_zone m:1m;
playarr_metrics_token_file %%DIR%%/metrics.token;    # <-
--- file metrics.token eval
""
--- emerg
playarr_metrics_token_file "%%DIR%%/metrics.token" is empty

=== token file only whitespace
--- http
playarr_metrics_zone m:1m;
playarr_metrics_token_file %%DIR%%/metrics.token;    # <-
--- file metrics.token eval
" \n\t \n"
--- emerg
playarr_metrics_token_file "%%DIR%%/metrics.token" is empty

=== token file with a control byte
--- http
playarr_metrics_zone m:1m;
playarr_metrics_token_file %%DIR%%/metrics.token;    # <-
--- file metrics.token eval
"abc\x01def\n"
--- emerg
playarr_metrics_token_file "%%DIR%%/metrics.token" contains characters other than printable ASCII

=== token file with a NUL byte
--- http
playarr_metrics_zone m:1m;
playarr_metrics_token_file %%DIR%%/metrics.token;    # <-
--- file metrics.token eval
"abc\x00def"
--- emerg
playarr_metrics_token_file "%%DIR%%/metrics.token" contains characters other than printable ASCII

=== token file with bytes >= 0x80
--- http
playarr_metrics_zone m:1m;
playarr_metrics_token_file %%DIR%%/metrics.token;    # <-
--- file metrics.token eval
"abc\xc3\xa9def"
--- emerg
playarr_metrics_token_file "%%DIR%%/metrics.token" contains characters other than printable ASCII

=== token file with inner space
--- http
playarr_metrics_zone m:1m;
playarr_metrics_token_file %%DIR%%/metrics.token;    # <-
--- file metrics.token eval
"abc def\n"
--- emerg
playarr_metrics_token_file "%%DIR%%/metrics.token" contains characters other than printable ASCII

=== token file in a missing directory
--- http
playarr_metrics_zone m:1m;
playarr_metrics_token_file %%DIR%%/none/metrics.token;    # <-
--- emerg
open() "%%DIR%%/none/metrics.token" failed (2: No such file or directory)

=== state file: interval below 1s
--- http
playarr_metrics_zone m:1m;
playarr_metrics_state_file %%DIR%%/s interval=500ms;    # <-
--- emerg
invalid interval "interval=500ms", at least 1s

=== state file: unknown parameter
--- http
playarr_metrics_zone m:1m;
playarr_metrics_state_file %%DIR%%/s every=5s;    # <-
--- emerg
invalid parameter "every=5s"

=== state file twice
--- http
playarr_metrics_zone m:1m;
playarr_metrics_state_file %%DIR%%/s;
playarr_metrics_state_file %%DIR%%/t;    # <-
--- emerg
"playarr_metrics_state_file" directive is duplicate

=== state file without a zone
--- http
playarr_metrics_state_file %%DIR%%/s;    # <-
--- emerg
"playarr_metrics_state_file" directive needs a "playarr_metrics_zone"
