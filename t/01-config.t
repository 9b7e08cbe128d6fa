#!/usr/bin/perl

# Configuration errors (issue 2, DESIGN.md sections 3 and 6): every one is
# an [emerg] from `nginx -t`, with a non-zero exit and the file and line of
# the directive; the few accepted edge cases start and serve /metrics.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use PlayarrTest;

PlayarrTest::need_module();

# A case: name, http text, optional files to create first, the line that
# the message must point at (a regex matched against the generated
# nginx.conf: the first matching line, or the last one with at_last), and a
# regex for the message itself.
my @bad = (
    { name => 'zone below 8 pages (28k)',
      http => "playarr_metrics_zone m:28k;\n",
      at => qr/playarr_metrics_zone/, msg => qr/\bm\b|28k|small|size/i },
    { name => 'zone of 4k',
      http => "playarr_metrics_zone m:4k;\n",
      at => qr/playarr_metrics_zone/, msg => qr/\bm\b|4k|small|size/i },
    { name => 'zone without size',
      http => "playarr_metrics_zone m;\n",
      at => qr/playarr_metrics_zone/, msg => qr/invalid|"m"/ },
    { name => 'zone without name',
      http => "playarr_metrics_zone :1m;\n",
      at => qr/playarr_metrics_zone/, msg => qr/invalid|name/ },
    { name => 'zone with a bad size',
      http => "playarr_metrics_zone m:lots;\n",
      at => qr/playarr_metrics_zone/, msg => qr/invalid|lots/ },
    { name => 'zone declared twice',
      http => "playarr_metrics_zone a:1m;\n    playarr_metrics_zone b:1m;\n",
      at => qr/playarr_metrics_zone b:/, msg => qr/duplicate/ },
    { name => 'same zone declared twice',
      http => "playarr_metrics_zone a:1m;\n    playarr_metrics_zone a:1m;\n",
      at => qr/playarr_metrics_zone a:/, at_last => 1, msg => qr/duplicate/ },
    { name => 'zone in a server block',
      http => "server {\n        listen 127.0.0.1:%%PORT%%;\n"
              . "        playarr_metrics_zone m:1m;\n    }\n",
      at => qr/playarr_metrics_zone/, msg => qr/not allowed here/ },
    { name => 'export without a zone',
      http => "server {\n        listen 127.0.0.1:%%PORT%%;\n"
              . "        location = /metrics {\n"
              . "            playarr_metrics_export;\n"
              . "            playarr_metrics_auth off;\n"
              . "        }\n    }\n",
      at => qr/playarr_metrics_export/, msg => qr/zone/ },
    { name => 'token_file without a zone',
      http => "playarr_metrics_token_file %%DIR%%/metrics.token;\n",
      at => qr/playarr_metrics_token_file/, msg => qr/zone/ },
    { name => 'max_series without a zone',
      http => "playarr_metrics_max_series 100;\n",
      at => qr/playarr_metrics_max_series/, msg => qr/zone/ },
    { name => 'auth without a zone',
      http => "server {\n        listen 127.0.0.1:%%PORT%%;\n"
              . "        location / { playarr_metrics_auth off; }\n    }\n",
      at => qr/playarr_metrics_auth/, msg => qr/zone/ },
    { name => 'export: unknown format',
      http => "playarr_metrics_zone m:1m;\n"
              . "    server {\n        listen 127.0.0.1:%%PORT%%;\n"
              . "        location = /metrics { playarr_metrics_export xml; }\n"
              . "    }\n",
      at => qr/playarr_metrics_export/, msg => qr/"xml"/ },
    { name => 'export: two formats',
      http => "playarr_metrics_zone m:1m;\n"
              . "    server {\n        listen 127.0.0.1:%%PORT%%;\n"
              . "        location = /metrics {\n"
              . "            playarr_metrics_export prometheus json;\n"
              . "        }\n    }\n",
      at => qr/playarr_metrics_export/,
      msg => qr/invalid number of arguments|"json"/ },
    { name => 'export in a server block',
      http => "playarr_metrics_zone m:1m;\n"
              . "    server {\n        listen 127.0.0.1:%%PORT%%;\n"
              . "        playarr_metrics_export;\n    }\n",
      at => qr/playarr_metrics_export/, msg => qr/not allowed here/ },
    { name => 'auth: bad value',
      http => "playarr_metrics_zone m:1m;\n"
              . "    server {\n        listen 127.0.0.1:%%PORT%%;\n"
              . "        location = /metrics {\n"
              . "            playarr_metrics_export;\n"
              . "            playarr_metrics_auth maybe;\n"
              . "        }\n    }\n",
      at => qr/playarr_metrics_auth/, msg => qr/"maybe"/ },
    { name => 'auth: basic is not a value',
      http => "playarr_metrics_zone m:1m;\n"
              . "    server {\n        listen 127.0.0.1:%%PORT%%;\n"
              . "        location = /metrics {\n"
              . "            playarr_metrics_export;\n"
              . "            playarr_metrics_auth basic;\n"
              . "        }\n    }\n",
      at => qr/playarr_metrics_auth/, msg => qr/"basic"/ },
    { name => 'token file is a directory (unreadable)',
      mkdir => 'metrics.token',
      http => "playarr_metrics_zone m:1m;\n"
              . "    playarr_metrics_token_file %%DIR%%/metrics.token;\n",
      at => qr/playarr_metrics_token_file/, msg => qr/metrics\.token/ },
    { name => 'token file empty',
      files => { 'metrics.token' => '' },
      http => "playarr_metrics_zone m:1m;\n"
              . "    playarr_metrics_token_file %%DIR%%/metrics.token;\n",
      at => qr/playarr_metrics_token_file/, msg => qr/metrics\.token/ },
    { name => 'token file only whitespace',
      files => { 'metrics.token' => " \n\t \n" },
      http => "playarr_metrics_zone m:1m;\n"
              . "    playarr_metrics_token_file %%DIR%%/metrics.token;\n",
      at => qr/playarr_metrics_token_file/, msg => qr/metrics\.token/ },
    { name => 'token file with a control byte',
      files => { 'metrics.token' => "abc\x01def\n" },
      http => "playarr_metrics_zone m:1m;\n"
              . "    playarr_metrics_token_file %%DIR%%/metrics.token;\n",
      at => qr/playarr_metrics_token_file/, msg => qr/metrics\.token/ },
    { name => 'token file with a NUL byte',
      files => { 'metrics.token' => "abc\x00def" },
      http => "playarr_metrics_zone m:1m;\n"
              . "    playarr_metrics_token_file %%DIR%%/metrics.token;\n",
      at => qr/playarr_metrics_token_file/, msg => qr/metrics\.token/ },
    { name => 'token file with bytes >= 0x80',
      files => { 'metrics.token' => "abc\xc3\xa9def" },
      http => "playarr_metrics_zone m:1m;\n"
              . "    playarr_metrics_token_file %%DIR%%/metrics.token;\n",
      at => qr/playarr_metrics_token_file/, msg => qr/metrics\.token/ },
    { name => 'token file with inner space',
      files => { 'metrics.token' => "abc def\n" },
      http => "playarr_metrics_zone m:1m;\n"
              . "    playarr_metrics_token_file %%DIR%%/metrics.token;\n",
      at => qr/playarr_metrics_token_file/, msg => qr/metrics\.token/ },
    { name => 'token file in a missing directory',
      http => "playarr_metrics_zone m:1m;\n"
              . "    playarr_metrics_token_file %%DIR%%/none/metrics.token;\n",
      at => qr/playarr_metrics_token_file/, msg => qr/none\/metrics\.token/ },
    { name => 'state file: interval below 1s',
      http => "playarr_metrics_zone m:1m;\n"
              . "    playarr_metrics_state_file %%DIR%%/s interval=500ms;\n",
      at => qr/playarr_metrics_state_file/,
      msg => qr/invalid interval "interval=500ms", at least 1s/ },
    { name => 'state file: unknown parameter',
      http => "playarr_metrics_zone m:1m;\n"
              . "    playarr_metrics_state_file %%DIR%%/s every=5s;\n",
      at => qr/playarr_metrics_state_file/,
      msg => qr/invalid parameter "every=5s"/ },
    { name => 'state file twice',
      http => "playarr_metrics_zone m:1m;\n"
              . "    playarr_metrics_state_file %%DIR%%/s;\n"
              . "    playarr_metrics_state_file %%DIR%%/t;\n",
      at => qr/playarr_metrics_state_file %%DIR%%\/t|state_file \S+\/t;/,
      msg => qr/duplicate/ },
    { name => 'state file without a zone',
      http => "playarr_metrics_state_file %%DIR%%/s;\n",
      at => qr/playarr_metrics_state_file/, msg => qr/zone/ },
);

for my $c (@bad) {
    my $t = PlayarrTest->new(http => $c->{http});

    mkdir $t->path($c->{mkdir}) if $c->{mkdir};
    $t->write_file($_, $c->{files}{$_}, 0600) for keys %{ $c->{files} || {} };

    my $line = $t->conf_line($c->{at});

    if ($c->{at_last}) {
        my @l = split /\n/, $t->conf_text;
        ($line) = reverse grep { $l[$_ - 1] =~ $c->{at} } 1 .. @l;
    }

    my ($rc, $out) = $t->test_config;
    my $conf = $t->conf_file;
    my @emerg = grep { /\[emerg\]/ } split /\n/, $out;

    isnt($rc, 0, "$c->{name}: nginx -t fails");
    is(scalar @emerg, 1, "$c->{name}: one [emerg]") or diag($out);
    like($emerg[0] // '', qr/ in \Q$conf\E:$line$/,
         "$c->{name}: names $conf:$line")
        or diag($out);
    like($emerg[0] // '', $c->{msg}, "$c->{name}: message")
        or diag($out);
    like($out, qr/test failed/, "$c->{name}: test failed");

    if ($c->{files} && exists $c->{files}{'metrics.token'}) {
        is($t->read_file('metrics.token'), $c->{files}{'metrics.token'},
           "$c->{name}: the bad token file is left alone");
    }
}

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
