package PlayarrTest::Nginx;

=head1 NAME

PlayarrTest::Nginx - the life of one private nginx for a test: its
directory and configuration, free ports, start, reload, stop, the error
log checks; the forked clients of the load tests

=head1 SYNOPSIS

Not used alone: C<PlayarrTest> is this class with
L<PlayarrTest::HTTP> and L<PlayarrTest::Metrics> mixed in (see
F<t/lib/PlayarrTest.pm>).

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
must be world-traversable).

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
    $t->worker_dir($name, $mode)    DIR/$name made (if missing) and owned by
                                    the worker user; chmod to $mode if given
    PlayarrTest::example_http       docs/examples/nginx.conf, its site paths
                                    rewritten to the test's own
    PlayarrTest::slurp($file)       a file of the repo, whole; dies if it
                                    cannot be read
    PlayarrTest::wait_until($code, $seconds)
                                    calls $code every 50 ms until it is
                                    true (then 1) or $seconds (15) have
                                    passed (then 0)

=head2 Process control

    $t->start          dies (with the error log) if nginx does not start;
                       returns once the pid file holds the master pid, all
                       workers exist and the port accepts connections
    $t->test_config(timeout => $s)
                       ($exit_code, $output): nginx -t on the current
                       configuration, with its own error log
                       (-e DIR/nginx-t.log); $output is what nginx printed;
                       timeout: killed after $s seconds (exit code 137)
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


=head2 Load from forked clients

    PlayarrTest::spawn(sub { ... })   a child running the code; exit 0
                                      unless it died; returns its pid
    PlayarrTest::upstream($port, sub { my ($socket) = @_; ... })
                                      a tiny upstream on 127.0.0.1:$port:
                                      a process a connection runs the
                                      code; returns the server's pid
    PlayarrTest::stop_upstream($pid)  stops it and its connections (at
                                      exit at the latest)
    PlayarrTest::kids_running(@pids)  the ones still running (all
                                      spawned ones by default); those that
                                      ended are reaped
    PlayarrTest::reap_kids(@pids)     waits for them (all by default);
                                      how many failed.  Children still
                                      running at exit are killed before
                                      their nginx is stopped.

=cut

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(remove_tree);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use POSIX qw(WNOHANG _exit);
use Test::More ();
use Time::HiRes qw(sleep time);

our $END_STATUS = 0;

# t/lib/PlayarrTest/Nginx.pm: the repository is three levels up
my $REPO = abs_path(dirname(abs_path(__FILE__)) . '/../../..');
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


# a directory of the workers: the token and state files go there
sub worker_dir {
    my ($self, $name, $mode) = @_;
    my $dir = $self->path($name);
    my ($uid, $gid) = $self->worker_ids;

    -d $dir or mkdir $dir or die "mkdir $dir: $!";
    chown $uid, $gid, $dir or die "chown $dir: $!";
    chmod $mode, $dir or die "chmod $dir: $!" if defined $mode;

    return $dir;
}


sub slurp {
    my ($file) = @_;

    open my $fh, '<', $file or die "$file: $!";
    binmode $fh;
    local $/;
    my $s = <$fh>;
    close $fh;

    return $s // '';
}


sub wait_until {
    my ($cond, $seconds) = @_;
    my $deadline = time + ($seconds || 15);

    while (time < $deadline) {
        return 1 if $cond->();
        sleep 0.05;
    }

    return $cond->() ? 1 : 0;
}


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


# nginx with these arguments, waited for: ($exit_code, $output); a
# leading { timeout => $s } kills it (SIGKILL, by timeout(1)) after $s
sub _run_nginx {
    my ($self, @args) = @_;
    my %o = ref $args[0] ? %{ shift @args } : ();
    my @cmd = (defined $o{timeout} ? ('timeout', '-s', 'KILL', $o{timeout})
                                   : (),
               nginx_bin());
    my $dir = $self->{dir};
    my $out = "$dir/nginx-cmd.out";

    my $pid = fork;
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out;
        open STDERR, '>&', \*STDOUT;
        exec @cmd, '-p', "$dir/", '-c', "$dir/nginx.conf", @args
            or print STDERR "exec $cmd[0]: $!\n";
        _exit(127);
    }

    local $?;
    waitpid($pid, 0);
    my $rc = $? >> 8;
    $rc = 128 + ($? & 127) if $? & 127;

    return ($rc, $self->read_file($out) // '');
}


sub test_config {
    my ($self, %opt) = @_;

    unlink $self->path('nginx-t.log');

    return $self->_run_nginx({ timeout => $opt{timeout} },
                             '-e', $self->path('nginx-t.log'), '-t');
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

my @UPSTREAMS;

# a tiny upstream server: listens on 127.0.0.1:$port, and runs
# $handler->($socket) in a process of its own for each connection; the
# server and its connections are a process group, stopped by
# stop_upstream or at exit
sub upstream {
    my ($port, $handler) = @_;
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                  LocalPort => $port, Proto => 'tcp',
                                  Listen => 128, ReuseAddr => 1)
        or die "upstream: listen on $port: $@\n";

    my $pid = fork;
    die "fork: $!" unless defined $pid;

    if ($pid) {
        close $l;
        push @UPSTREAMS, $pid;
        return $pid;
    }

    setpgrp(0, 0);
    $SIG{CHLD} = 'IGNORE';
    $SIG{PIPE} = 'IGNORE';

    while (1) {
        my $c = $l->accept or next;
        my $k = fork;

        if (!defined $k || $k) {
            close $c;
            next;
        }

        close $l;
        binmode $c;
        eval { $handler->($c) };
        _exit(0);
    }
}

sub stop_upstream {
    my ($pid) = @_;

    local $?;
    kill 'TERM', -$pid;
    waitpid $pid, 0;
    @UPSTREAMS = grep { $_ != $pid } @UPSTREAMS;
}


# exit statuses of children kids_running saw end: pid => $?
my %KID_STATUS;

# the children among these (all spawned ones by default) still running;
# the ones that ended are reaped, their status kept for reap_kids
sub kids_running {
    my (@pids) = @_;

    @pids = @KIDS unless @pids;

    for my $p (@pids) {
        next if exists $KID_STATUS{$p};
        local $?;
        $KID_STATUS{$p} = $? if waitpid($p, WNOHANG) == $p;
    }

    @KIDS = grep { !exists $KID_STATUS{$_} } @KIDS;

    return grep { !exists $KID_STATUS{$_} } @pids;
}

# waits for these children (all spawned ones by default); how many failed
sub reap_kids {
    my (@pids) = @_;
    my %gone;
    my $failed = 0;

    @pids = (@KIDS, keys %KID_STATUS) unless @pids;

    for my $p (@pids) {
        my $st = exists $KID_STATUS{$p} ? delete $KID_STATUS{$p}
               : waitpid($p, 0) == $p ? $?
               : -1;
        $failed++ if $st;
        $gone{$p} = 1;
    }

    @KIDS = grep { !$gone{$_} } @KIDS;

    return $failed;
}


END {
    my $status = $?;
    $END_STATUS = $status;
    $? = 0;

    # clients and upstreams still running are stopped before their nginx
    if ($$ == $KIDS_PARENT) {
        kill 'KILL', @KIDS if @KIDS;
        reap_kids();
        my @up = @UPSTREAMS;
        stop_upstream($_) for @up;
    }

    for my $t (@LIVE) {
        $t->_finish;
    }

    $? ||= $status;
}


1;
