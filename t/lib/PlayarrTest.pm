package PlayarrTest;

=head1 NAME

PlayarrTest - run a private nginx with ngx_http_playarr_metrics_module
and talk HTTP/1.1 to it, for the Test::More tests in t/

=head1 SYNOPSIS

    use strict;
    use warnings;
    use FindBin;
    use lib "$FindBin::Bin/lib";
    use Test::More;
    use PlayarrTest;

    my $t = PlayarrTest->new(http => <<'EOF');
        playarr_metrics_zone metrics:1m;
        playarr_metrics_token_file %%DIR%%/metrics.token;
        server {
            listen 127.0.0.1:%%PORT%%;
            location = /metrics { playarr_metrics_export; }
        }
    EOF

    $t->start;
    my $token = $t->read_token('metrics.token');
    my $body = $t->metrics(token => $token);        # 200 + promtool
    my $r = $t->get('/metrics');                      # no credentials
    is($r->{status}, 401, 'no token');
    $t->stop;                                         # QUIT + error log check
    done_testing;

=head1 DESCRIPTION

Every test object owns one nginx: Debian's C</usr/sbin/nginx> (env
C<NGINX_BIN> overrides) with the module loaded from
C<< <repo>/build/ngx_http_playarr_metrics_module.so >> (env
C<PLAYARR_METRICS_SO> overrides), a master process and C<workers> worker
processes, listening on 127.0.0.1 only, on free ports (random ports below
the kernel's ephemeral range, checked by binding them; at start, a port
that turns out to be shared with another process, e.g. through
C<reuseport>, makes the harness pick new ports and start again). Every
runtime file (configuration, pid, error log, access log, the
client body / proxy / fastcgi / uwsgi / scgi temp paths) lives in a private
temporary directory (mode 0755, so that workers running as C<nobody> when
the tests run as root can traverse it). nginx runs with C<daemon off> as a
child of the test, started as
C<< nginx -p DIR/ -c DIR/nginx.conf -e DIR/error.log >>.

When the object stops (C<stop>, or at the latest in an C<END> block), the
error log is checked: a line with C<[alert]>, C<[emerg]>, C<[crit]> or
C<exited on signal> fails the test, unless it matches a pattern given to
C<allow_log>. The directory is removed at the end unless C<KEEP_T=1>.

Call C<< $t->stop >> before C<done_testing>: its checks are then ordinary
test results. An instance still running at exit is stopped in C<END>; a
problem found there is printed with C<diag> and makes the test exit
non-zero. When a test failed, the tail of each error log is printed.

Environment: C<NGINX_BIN>, C<PLAYARR_METRICS_SO>, C<KEEP_T=1> (keep the
directories), C<TMPDIR> (where the directories go; as root every parent
must be world-traversable), C<PLAYARR_PROMTOOL_STRICT=1> (promtool lint
warnings fail), C<PLAYARR_NO_PYPARSE=1> (skip the prometheus_client
parser), C<PLAYARR_PYTHON> (the python3 that has prometheus_client;
default /usr/bin/python3).

=head2 Constructor

=over

=item PlayarrTest->new(%opt)

    http    => text inside http { }        (placeholders allowed)
    server  => text inside a server { listen 127.0.0.1:%%PORT%%; ... }
               appended to http (optional convenience)
    main    => text in the main context (after the standard lines)
    events  => text inside events { }
    workers => number of worker processes (default 2)
    module  => 0 to leave out load_module (plain nginx; default 1)
    log_level => error_log level (default "notice")

Placeholders, replaced in every text: C<%%PORT%%> (the main port),
C<%%PORT2%%>, C<%%PORT3%%>... (more free ports, e.g. for an upstream
server), C<%%DIR%%> (the directory, no trailing slash), C<%%SO%%> (module
path), C<%%WORKERS%%>.

=item $t->configure(%opt)

Rewrites nginx.conf with new texts (same options as C<new>, unnamed ones
keep their value) and the same ports; then C<reload> or C<test_config>.

=back

=head2 Files

    $t->dir                         the directory
    $t->path($name)                 DIR/$name
    $t->conf_file                   DIR/nginx.conf
    $t->conf_text                   the generated configuration
    $t->conf_line(qr/.../)          1-based line of the first match in it
    $t->write_file($name, $content, $mode)   mode default 0644
    $t->read_file($name)            undef when missing
    $t->read_token($name)           file content without surrounding space
    $t->port, $t->port(2)           the ports behind %%PORT%%, %%PORT2%%
    $t->write_secret($name, $content, rename => 0|1)
                                    mode 0600, owned by the worker user;
                                    rewritten in place (same inode) or
                                    through a temp file renamed over it
    $t->worker_ids, $t->worker_uid  (uid, gid) the workers run as (nobody
                                    and its group when the tests run as root)

=head2 Process control

    $t->start          dies (with the error log) if nginx does not start;
                       returns once the pid file holds the master pid, all
                       workers exist and the port accepts connections
    $t->test_config    ($exit_code, $output): nginx -t on the current
                       configuration, with its own error log
                       (-e DIR/nginx-t.log); $output is what nginx printed
    $t->reload(%opt)   nginx -s reload (opt signal => 1: kill -HUP
                       instead); waits until every old worker has exited and
                       the new generation is complete; dies when the master
                       logs [emerg]/[alert] for the new configuration or
                       times out; returns the new worker pids
    $t->stop           SIGQUIT, waits for the master (ok: exit status 0),
                       then check_error_log
    $t->kill_workers(signal => 'KILL', count => N)
                       kills workers (all by default), allows the
                       matching "exited on signal" alerts, waits for the
                       master to respawn them; returns the killed pids
    $t->master_pid, $t->worker_pids, $t->running
    PlayarrTest::nginx_bin, PlayarrTest::module_path, PlayarrTest::repo

=head2 Error log

    $t->error_log_text              the whole error log
    $t->log_mark                    current size (an offset)
    $t->log_since($mark)            text written after a mark
    $t->wait_for_log(qr/.../, $timeout, $mark)   true when seen
    $t->allow_log(qr/.../)          a bad line matching it is tolerated
    $t->check_error_log($name)      ok() that no bad line is present
    $t->bad_log_lines               the offending lines (no assertion)

=head2 HTTP

    $t->request($method, $path, headers => {...} or [...], body => $bytes,
                port => $port, timeout => 10, host => 'localhost')
    $t->get($path, %opt), $t->head($path, %opt)

Returns a hashref C<< {status, reason, protocol, headers, body, raw,
header_lines, extra, error} >>: C<headers> has lowercased names, a scalar
for a header seen once and an arrayref for a repeated one; C<header_lines>
is the list of C<[name, value]> in order; C<extra> holds bytes received
after the response (must be empty); C<error> is set and C<status> is 599
when no response could be read. The request carries C<Host> and
C<Connection: close> unless given; C<headers> as an arrayref of pairs (or
a hash value that is an arrayref) repeats a header.

    $t->raw($bytes, %opt)           sends bytes as is, returns all bytes read
                                    until the server closes (or timeout)
    my $c = $t->connect(%opt)       a keep-alive connection:
    $c->request($method, $path, %opt) (same result; no Connection: close)
    $c->close
    PlayarrTest::parse_response($text, $method)  a hashref as above
    PlayarrTest::header($r, $name)  one header value (repeats joined ", ")
    PlayarrTest::parse_challenge($www_authenticate)
                                    ($scheme, {param => value}, $unparsed)
    PlayarrTest::json_body($r)      decoded JSON body or undef
    $t->hit_all_workers($code, max => 200)
                                    calls $code until responses carrying an
                                    X-Worker-Pid header (add_header
                                    X-Worker-Pid $pid always;) came from
                                    every current worker; returns
                                    (\@responses, \%seen_pids, $all_seen)

=head2 Metrics

    $t->metrics(token => $tok, path => '/metrics', name => $n, headers => )
        GET; ok() for status 200, promtool_ok, python_parse_ok and
        no duplicate series; returns the body
    $t->metrics_response(...)   the same checks, returns the response
    $t->promtool_ok($body, $name)
        ok() unless promtool reports a parse error; lint warnings are
        printed with diag and collected in @PlayarrTest::LINT (they fail
        only with PLAYARR_PROMTOOL_STRICT=1)
    $t->promtool_check($body)   ($ok, $output, \@lint) without assertion
    $t->python_parse_ok($body, $name)
        the prometheus_client parser (skipped with PLAYARR_NO_PYPARSE=1)
    $t->python_parse_check($body)   ($ok or undef if skipped, $output)
    PlayarrTest::parse_metrics($body)   { series_key => value }
    PlayarrTest::metric_types($body)    { family => type }
    PlayarrTest::metric_help($body)     { family => help }
    PlayarrTest::series_key($name, {labels})  'name{a="1",b="2"}' (sorted)
    PlayarrTest::sample($body_or_parsed, $name, {labels})  value or undef
    PlayarrTest::samples($body_or_parsed, $name) list of [{labels}, value]
    PlayarrTest::duplicate_series($body) list of keys seen twice
    $t->self_metrics_ok($body)       the module's self metrics (names in
                                     %PlayarrTest::SELF, one place to adjust)

=cut

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(remove_tree);
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use POSIX qw(WNOHANG _exit);
use Test::More ();
use Time::HiRes qw(sleep time);

our @LINT;
our $END_STATUS = 0;

# Names of the self metrics (DESIGN.md section 8), in one place.
our %SELF = (
    build_info    => 'playarr_metrics_build_info',
    nginx_version => '1.22.1',
    zone_prefix   => 'playarr_metrics_zone_',
    zone_used     => qr/^playarr_metrics_zone_.*used/,
    zone_free     => qr/^playarr_metrics_zone_.*free/,
    series        => 'playarr_metrics_series',
);

my $REPO = abs_path(dirname(abs_path(__FILE__)) . '/../..');
my @LIVE;
my %PORTS_USED;

sub repo { $REPO }

sub nginx_bin { $ENV{NGINX_BIN} || '/usr/sbin/nginx' }

sub module_path {
    $ENV{PLAYARR_METRICS_SO}
        || "$REPO/build/ngx_http_playarr_metrics_module.so";
}


sub new {
    my ($class, %opt) = @_;

    my $base = $ENV{TMPDIR} && -d $ENV{TMPDIR} ? $ENV{TMPDIR} : '/tmp';
    my $dir = tempdir('playarr-t-XXXXXXXX', DIR => $base);
    chmod 0755, $dir or die "chmod $dir: $!";

    # as root the workers run as nobody: they must reach files in $dir
    if ($> == 0) {
        my $p = abs_path($base);
        while (length $p > 1) {
            my $mode = (stat $p)[2];
            die "PlayarrTest: $p is not traversable by the worker user"
                . " (mode " . sprintf('%o', $mode & 07777) . "); set TMPDIR\n"
                unless $mode & 01;
            $p = dirname($p);
        }
    }

    my $self = bless {
        dir      => $dir,
        opt      => {
            http      => '',
            server    => undef,
            main      => '',
            events    => '',
            workers   => 2,
            module    => 1,
            log_level => 'notice',
        },
        ports    => [],
        allow    => [],
        pid      => undef,
        checked  => 0,
    }, $class;

    for my $k (keys %opt) {
        die "PlayarrTest: unknown option $k\n"
            unless exists $self->{opt}{$k};
        $self->{opt}{$k} = $opt{$k};
    }

    $self->{ports}[0] = _free_port();
    $self->_write_conf;
    push @LIVE, $self;

    return $self;
}


sub configure {
    my ($self, %opt) = @_;

    for my $k (keys %opt) {
        die "PlayarrTest: unknown option $k\n"
            unless exists $self->{opt}{$k};
        $self->{opt}{$k} = $opt{$k};
    }

    $self->_write_conf;
    return $self;
}


sub dir       { $_[0]{dir} }
sub path      { "$_[0]{dir}/$_[1]" }
sub conf_file { "$_[0]{dir}/nginx.conf" }
sub conf_text { $_[0]{conf} }
sub workers   { $_[0]{opt}{workers} }

sub port {
    my ($self, $n) = @_;
    $n ||= 1;
    $self->{ports}[$n - 1] //= _free_port();
    return $self->{ports}[$n - 1];
}


sub conf_line {
    my ($self, $re) = @_;
    my @lines = split /\n/, $self->{conf};

    for my $i (0 .. $#lines) {
        return $i + 1 if $lines[$i] =~ $re;
    }

    return undef;
}


# A port below the kernel's ephemeral range (so that neither another
# bind(0) nor an outgoing connection is handed it meanwhile), chosen at
# random and checked free by binding it.
sub _free_port {
    my ($lo) = (`cat /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null`
                =~ /^(\d+)/);
    $lo = 32768 unless $lo && $lo > 12000;

    for (1 .. 200) {
        my $port = 10000 + int rand($lo - 10000);
        next if $PORTS_USED{$port};

        my $s = IO::Socket::INET->new(
            LocalAddr => '127.0.0.1',
            LocalPort => $port,
            Proto     => 'tcp',
            Listen    => 1,
        ) or next;
        close $s;

        $PORTS_USED{$port} = 1;
        return $port;
    }

    die "no free port found\n";
}


# inodes of the sockets listening on 127.0.0.1:$port (or *:$port)
sub _listen_inodes {
    my ($port) = @_;
    my @ino;

    for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $fh, '<', $f or next;
        while (<$fh>) {
            my @c = split;
            next unless @c > 9 && $c[3] eq '0A';
            my ($addr, $p) = split /:/, $c[1];
            next unless hex($p) == $port;
            push @ino, $c[9];
        }
        close $fh;
    }

    return @ino;
}


# true when every socket listening on our ports belongs to our nginx
# (two processes of the same user can share a port with reuseport)
sub _ports_are_ours {
    my ($self) = @_;
    my %ours;

    for my $pid ($self->{pid}, $self->worker_pids) {
        opendir my $dh, "/proc/$pid/fd" or next;
        for my $fd (readdir $dh) {
            my $l = readlink "/proc/$pid/fd/$fd" or next;
            $ours{$1} = 1 if $l =~ /^socket:\[(\d+)\]$/;
        }
        closedir $dh;
    }

    for my $port (@{ $self->{ports} }) {
        next unless $self->{conf} =~ /[:\s]$port\b/;
        return 0 if grep { !$ours{$_} } _listen_inodes($port);
    }

    return 1;
}


sub _subst {
    my ($self, $text) = @_;

    return '' unless defined $text;

    $text =~ s/%%PORT(\d*)%%/$self->port($1 || 1)/ge;
    $text =~ s/%%DIR%%/$self->{dir}/g;
    $text =~ s/%%SO%%/module_path()/ge;
    $text =~ s/%%WORKERS%%/$self->{opt}{workers}/g;

    return $text;
}


sub _write_conf {
    my ($self) = @_;
    my $o = $self->{opt};
    my $d = $self->{dir};
    my $conf = '';

    $conf .= "# generated by PlayarrTest for $0\n";
    $conf .= "load_module " . module_path() . ";\n" if $o->{module};
    $conf .= "worker_processes $o->{workers};\n";
    $conf .= "master_process on;\n";
    $conf .= "daemon off;\n";
    $conf .= "pid $d/nginx.pid;\n";
    $conf .= "error_log $d/error.log $o->{log_level};\n";
    $conf .= $self->_subst($o->{main}) . "\n";
    $conf .= "events {\n    worker_connections 1024;\n";
    $conf .= $self->_subst($o->{events}) . "\n}\n\n";
    $conf .= "http {\n";
    $conf .= "    access_log $d/access.log;\n";
    $conf .= "    client_body_temp_path $d/client_body_temp;\n";
    $conf .= "    proxy_temp_path $d/proxy_temp;\n";
    $conf .= "    fastcgi_temp_path $d/fastcgi_temp;\n";
    $conf .= "    uwsgi_temp_path $d/uwsgi_temp;\n";
    $conf .= "    scgi_temp_path $d/scgi_temp;\n\n";
    $conf .= $self->_subst($o->{http}) . "\n";

    if (defined $o->{server}) {
        $conf .= "    server {\n";
        $conf .= "        listen 127.0.0.1:" . $self->port(1) . ";\n";
        $conf .= "        server_name localhost;\n";
        $conf .= $self->_subst($o->{server}) . "\n";
        $conf .= "    }\n";
    }

    $conf .= "}\n";

    $self->{conf} = $conf;
    $self->write_file('nginx.conf', $conf, 0644);
}


sub write_file {
    my ($self, $name, $content, $mode) = @_;
    my $file = $self->path($name);

    open my $fh, '>', $file or die "open $file: $!";
    binmode $fh;
    print {$fh} $content;
    close $fh or die "close $file: $!";
    chmod(defined $mode ? $mode : 0644, $file) or die "chmod $file: $!";

    return $file;
}


sub read_file {
    my ($self, $name) = @_;
    my $file = $name =~ m{^/} ? $name : $self->path($name);

    open my $fh, '<', $file or return undef;
    binmode $fh;
    local $/;
    my $s = <$fh>;
    close $fh;

    return defined $s ? $s : '';
}


sub read_token {
    my ($self, $name) = @_;
    my $s = $self->read_file($name);

    return undef unless defined $s;
    $s =~ s/^\s+|\s+$//g;

    return $s;
}


# (uid, gid) the workers run as: the test's own ids, or when the tests run
# as root, the "user" directive's or nginx's default (nobody)
sub worker_ids {
    my ($self) = @_;

    return ($>, $) + 0) if $> != 0;

    my ($user, $group) = ('nobody', undef);

    if ($self->{conf} =~ /^\s*user\s+(\S+?)(?:\s+(\S+?))?\s*;/m) {
        ($user, $group) = ($1, $2);
    }

    my @pw = getpwnam($user) or die "no user $user\n";
    my $gid = defined $group ? scalar getgrnam($group) : $pw[3];

    # nginx's default group is nogroup on Debian when the user is default
    if (!defined $group && $user eq 'nobody') {
        my $ng = getgrnam('nogroup');
        $gid = $ng if defined $ng;
    }

    return ($pw[2], $gid);
}

sub worker_uid { ($_[0]->worker_ids)[0] }


# writes a file only the workers may read: mode 0600, owned by the worker
# user; in place (same inode, truncated) or, with rename => 1, through a
# temporary file renamed over it
sub write_secret {
    my ($self, $name, $content, %opt) = @_;
    my $file = $self->path($name);
    my $tmp = $opt{rename} ? "$file.new.$$" : $file;
    my ($uid, $gid) = $self->worker_ids;
    my $fh;

    if ($opt{rename} || !-e $file) {
        open $fh, '>', $tmp or die "open $tmp: $!";
        chmod 0600, $tmp or die "chmod $tmp: $!";
        chown $uid, $gid, $tmp or die "chown $tmp: $!";
    } else {
        open $fh, '+<', $file or die "open $file: $!";
        truncate $fh, 0 or die "truncate $file: $!";
    }

    binmode $fh;
    print {$fh} $content;
    close $fh or die "close $tmp: $!";

    rename $tmp, $file or die "rename $tmp: $!" if $opt{rename};

    return $file;
}


# The README's configuration, docs/examples/nginx.conf, for a test to run
# as it is: (\%parts, \@changes) where parts are main (what comes before
# "http {"), http (its body, rewritten) and after (what follows it), and
# changes counts, for each of its site paths, the places it was rewritten
# to the test's own: listen 80 to %%PORT%%, Playarr (127.0.0.1:3000) to
# %%PORT2%%, the token file to %%DIR%%/tok/, the JWT secret to
# %%DIR%%/jwt.secret, the app's token for the merge to
# %%DIR%%/app-token.conf, the access log to %%DIR%%, the routes to the
# repo's
sub example_http {
    my $file = "$REPO/docs/examples/nginx.conf";

    open my $fh, '<', $file or die "$file: $!";
    local $/;
    my $example = <$fh>;
    close $fh;

    my ($main, $http, $after) =
        $example =~ /\A(.*?)^http \{\n(.*)^\}\n(.*)\z/ms
        or die "no http { } block in $file\n";

    my @subst = (
        [ qr{^(\s*)listen 80;$}m => 'listen 127.0.0.1:%%PORT%%;' ],
        [ qr{(\s)/var/log/nginx/access\.log;}
          => '%%DIR%%/example-access.log;' ],
        [ qr{(\s)/var/lib/nginx/playarr-metrics\.token;} =>
          '%%DIR%%/tok/playarr-metrics.token;' ],
        [ qr{(\s)/etc/nginx/playarr-routes\.conf;} =>
          "$REPO/docs/playarr-routes.conf;" ],
        [ qr{(\s)/etc/nginx/playarr-jwt\.secret;} => '%%DIR%%/jwt.secret;' ],
        [ qr{(\s)/etc/nginx/playarr-app-token\.conf;}
          => '%%DIR%%/app-token.conf;' ],
        [ qr{(\s)http://127\.0\.0\.1:3000\b} => 'http://127.0.0.1:%%PORT2%%' ],
    );
    my @changes;

    for my $s (@subst) {
        my ($re, $to) = @$s;
        my $n = $http =~ s/$re/$1$to/g;

        push @changes, [ $re, $n ];
    }

    return ({ main => $main, http => $http, after => $after,
              text => $example }, \@changes);
}


# A session cookie's value as Playarr's jsonwebtoken signs it (HS256 over
# base64url parts): session_jwt($secret, \%payload or $json_text, %o),
# where header => \%h or header_text => $json replace the header, key =>
# signs with another key, sig => $bytes is the signature as it is, and
# hs512 => 1 signs with HMAC-SHA512
sub session_jwt {
    my ($secret, $payload, %o) = @_;

    require Digest::SHA;
    require JSON::PP;
    require MIME::Base64;

    my $json = JSON::PP->new->canonical;
    my $h = $o{header_text}
        // $json->encode($o{header} // { alg => 'HS256', typ => 'JWT' });
    my $p = ref $payload ? $json->encode($payload) : $payload;
    my $input = MIME::Base64::encode_base64url($h) . '.'
                . MIME::Base64::encode_base64url($p);
    my $key = $o{key} // $secret;
    my $sig = $o{sig} // ($o{hs512} ? Digest::SHA::hmac_sha512($input, $key)
                                    : Digest::SHA::hmac_sha256($input, $key));

    return "$input." . MIME::Base64::encode_base64url($sig);
}


# --- processes -----------------------------------------------------------

sub running {
    my ($self) = @_;
    return defined $self->{pid};
}

sub master_pid { $_[0]{pid} }


sub _proc_children {
    my ($ppid) = @_;
    my @kids;

    opendir my $dh, '/proc' or die "opendir /proc: $!";

    for my $p (grep { /^\d+$/ } readdir $dh) {
        open my $fh, '<', "/proc/$p/stat" or next;
        my $stat = <$fh>;
        close $fh;
        next unless defined $stat;

        # pid (comm) state ppid ...; comm may hold spaces or parentheses
        next unless $stat =~ /\)\s+\S+\s+(\d+)/;
        next unless $1 == $ppid;

        open my $ch, '<', "/proc/$p/cmdline" or next;
        local $/;
        my $cmd = <$ch> // '';
        close $ch;
        $cmd =~ s/\0+$//;
        $cmd =~ s/\0/ /g;

        push @kids, [$p + 0, $cmd];
    }

    closedir $dh;

    return @kids;
}


sub _is_nginx_worker {
    my ($pid) = @_;

    open my $fh, '<', "/proc/$pid/cmdline" or return 0;
    local $/;
    my $cmd = <$fh> // '';
    close $fh;

    return $cmd =~ /^nginx: worker process/
           || (($ENV{PLAYARR_WRAP} // '') eq 'valgrind'
               && $cmd =~ /valgrind/);
}


sub worker_pids {
    my ($self) = @_;

    return () unless $self->{pid};

    # under valgrind (make test VALGRIND=1) a process keeps valgrind's
    # command line: every child of the master is then taken for a worker
    my $any = ($ENV{PLAYARR_WRAP} // '') eq 'valgrind';

    my @w = sort { $a <=> $b }
            map { $_->[0] }
            grep { $any || $_->[1] =~ /^nginx: worker process$/ }
            _proc_children($self->{pid});

    return @w;
}


sub _old_workers_alive {
    my ($self, @old) = @_;
    my %kids = map { $_->[0] => 1 } _proc_children($self->{pid});

    return grep { $kids{$_} } @old;
}


sub _reap {
    my ($self) = @_;

    return 1 unless $self->{pid};

    local $?;
    my $r = waitpid($self->{pid}, WNOHANG);

    if ($r == $self->{pid} || $r == -1) {
        $self->{exit_status} = $?;
        $self->{last_pid} = $self->{pid};
        $self->{pid} = undef;
        return 1;
    }

    return 0;
}


sub _start_once {
    my ($self) = @_;
    my $dir = $self->{dir};

    unlink $self->path('nginx.pid');

    my $pid = fork;
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$dir/nginx.out";
        open STDERR, '>&', \*STDOUT;
        exec nginx_bin(), '-p', "$dir/", '-c', "$dir/nginx.conf",
             '-e', "$dir/error.log"
            or print STDERR "exec " . nginx_bin() . ": $!\n";
        _exit(127);
    }

    $self->{pid} = $pid;
    $self->{checked} = 0;

    my $deadline = time + 15;

    while (time < $deadline) {
        if ($self->_reap) {
            return (0, "nginx exited with status " . ($self->{exit_status} >> 8)
                       . ($self->{exit_status} & 127
                          ? " (signal " . ($self->{exit_status} & 127) . ")"
                          : ''));
        }

        my $pidfile = $self->read_file('nginx.pid');

        if (defined $pidfile && $pidfile =~ /^(\d+)/ && $1 == $pid
            && $self->worker_pids == $self->{opt}{workers}
            && $self->_port_accepts($self->port(1)))
        {
            return (1, '') if $self->_ports_are_ours;
            return (0, 'port shared with another process');
        }

        sleep 0.05;
    }

    return (0, 'nginx did not become ready in 15 s');
}


sub start {
    my ($self) = @_;

    die "PlayarrTest: already running\n" if $self->{pid};

    for my $try (1 .. 3) {
        my $mark = $self->log_mark;
        my ($ok, $why) = $self->_start_once;

        return $self if $ok;

        my $log = $self->log_since($mark);
        my $out = $self->read_file('nginx.out') // '';

        $self->_kill_hard if $self->{pid};

        # another process took one of our ports between probe and bind
        if ($try < 3 && ($log =~ /bind\(\) to 127\.0\.0\.1:\d+ failed \(98/
                         || $why =~ /port shared/))
        {
            $self->{ports} = [map { _free_port() } @{ $self->{ports} }];
            $self->_write_conf;
            next;
        }

        # the caller sees the failure; the log is not checked again at END
        $self->{checked} = 1;

        die "nginx failed to start: $why\n--- error log ---\n$log"
            . "--- output ---\n$out--- nginx.conf ---\n$self->{conf}";
    }
}


sub _port_accepts {
    my ($self, $port) = @_;
    my $s = IO::Socket::INET->new(
        PeerAddr => '127.0.0.1',
        PeerPort => $port,
        Proto    => 'tcp',
        Timeout  => 1,
    );

    return 0 unless $s;
    close $s;
    return 1;
}


sub _run_nginx {
    my ($self, @args) = @_;
    my $dir = $self->{dir};
    my $out = "$dir/nginx-cmd.out";

    my $pid = fork;
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out;
        open STDERR, '>&', \*STDOUT;
        exec nginx_bin(), '-p', "$dir/", '-c', "$dir/nginx.conf", @args
            or print STDERR "exec " . nginx_bin() . ": $!\n";
        _exit(127);
    }

    local $?;
    waitpid($pid, 0);
    my $rc = $? >> 8;
    $rc = 128 + ($? & 127) if $? & 127;

    return ($rc, $self->read_file($out) // '');
}


sub test_config {
    my ($self) = @_;

    unlink $self->path('nginx-t.log');

    return $self->_run_nginx('-e', $self->path('nginx-t.log'), '-t');
}


sub reload {
    my ($self, %opt) = @_;

    die "PlayarrTest: not running\n" unless $self->{pid};

    my @old = $self->worker_pids;
    my $mark = $self->log_mark;

    if ($opt{signal}) {
        kill 'HUP', $self->{pid} or die "kill HUP: $!";

    } else {
        my ($rc, $out) = $self->_run_nginx('-e', $self->path('error.log'),
                                           '-s', 'reload');
        die "nginx -s reload exited with $rc:\n$out" if $rc != 0;
    }

    my $deadline = time + ($opt{timeout} || 20);

    while (time < $deadline) {
        my $log = $self->log_since($mark);

        if ($log =~ /^.*\[(?:emerg|alert)\].*$/m) {
            die "reload failed: $&\n--- error log since reload ---\n$log";
        }

        if ($self->_reap) {
            die "nginx master exited during reload\n$log";
        }

        my @now = $self->worker_pids;
        my %old = map { $_ => 1 } @old;

        if (!$self->_old_workers_alive(@old)
            && @now == $self->{opt}{workers}
            && !grep { $old{$_} } @now)
        {
            return @now;
        }

        sleep 0.05;
    }

    die "reload: the old workers (@old) did not go away in time\n"
        . $self->log_since($mark);
}


sub kill_workers {
    my ($self, %opt) = @_;
    my $sig = $opt{signal} || 'KILL';
    my @pids = $self->worker_pids;

    @pids = @pids[0 .. $opt{count} - 1]
        if $opt{count} && $opt{count} < @pids;

    for my $p (@pids) {
        $self->allow_log(qr/\b$p exited on signal/);
        kill $sig, $p;
    }

    my $deadline = time + 15;

    while (time < $deadline) {
        my @now = $self->worker_pids;
        my %now = map { $_ => 1 } @now;

        return @pids
            if @now == $self->{opt}{workers} && !grep { $now{$_} } @pids;

        sleep 0.05;
    }

    die "kill_workers: workers not respawned\n";
}


sub _kill_hard {
    my ($self) = @_;

    return unless $self->{pid};

    my @w = $self->worker_pids;
    local $?;
    kill 'KILL', $self->{pid}, @w;
    waitpid($self->{pid}, 0);
    $self->{last_pid} = $self->{pid};
    $self->{pid} = undef;
}


sub _stop_quiet {
    my ($self) = @_;

    return (1, 'not running') unless $self->{pid};

    my @w = $self->worker_pids;
    kill 'QUIT', $self->{pid};

    my $deadline = time + 20;

    while (time < $deadline) {
        if ($self->_reap) {
            my $st = $self->{exit_status};
            my @orphans = grep { _is_nginx_worker($_) } @w;
            kill 'KILL', @orphans if @orphans;

            return ($st == 0 && !@orphans,
                    "master exit status $st"
                    . (@orphans ? ", orphan workers @orphans" : ''));
        }
        sleep 0.05;
    }

    $self->_kill_hard;

    return (0, 'nginx did not exit within 20 s of SIGQUIT (killed)');
}


sub stop {
    my ($self, %opt) = @_;

    return unless $self->{pid};

    my ($ok, $why) = $self->_stop_quiet;
    Test::More::ok($ok, 'nginx stopped cleanly') or Test::More::diag($why);

    $self->check_error_log unless $opt{no_check};

    return $ok;
}


# --- error log -----------------------------------------------------------

sub error_log_text {
    my ($self) = @_;
    return $self->read_file('error.log') // '';
}

sub log_mark {
    my ($self) = @_;
    return -s $self->path('error.log') || 0;
}

sub log_since {
    my ($self, $mark) = @_;
    my $s = $self->error_log_text;
    return length $s > ($mark || 0) ? substr($s, $mark || 0) : '';
}

sub allow_log {
    my ($self, $re) = @_;
    push @{ $self->{allow} }, $re;
}


sub wait_for_log {
    my ($self, $re, $timeout, $mark) = @_;
    my $deadline = time + ($timeout || 5);

    while (1) {
        return 1 if $self->log_since($mark || 0) =~ $re;
        return 0 if time >= $deadline;
        sleep 0.05;
    }
}


sub bad_log_lines {
    my ($self) = @_;
    my @bad;

    for my $line (split /\n/, $self->error_log_text) {
        next unless $line =~ /\[(?:alert|emerg|crit)\]|exited on signal/;
        next if grep { $line =~ $_ } @{ $self->{allow} };
        push @bad, $line;
    }

    return @bad;
}


sub check_error_log {
    my ($self, $name) = @_;
    my @bad = $self->bad_log_lines;

    $self->{checked} = 1;

    Test::More::ok(!@bad, $name || 'error log: no alert, emerg, crit, signal')
        or Test::More::diag(join "\n", 'bad error log lines:', @bad);

    return !@bad;
}


# --- HTTP ----------------------------------------------------------------

sub connect {
    my ($self, %opt) = @_;

    return PlayarrTest::Conn->new(
        port    => $opt{port} || $self->port(1),
        timeout => $opt{timeout} || 10,
    );
}


sub request {
    my ($self, $method, $path, %opt) = @_;
    my $c = eval { $self->connect(%opt) };

    return { status => 599, error => "$@", headers => {}, body => '',
             header_lines => [], raw => '' }
        unless $c;

    my $r = $c->request($method, $path, %opt, close => 1);
    $c->close;

    return $r;
}

sub get  { my ($self, $path, %opt) = @_; $self->request('GET', $path, %opt) }
sub head { my ($self, $path, %opt) = @_; $self->request('HEAD', $path, %opt) }


sub raw {
    my ($self, $bytes, %opt) = @_;
    my $c = $self->connect(%opt);

    $c->write($bytes);
    my $s = $c->read_all;
    $c->close;

    return $s;
}


sub header {
    my ($r, $name) = @_;
    my $v = $r->{headers}{ lc $name };

    return undef unless defined $v;
    return ref $v ? join(', ', @$v) : $v;
}


# ($scheme, {param => value}) of a WWW-Authenticate value (one challenge)
sub parse_challenge {
    my ($v) = @_;

    return unless defined $v;

    my ($scheme, $rest) = $v =~ /^\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*(.*)$/s
        or return;
    my %p;

    while ($rest =~ s/^\s*([A-Za-z0-9_-]+)\s*=\s*
                      (?:"((?:[^"\\]|\\.)*)"|([^\s,]+))\s*,?//x)
    {
        my ($k, $q, $t) = ($1, $2, $3);
        $q =~ s/\\(.)/$1/g if defined $q;
        $p{$k} = defined $q ? $q : $t;
    }

    return ($scheme, \%p, $rest);
}


# the JSON body of a response, decoded; undef when it is not JSON
sub json_body {
    my ($r) = @_;

    require JSON::PP;

    return eval { JSON::PP->new->decode($r->{body}) };
}


sub hit_all_workers {
    my ($self, $code, %opt) = @_;
    my $max = $opt{max} || 200;
    my %want = map { $_ => 1 } $self->worker_pids;
    my (@resp, %seen);

    for (1 .. $max) {
        my $r = $code->();
        push @resp, $r;

        my $pid = header($r, 'X-Worker-Pid');
        $seen{$pid}++ if defined $pid;

        last unless grep { !$seen{$_} } keys %want;
    }

    my $all = !grep { !$seen{$_} } keys %want;

    return (\@resp, \%seen, $all);
}


# parses one response from the beginning of $text; $method decides whether
# a body follows (HEAD: none); returns undef when $text is incomplete
sub parse_response {
    my ($text, $method) = @_;
    my ($r, $used) = _parse_response($text, $method // 'GET', 1);

    return undef unless $r;
    $r->{extra} = substr($text, $used);

    return $r;
}


sub _parse_response {
    my ($text, $method, $eof) = @_;

    my $end = index $text, "\r\n\r\n";
    return unless $end >= 0;

    my $head = substr $text, 0, $end;
    my $pos = $end + 4;
    my @lines = split /\r\n/, $head;
    my $status_line = shift @lines;

    return ({ status => 599, error => "bad status line: $status_line",
              headers => {}, header_lines => [], body => '', raw => $text },
            length $text)
        unless $status_line =~ m{^(HTTP/\d\.\d) (\d{3})(?: (.*))?$};

    my %r = (protocol => $1, status => $2 + 0, reason => $3 // '',
             headers => {}, header_lines => []);

    for my $l (@lines) {
        my ($n, $v) = $l =~ /^([^:]+):[ \t]*(.*?)[ \t]*$/
            or return ({ %r, status => 599, error => "bad header: $l",
                         body => '', raw => $text }, length $text);
        push @{ $r{header_lines} }, [$n, $v];
        my $k = lc $n;
        if (exists $r{headers}{$k}) {
            $r{headers}{$k} = [ref $r{headers}{$k} ? @{ $r{headers}{$k} }
                                                   : $r{headers}{$k}, $v];
        } else {
            $r{headers}{$k} = $v;
        }
    }

    my $h = $r{headers};
    my $no_body = $method eq 'HEAD' || $r{status} < 200
                  || $r{status} == 204 || $r{status} == 304;

    if ($no_body) {
        $r{body} = '';

    } elsif (defined $h->{'transfer-encoding'}
             && !ref $h->{'transfer-encoding'}
             && lc $h->{'transfer-encoding'} eq 'chunked')
    {
        my $body = '';

        while (1) {
            my $nl = index $text, "\r\n", $pos;
            return if $nl < 0;
            my $size_line = substr $text, $pos, $nl - $pos;
            my ($hex) = $size_line =~ /^([0-9a-fA-F]+)/
                or return ({ %r, status => 599, body => '', raw => $text,
                             error => "bad chunk size: $size_line" },
                           length $text);
            my $size = hex $hex;
            $pos = $nl + 2;

            if ($size == 0) {
                # trailers end with an empty line
                my $te = index $text, "\r\n", $pos;
                return if $te < 0;
                while ($te != $pos) {
                    $pos = $te + 2;
                    $te = index $text, "\r\n", $pos;
                    return if $te < 0;
                }
                $pos += 2;
                last;
            }

            return if length($text) < $pos + $size + 2;
            $body .= substr $text, $pos, $size;
            $pos += $size + 2;
        }

        $r{body} = $body;

    } elsif (defined $h->{'content-length'}) {
        my $len = ref $h->{'content-length'} ? $h->{'content-length'}[0]
                                             : $h->{'content-length'};
        return if length($text) < $pos + $len;
        $r{body} = substr $text, $pos, $len;
        $pos += $len;

    } else {
        return unless $eof;
        $r{body} = substr $text, $pos;
        $pos = length $text;
    }

    $r{raw} = substr $text, 0, $pos;

    return (\%r, $pos);
}


# --- metrics -------------------------------------------------------------

sub metrics {
    my ($self, %opt) = @_;
    my $r = $self->metrics_response(%opt);

    return $r->{body} // '';
}


sub metrics_response {
    my ($self, %opt) = @_;
    my @h = _header_pairs($opt{headers});
    my $name = $opt{name} || 'metrics';

    push @h, Authorization => "Bearer $opt{token}" if defined $opt{token};

    my $r = $self->get($opt{path} || '/metrics', %opt, headers => \@h);

    Test::More::is($r->{status}, 200, "$name: status 200")
        or Test::More::diag("response: " . ($r->{error} // $r->{raw}));

    my $body = $r->{body} // '';

    $self->promtool_ok($body, "$name: promtool check metrics");
    $self->python_parse_ok($body, "$name: prometheus_client parser");

    my @dup = duplicate_series($body);
    Test::More::ok(!@dup, "$name: no duplicate series")
        or Test::More::diag("duplicates: @dup");

    return $r;
}


my $promtool_n = 0;

# ($ok, $output, \@lint): no assertion
sub promtool_check {
    my ($self, $body) = @_;
    my $name = 'promtool-' . ++$promtool_n . '.txt';
    my $file = $self->write_file($name, $body, 0644);

    my $out = `promtool check metrics < '$file' 2>&1`;
    my $rc = $? == -1 ? -1 : $? >> 8;
    my @lines = grep { /\S/ } split /\n/, $out;
    my $parse_re = qr/error while linting|parsing error|parse error/i;
    my @parse = grep { $_ =~ $parse_re } @lines;
    my @lint = grep { $_ !~ $parse_re } @lines;

    unlink $file unless $ENV{KEEP_T};

    # promtool: 0 clean, 3 lint problems only, 1 parse error
    my $ok = ($rc == 0 || $rc == 3) && !@parse;
    $ok = 0 if @lint && $ENV{PLAYARR_PROMTOOL_STRICT};

    return ($ok, "promtool exit $rc:\n$out", \@lint);
}


# batches, for tests that scrape hundreds of times (t/52, t/54): files
# written with write_file, checked after the load ends

# { file => [ok, output] }: promtool on each file, two at a time; ok as
# the harness's promtool_check has it (exit 0 or 3, no parse error)
sub promtool_batch {
    my ($t, @files) = @_;
    my %res;

    while (@files) {
        my @two = splice @files, 0, 2;
        my %pid;

        for my $f (@two) {
            my $pid = fork;
            die "fork: $!" unless defined $pid;
            if ($pid == 0) {
                { exec 'sh', '-c',
                       "promtool check metrics < '$f' > '$f.out' 2>&1" };
                POSIX::_exit(127);
            }
            $pid{$f} = $pid;
        }

        for my $f (@two) {
            waitpid $pid{$f}, 0;
            my $rc = $? >> 8;
            my $out = $t->read_file("$f.out") // '';
            my $ok = ($rc == 0 || $rc == 3)
                     && $out !~ /error\ while\ linting|parsing\ error
                                 |parse\ error/xi;
            $res{$f} = [$ok, "exit $rc: $out"];
        }
    }

    return \%res;
}


# { file => [ok, output] }: Debian's prometheus_client parser, one python
# process for all files; undef when it is not available
sub python_parse_batch {
    my ($t, @files) = @_;
    my $py = $ENV{PLAYARR_PYTHON}
             || (-x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3');

    return undef if $ENV{PLAYARR_NO_PYPARSE}
                    || system("$py -c 'import prometheus_client.parser'"
                              . ' >/dev/null 2>&1') != 0;

    my $list = $t->write_file('pyparse-list', join("\n", @files) . "\n");
    my $out = `$py -c '
import sys
from prometheus_client.parser import text_string_to_metric_families
for f in open(sys.argv[1]).read().split():
    try:
        n = 0
        for fam in text_string_to_metric_families(open(f).read()):
            n += len(fam.samples)
        print("ok", f, n)
    except Exception as e:
        print("bad", f, repr(e).replace("\\n", " "))
' '$list' 2>&1`;

    my %res;
    for (split /\n/, $out) {
        my ($st, $f, $msg) = split / /, $_, 3;
        $res{$f} = [$st eq 'ok', $msg] if defined $f;
    }

    return \%res;
}


sub promtool_ok {
    my ($self, $body, $name) = @_;
    my ($ok, $out, $lint) = $self->promtool_check($body);

    if (@$lint) {
        push @LINT, @$lint;
        Test::More::diag("promtool lint: $_") for @$lint;
    }

    Test::More::ok($ok, $name || 'promtool check metrics')
        or Test::More::diag($out);

    return $ok;
}


my $HAS_PYPARSE;

# ($ok, $output): the prometheus_client parser, no assertion; $ok is
# undef when the parser is not available or PLAYARR_NO_PYPARSE is set
sub python_parse_check {
    my ($self, $body) = @_;

    return (undef, 'PLAYARR_NO_PYPARSE') if $ENV{PLAYARR_NO_PYPARSE};

    # Debian's python3-prometheus-client lives in /usr/bin/python3, which
    # is not always the python3 first in PATH
    my $py = $ENV{PLAYARR_PYTHON} || (-x '/usr/bin/python3'
                                      ? '/usr/bin/python3' : 'python3');

    $HAS_PYPARSE //= system("$py -c 'import prometheus_client.parser'"
                            . ' >/dev/null 2>&1') == 0;

    return (undef, 'no python3-prometheus-client') unless $HAS_PYPARSE;

    my $file = $self->write_file('pyparse.txt', $body, 0644);

    my $out = `$py -c '
import sys
from prometheus_client.parser import text_string_to_metric_families
n = 0
for f in text_string_to_metric_families(open(sys.argv[1]).read()):
    n += len(f.samples)
print(n)
' '$file' 2>&1`;

    return ($? == 0 ? 1 : 0, $out);
}


sub python_parse_ok {
    my ($self, $body, $name) = @_;
    my ($ok, $out) = $self->python_parse_check($body);

    $name ||= 'prometheus_client parser';

    if (!defined $ok) {
        Test::More::pass("$name (skipped: $out)");
        return 1;
    }

    Test::More::ok($ok, $name) or Test::More::diag($out);

    return $ok;
}


sub _unescape_label {
    my ($v) = @_;
    $v =~ s/\\(.)/$1 eq 'n' ? "\n" : $1/ge;
    return $v;
}

sub _escape_label {
    my ($v) = @_;
    $v =~ s/\\/\\\\/g;
    $v =~ s/"/\\"/g;
    $v =~ s/\n/\\n/g;
    return $v;
}


sub series_key {
    my ($name, $labels) = @_;
    my @l = map { $_ . '="' . _escape_label($labels->{$_}) . '"' }
            sort keys %{ $labels || {} };

    return @l ? $name . '{' . join(',', @l) . '}' : $name;
}


# [name, {labels}, value] for every sample line, in order
sub _samples {
    my ($body) = @_;
    my @s;

    for my $line (split /\n/, $body) {
        next if $line =~ /^\s*(?:#|$)/;

        my ($name, $rest) = $line =~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)(.*)$/
            or next;
        my %l;

        if ($rest =~ s/^\{//) {
            while ($rest =~ s/^\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?//) {
                $l{$1} = _unescape_label($2);
            }
            $rest =~ s/^\s*\}// or next;
        }

        my ($value) = $rest =~ /^\s+(\S+)/ or next;
        push @s, [$name, \%l, $value];
    }

    return @s;
}


sub parse_metrics {
    my ($body) = @_;
    my %m;

    $m{ series_key($_->[0], $_->[1]) } = $_->[2] for _samples($body);

    return \%m;
}


sub duplicate_series {
    my ($body) = @_;
    my (%seen, @dup);

    for (_samples($body)) {
        my $k = series_key($_->[0], $_->[1]);
        push @dup, $k if $seen{$k}++ == 1;
    }

    return @dup;
}


sub metric_types {
    my ($body) = @_;
    my %t;
    $t{$1} = $2 while $body =~ /^# TYPE (\S+) (\S+)\s*$/mg;
    return \%t;
}

sub metric_help {
    my ($body) = @_;
    my %h;
    $h{$1} = $2 while $body =~ /^# HELP (\S+) ?(.*)$/mg;
    return \%h;
}


sub sample {
    my ($m, $name, $labels) = @_;

    $m = parse_metrics($m) unless ref $m;

    return $m->{ series_key($name, $labels) };
}


sub samples {
    my ($m, $name) = @_;
    my @out;

    if (!ref $m) {
        return map { [$_->[1], $_->[2]] } grep { $_->[0] eq $name }
               _samples($m);
    }

    for my $k (sort keys %$m) {
        my ($n, $l) = $k =~ /^([^{]+)(?:\{(.*)\})?$/ or next;
        next unless $n eq $name;
        my %l;
        $l{$1} = _unescape_label($2)
            while defined $l && $l =~ /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
        push @out, [\%l, $m->{$k}];
    }

    return @out;
}


sub self_metrics_ok {
    my ($self, $body, $name) = @_;
    my $types = metric_types($body);
    my $help = metric_help($body);
    my @fam = keys %$types;

    $name ||= 'self metrics';

    my @bi = samples($body, $SELF{build_info});
    Test::More::is(scalar @bi, 1, "$name: one $SELF{build_info} sample");

    if (@bi) {
        my ($l, $v) = @{ $bi[0] };
        Test::More::is($v, 1, "$name: build_info value 1");
        Test::More::is_deeply([sort keys %$l], ['nginx_version', 'version'],
                              "$name: build_info labels");
        Test::More::is($l->{nginx_version}, $SELF{nginx_version},
                       "$name: nginx_version label");
        Test::More::like($l->{version} // '', qr/^\S+$/,
                         "$name: version label not empty");
    }

    for my $what (qw(zone_used zone_free)) {
        my @f = grep { $_ =~ $SELF{$what} } @fam;
        Test::More::ok(@f >= 1, "$name: a $what family ($SELF{$what})")
            or Test::More::diag("families: @{[ sort @fam ]}");

        for my $f (@f) {
            my @s = samples($body, $f);
            Test::More::ok(@s >= 1 && !grep({ $_->[1] !~ /^\d+(?:\.0+)?(?:e\+?\d+)?$/ } @s),
                           "$name: $f has non-negative values");
        }
    }

    my @zone = grep { index($_, $SELF{zone_prefix}) == 0 } @fam;
    Test::More::ok(@zone >= 2, "$name: zone families: @{[ sort @zone ]}");

    my @series = samples($body, $SELF{series});
    Test::More::ok(@series >= 1, "$name: $SELF{series} samples present");
    Test::More::ok(!grep({ !defined $_->[0]{family} || $_->[0]{family} eq '' }
                         @series),
                   "$name: every $SELF{series} sample has a family label");

    # every family with samples has exactly one TYPE and a HELP
    my %seen_fam;
    for my $s (_samples($body)) {
        my $n = $s->[0];
        my $f = exists $types->{$n} ? $n
              : ($n =~ /^(.*)_(?:bucket|sum|count)$/ && exists $types->{$1})
                ? $1 : undef;
        $seen_fam{ $f // "(untyped) $n" } = 1;
    }
    my @untyped = grep { /^\(untyped\)/ } keys %seen_fam;
    Test::More::ok(!@untyped, "$name: every sample has a # TYPE")
        or Test::More::diag("@untyped");
    my @nohelp = grep { !/^\(untyped\)/ && !defined $help->{$_} }
                 keys %seen_fam;
    Test::More::ok(!@nohelp, "$name: every family has a # HELP")
        or Test::More::diag("@nohelp");

    return;
}


sub _header_pairs {
    my ($h) = @_;

    return () unless $h;
    return @$h if ref $h eq 'ARRAY';

    my @p;
    for my $k (sort keys %$h) {
        push @p, map { ($k, $_) } ref $h->{$k} ? @{ $h->{$k} } : $h->{$k};
    }

    return @p;
}


# --- cleanup -------------------------------------------------------------

sub _finish {
    my ($self) = @_;

    return if $self->{finished}++;

    if ($self->{pid}) {
        my ($ok, $why) = $self->_stop_quiet;
        my @bad = $self->bad_log_lines;

        if (!$ok || @bad) {
            Test::More::diag("nginx in $self->{dir}: $why") unless $ok;
            Test::More::diag(join "\n", 'bad error log lines:', @bad) if @bad;
            $? ||= 1;
        }

    } elsif (($self->{last_pid} && !$self->{checked})) {
        my @bad = $self->bad_log_lines;

        if (@bad) {
            Test::More::diag(join "\n", 'bad error log lines:', @bad);
            $? ||= 1;
        }
    }

    my $tb = Test::More->builder;
    my $failed = !$tb->is_passing || $? || $END_STATUS;

    if ($failed && ($self->{last_pid} || $self->{pid})) {
        my @log = split /\n/, $self->error_log_text;
        @log = @log[-40 .. -1] if @log > 40;
        Test::More::diag("error log of $self->{dir} (tail):\n"
                         . join("\n", @log)) if @log;
    }

    if ($ENV{KEEP_T}) {
        Test::More::diag("KEEP_T: kept $self->{dir}");
    } else {
        remove_tree($self->{dir});
    }
}


# --- load from forked clients (t/5x) ---------------------------------------

# one request on the keep-alive connection kept in $st (a hash the caller
# owns); a connection the server closed (a reload, a killed worker) is
# opened again and the request sent again: a request that got no answer was
# not processed.  $st->{retries} counts the requests sent again.
sub keepalive_request {
    my ($self, $st, $method, $path, %opt) = @_;

    for (1 .. 300) {
        $st->{c} ||= eval { $self->connect(timeout => $opt{timeout}) }
            or do { sleep 0.01; next };
        my $r = $st->{c}->request($method, $path, %opt);
        my $conn = lc(header($r, 'Connection') // '');

        if ($r->{status} == 599 || $conn eq 'close') {
            $st->{c}->close;
            $st->{c} = undef;
        }

        return $r if $r->{status} != 599;

        $st->{retries}++;
    }

    return { status => 599, headers => {} };
}

my $KIDS_PARENT = $$;
my @KIDS;

# a child process running $code; exit status 0 unless $code died
sub spawn {
    my ($code) = @_;
    my $pid = fork;
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        eval { $code->() };
        print STDERR $@ if $@;
        _exit($@ ? 1 : 0);
    }

    push @KIDS, $pid;
    return $pid;
}

# waits for these children (all spawned ones by default); how many failed
sub reap_kids {
    my (@pids) = @_;
    my %gone;
    my $failed = 0;

    @pids = @KIDS unless @pids;

    for my $p (@pids) {
        waitpid $p, 0;
        $failed++ if $?;
        $gone{$p} = 1;
    }

    @KIDS = grep { !$gone{$_} } @KIDS;

    return $failed;
}

# the sum of a family's samples in parse_metrics() output
sub family_sum {
    my ($m, $name) = @_;
    my $s = 0;
    $s += $m->{$_} for grep { /^\Q$name\E(?:\{|$)/ } keys %$m;
    return $s;
}


END {
    my $status = $?;
    $END_STATUS = $status;
    $? = 0;

    # clients still running are stopped before their nginx is
    if ($$ == $KIDS_PARENT) {
        kill 'KILL', @KIDS if @KIDS;
        reap_kids();
    }

    for my $t (@LIVE) {
        $t->_finish;
    }

    $? ||= $status;
}



# A keep-alive client on one port: nginx runs the log phase of a request
# before it reads the next one on the same connection, so a scrape sent
# after a request on the same connection always sees that request
# recorded.  PlayarrTest::Client->new($t, $port), ->req($method, $path,
# %opt) as $t->request; a closed connection is opened again next time.

package PlayarrTest::Client;

use strict;
use warnings;

sub new {
    my ($class, $t, $port) = @_;
    return bless { t => $t, port => $port }, $class;
}

sub req {
    my ($self, $method, $path, %opt) = @_;

    $self->{c} ||= $self->{t}->connect(port => $self->{port});
    my $r = $self->{c}->request($method, $path, %opt);

    my $conn = PlayarrTest::header($r, 'Connection') // '';
    if ($r->{status} == 599 || lc $conn eq 'close') {
        $self->{c}->close;
        $self->{c} = undef;
    }

    return $r;
}


package PlayarrTest::Conn;

use strict;
use warnings;

use Errno qw(EINTR EAGAIN);
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time);

sub new {
    my ($class, %opt) = @_;
    my $s = IO::Socket::INET->new(
        PeerAddr => '127.0.0.1',
        PeerPort => $opt{port},
        Proto    => 'tcp',
        Timeout  => $opt{timeout},
    ) or die "connect 127.0.0.1:$opt{port}: $@\n";

    binmode $s;
    $s->autoflush(1);

    return bless { sock => $s, buf => '', timeout => $opt{timeout},
                   eof => 0 }, $class;
}


sub write {
    my ($self, $bytes) = @_;
    my $s = $self->{sock};
    my $off = 0;

    local $SIG{PIPE} = 'IGNORE';

    while ($off < length $bytes) {
        my $n = syswrite $s, $bytes, length($bytes) - $off, $off;
        if (!defined $n) {
            next if $! == EINTR;
            return 0;
        }
        $off += $n;
    }

    return 1;
}


# reads more bytes into the buffer; 0 at eof or timeout
sub _fill {
    my ($self, $deadline) = @_;
    my $sel = IO::Select->new($self->{sock});

    return 0 if $self->{eof};

    my $left = $deadline - time;
    return 0 if $left <= 0;

    return 0 unless $sel->can_read($left);

    my $n = sysread $self->{sock}, my $chunk, 65536;

    if (!$n) {
        $self->{eof} = 1;
        return 0;
    }

    $self->{buf} .= $chunk;

    return 1;
}


sub read_all {
    my ($self) = @_;
    my $deadline = time + $self->{timeout};

    1 while $self->_fill($deadline);

    my $s = $self->{buf};
    $self->{buf} = '';

    return $s;
}


sub request {
    my ($self, $method, $path, %opt) = @_;
    my @h = PlayarrTest::_header_pairs($opt{headers});
    my %has = map { lc($h[$_ * 2]) => 1 } 0 .. @h / 2 - 1;
    my $body = $opt{body};
    my $req = "$method $path HTTP/1.1\r\n";

    $req .= "Host: " . ($opt{host} // 'localhost') . "\r\n" unless $has{host};
    $req .= "Connection: close\r\n" if $opt{close} && !$has{connection};

    if (defined $body && !$has{'content-length'}
        && !$has{'transfer-encoding'})
    {
        $req .= "Content-Length: " . length($body) . "\r\n";
    }

    while (my ($k, $v) = splice @h, 0, 2) {
        $req .= "$k: $v\r\n";
    }

    $req .= "\r\n";
    $req .= $body if defined $body;

    $self->write($req)
        or return { status => 599, error => "write: $!", headers => {},
                    header_lines => [], body => '', raw => '' };

    my $deadline = time + $self->{timeout};

    while (1) {
        my ($r, $used) = PlayarrTest::_parse_response($self->{buf}, $method,
                                                      $self->{eof});
        if ($r) {
            $self->{buf} = substr $self->{buf}, $used;

            if ($opt{close}) {
                1 while $self->_fill($deadline);
                $r->{extra} = $self->{buf};
                $self->{buf} = '';
            } else {
                $r->{extra} = '';
            }

            return $r;
        }

        next if $self->_fill($deadline);

        return { status => 599, headers => {}, header_lines => [],
                 body => '', raw => $self->{buf},
                 error => ($self->{eof} ? 'connection closed' : 'timeout')
                          . ' before a complete response' };
    }
}


sub close {
    my ($self) = @_;
    close $self->{sock} if $self->{sock};
    $self->{sock} = undef;
}


1;
