#!/usr/bin/perl

# The Debian package.  `make deb` builds
# build/libnginx-mod-http-playarr-metrics_<version>_<arch>.deb (a package
# newer than every file it is made from is reused; PLAYARR_DEB= names
# another).  Its control data: the module's version, the exact nginx ABI.
# `dpkg -i` installs it into this machine: the module in
# /usr/lib/nginx/modules/, its load file in
# /usr/share/nginx/modules-available/ enabled by a link in
# /etc/nginx/modules-enabled/, as Debian's own libnginx-mod-* packages do;
# Debian's nginx accepts the system configuration with it (`nginx -t`); a
# private nginx that loads it through modules-enabled runs the packaged
# example site, with the packaged routes and metric catalog, in front of a
# stand-in Playarr.  `dpkg -r` disables it (Debian keeps a .removed link),
# `dpkg --purge` removes every trace.  Needs root (CI runs as root).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Fcntl qw(:flock);
use File::Find;
use JSON::PP;
use Test::More;
use Time::HiRes qw(sleep time);
use PlayarrTest;

my $PKG = 'libnginx-mod-http-playarr-metrics';
my $REPO = PlayarrTest::repo();
my $SO = '/usr/lib/nginx/modules/ngx_http_playarr_metrics_module.so';
my $CONF = '/usr/share/nginx/modules-available/mod-http-playarr-metrics.conf';
my $LINK = '/etc/nginx/modules-enabled/50-mod-http-playarr-metrics.conf';
my $DOC = "/usr/share/doc/$PKG";
my $NGINX = '/usr/sbin/nginx';

PlayarrTest::need_all('installs a Debian package into this machine');

# the package is for Debian's nginx, whatever NGINX_BIN says
$ENV{NGINX_BIN} = $NGINX;
my $ABI_FILE = '/usr/share/nginx/src/debian/libnginx-mod.abisubstvars';

plan skip_all => 'needs root: the package is installed into this machine'
    unless $> == 0;
plan skip_all => 'not Debian (no dpkg)' unless -x '/usr/bin/dpkg';

sub run {
    my $out = `@_ 2>&1`;
    return ($? >> 8, $out);
}

# one run at a time on this machine: another one would build into the
# same build/deb/ and install or purge the same package
my $LOCK = '/tmp/playarr-metrics-deb-test.lock';

open my $lock, '>>', $LOCK or die "$LOCK: $!";

my $waited = time;
until (flock $lock, LOCK_EX | LOCK_NB) {
    plan skip_all => "another run of this test holds $LOCK"
        if time - $waited > 240;
    sleep 1;
}

sub installed {
    my (undef, $out) = run("dpkg-query -W -f='\${db:Status-Abbrev}' $PKG");
    return $out =~ /^[ih]i/ ? 'installed' : $out =~ /^.c/ ? 'config-files'
        : '';
}

plan skip_all => "$PKG is already installed here: the test would remove it"
    . " (dpkg --purge $PKG to run it)"
    if installed();
plan skip_all => "$SO exists, not from the package: the test would remove it"
    if -e $SO;

my $started = time;

my ($VERSION) = do {
    open my $fh, '<', "$REPO/ngx_http_playarr_metrics_module/"
        . 'ngx_http_playarr_metrics_module.h' or die $!;
    local $/;
    <$fh> =~ /#define\s+NGX_HTTP_PLAYARR_METRICS_VERSION\s+"([^"]+)"/;
};
my (undef, $ARCH) = run('dpkg --print-architecture');
chomp $ARCH;

my $deb = $ENV{PLAYARR_DEB} || "$REPO/build/${PKG}_${VERSION}_$ARCH.deb";


# --- build (or reuse) --------------------------------------------------------

# everything the package is made from
my $newest = 0;
my $newest_file = '';

find({ no_chdir => 1, wanted => sub {
    return unless -f $_;
    my $m = (stat _)[9];
    ($newest, $newest_file) = ($m, $_) if $m > $newest;
} }, grep { -e } map { "$REPO/$_" }
    qw(config Makefile README.md ngx_http_playarr_metrics_module shm debian
       docs));

if ($ENV{PLAYARR_DEB}) {
    ok(-f $deb, "PLAYARR_DEB=$deb");
} elsif (-f $deb && (stat $deb)[9] > $newest) {
    pass("reusing $deb (newer than its sources)");
} else {
    diag("building $deb ($newest_file is newer)") if -f $deb;
    my $t0 = time;
    my ($rc, $out) = run("make -C $REPO deb");

    is($rc, 0, 'make deb') or diag($out);
    diag(sprintf 'make deb: %.1fs', time - $t0);
}

ok(-f $deb, "$deb exists") or BAIL_OUT('no package');


# --- what is in it -----------------------------------------------------------

my %field;
for my $f (qw(Package Version Architecture Depends Section)) {
    (undef, $field{$f}) = run("dpkg-deb -f $deb $f");
    chomp $field{$f};
}

is($field{Package}, $PKG, 'Package');
is($field{Version}, $VERSION, 'Version: NGX_HTTP_PLAYARR_METRICS_VERSION');
is($field{Architecture}, $ARCH, 'Architecture');
is($field{Section}, 'httpd', 'Section: httpd, as Debian\'s nginx modules');

my ($abi) = do {
    open my $fh, '<', $ABI_FILE or die "$ABI_FILE: $!";
    local $/;
    <$fh> =~ /^nginx:abi=(\S+)/m;
};

like($field{Depends}, qr/(?:^|, )\Q$abi\E(?:,|$)/,
     "Depends on the exact nginx ABI ($abi)");
like($field{Depends}, qr/libssl3/, 'Depends on libssl3 (shlibs)');
like($field{Depends}, qr/libjansson4/, 'Depends on libjansson4 (shlibs)');

my (undef, $provides) = run('dpkg-query -W -f=\'${Provides}\' nginx');
like($provides, qr/\Q$abi\E/, "the installed nginx provides $abi");

my (undef, $list) = run("dpkg-deb -c $deb");
my %files = map { my @f = split ' ', $_, 6; $f[5] =~ s{^\.}{}; ($f[5] => $f[0]) }
    grep { /\S/ } split /\n/, $list;

for my $f ($SO, $CONF, "$DOC/copyright", "$DOC/changelog.gz",
           "$DOC/playarr-routes.conf", "$DOC/metrics.json",
           "$DOC/examples/debian-site.conf", "$DOC/prometheus/alerts.yml",
           "$DOC/grafana/playarr-dashboard.json")
{
    ok(exists $files{$f}, "ships $f");
}

# documentation: compressed when over 4k, as dh_compress does
for my $f (qw(README.md directives.md metrics.md app-integration.md debian.md
              prometheus.md))
{
    ok(exists $files{"$DOC/$f"} || exists $files{"$DOC/$f.gz"},
       "ships $DOC/$f");
}

like($files{$SO} // '', qr/^-rw-r--r--/, 'the module is mode 0644');
ok(!grep(m{^/etc/}, keys %files), 'ships nothing in /etc (dh_nginx links)');

my (undef, $postinst) = run("dpkg-deb -I $deb postinst");
like($postinst, qr/dh_nginx/, 'postinst from dh_nginx');
like($postinst,
     qr/mod-http-playarr-metrics\.conf:50-mod-http-playarr-metrics\.conf/,
     'postinst enables mod-http-playarr-metrics.conf as 50-...');


# --- install -----------------------------------------------------------------

my ($sys_rc, $sys_out) = run("$NGINX -t");
my $sys_ok = $sys_rc == 0;

diag("the system configuration fails nginx -t before the package:\n$sys_out")
    unless $sys_ok;

my $was_installed = 0;

END {
    # whatever happened, leave the machine as it was
    system("dpkg --purge $PKG >/dev/null 2>&1") if $was_installed;
}

my ($rc, $out) = run("dpkg -i $deb");
is($rc, 0, 'dpkg -i') or diag($out);
$was_installed = 1;

is(installed(), 'installed', "$PKG installed");

($rc, $out) = run("dpkg --verify $PKG");
is($out, '', 'dpkg --verify: every file as shipped');

ok(-f $SO, "$SO");
is(readlink($LINK), $CONF, "$LINK -> $CONF");

my $load = do { open my $fh, '<', $CONF or die $!; local $/; <$fh> };
is($load, "load_module modules/ngx_http_playarr_metrics_module.so;\n",
   'the load file, as Debian\'s modules write it');

SKIP: {
    skip 'the system configuration was already broken', 2 unless $sys_ok;

    ($rc, $out) = run("$NGINX -t");
    is($rc, 0, 'nginx -t: the system configuration loads the module')
        or diag($out);

    ($rc, $out) = run("$NGINX -T");
    like($out, qr{# configuration file \Q$LINK\E:\s*\nload_module modules/ngx_http_playarr_metrics_module\.so;},
         'nginx -T includes the enabled load file');
}


# --- the packaged example, loaded the Debian way -----------------------------

my $site = do {
    open my $fh, '<', "$DOC/examples/debian-site.conf" or die $!;
    local $/;
    <$fh>;
};

my %subst = (
    qr/listen 80;/                         => 'listen 127.0.0.1:%%PORT%%;',
    qr/listen 127\.0\.0\.1:9145;/          => 'listen 127.0.0.1:%%PORT2%%;',
    qr{/var/lib/nginx/playarr-metrics\.token} => '%%DIR%%/playarr-metrics.token',
    qr{/etc/nginx/playarr-routes\.conf}    => "$DOC/playarr-routes.conf",
    qr{/etc/nginx/playarr-metrics\.json}   => "$DOC/metrics.json",
    qr{/etc/nginx/playarr-jwt\.secret}     => '%%DIR%%/jwt.secret',
    qr{proxy_pass http://127\.0\.0\.1:3000;} =>
        'proxy_pass http://127.0.0.1:%%PORT3%%;',
);

for my $re (sort keys %subst) {
    ok($site =~ s/$re/$subst{$re}/g, "example site has $re");
}

# the stand-in Playarr: carries an update; the user is the session's
my $update = '{"metric":"stream_requests","op":"inc","labels":{"user":"alice"}}';

my $t = PlayarrTest->new(
    module => 0,
    main   => 'include /etc/nginx/modules-enabled/*.conf;',
    http   => $site . <<"EOF");

    server {
        listen 127.0.0.1:%%PORT3%%;
        playarr_metrics off;

        location / {
            add_header X-Playarr-Metrics '$update';
            return 200 "ok\\n";
        }
    }
EOF

# `load_module modules/...` is relative to the prefix, /usr/share/nginx
# for Debian's nginx, whose modules/ is a link to /usr/lib/nginx/modules
symlink '/usr/lib/nginx/modules', $t->path('modules') or die "symlink: $!";

# Playarr's JWT_SECRET_KEY, and alice's session signed with it
$t->write_file('jwt.secret', "deb-test-secret\n", 0600);
my $alice = 'access_token='
            . PlayarrTest::session_jwt('deb-test-secret',
                                       { sub => 'alice', role => 'user',
                                         exp => time + 3600 });

$t->start;

my $token = $t->read_token('playarr-metrics.token');
like($token, qr/^[0-9a-f]{64}$/, 'the token file was created');

my $r = $t->get('/api/titles/tt123', headers => [ Cookie => $alice ]);
is($r->{status}, 200, 'a request through the example site');
ok(!exists $r->{headers}{'x-playarr-metrics'}, 'X-Playarr-Metrics removed');

$r = $t->get('/metrics/json');
is($r->{status}, 401, '/metrics/json without a session: 401');
$r = $t->get('/metrics/json', headers => [ Cookie => $alice ]);
is($r->{status}, 200, '/metrics/json with a session: 200');

$r = $t->request('POST', '/push', port => $t->port(2),
                 headers => { Authorization => "Bearer $token",
                              'Content-Type' => 'application/json' },
                 body => '{"metric":"active_users","op":"set","value":7}');
is($r->{status}, 204, 'push on the loopback listener') or diag($r->{raw});

my $body = $t->metrics(token => $token);

is(PlayarrTest::sample($body, 'playarr_http_requests_total',
                       { endpoint => '/api/titles/:title_key',
                         status_code => 200, username => 'alice' }),
   1, 'the request recorded with its route template and its session\'s'
      . ' user');
is(PlayarrTest::sample($body, 'playarr_stream_requests_total',
                       { user => 'alice' }),
   1, 'the upstream header applied');
is(PlayarrTest::sample($body, 'playarr_active_users', {}), 7,
   'the push applied');
like($body, qr/^# TYPE playarr_job_duration_seconds histogram$/m,
     'the packaged metrics.json loaded');

$t->stop;


# --- remove, purge -----------------------------------------------------------

($rc, $out) = run("dpkg -r $PKG");
is($rc, 0, 'dpkg -r') or diag($out);

ok(!-e $SO, 'module removed');
ok(!-e $CONF, 'load file removed');
ok(!-l $LINK, 'no longer enabled');
ok(-l "$LINK.removed", 'the link kept as .removed (Debian\'s way: a'
   . ' reinstall enables it again)');

SKIP: {
    skip 'the system configuration was already broken', 1 unless $sys_ok;

    ($rc, $out) = run("$NGINX -t");
    is($rc, 0, 'nginx -t: the system configuration, without the module')
        or diag($out);
}

($rc, $out) = run("dpkg --purge $PKG");
is($rc, 0, 'dpkg --purge') or diag($out);
$was_installed = 0;

is(installed(), '', 'not installed, no config files');
ok(!-e "$LINK.removed" && !-l "$LINK.removed", 'the .removed link purged');
ok(!-e $DOC, "$DOC removed");

diag(sprintf 'done in %.1fs', time - $started);

done_testing;
