package PlayarrTest::HTTP;

=head1 NAME

PlayarrTest::HTTP - an HTTP/1.1 client for the private nginx of a test:
one request a connection, keep-alive connections, raw bytes, a response
parser; session cookies as Playarr signs them

=head1 SYNOPSIS

Mixed into C<PlayarrTest> (F<t/lib/PlayarrTest.pm>): the methods below
are called on a test object, whose C<port> they use; the functions are
also reachable as C<PlayarrTest::name>.

=head1 DESCRIPTION

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
    PlayarrTest::bearer($token)     [Authorization => "Bearer $token"]

    PlayarrTest::session_jwt($secret, \%payload or $json, %o)
                                    a session cookie's value as Playarr's
                                    jsonwebtoken signs it (HS256)
    $t->keepalive_request(\%state, $method, $path, %opt)
                                    one request on the keep-alive
                                    connection kept in %state, sent again
                                    on a new one when the server closed it
    my $cl = PlayarrTest::Client->new($t, $port)
    $cl->req($method, $path, %opt)  a keep-alive client: the log phase of a
                                    request has run before the next request
                                    on the connection is read
    $cl->close

=cut

use strict;
use warnings;

use Time::HiRes qw(sleep);

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


sub bearer { [ Authorization => "Bearer $_[0]" ] }


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


sub header_pairs {
    my ($h) = @_;

    return () unless $h;
    return @$h if ref $h eq 'ARRAY';

    my @p;
    for my $k (sort keys %$h) {
        push @p, map { ($k, $_) } ref $h->{$k} ? @{ $h->{$k} } : $h->{$k};
    }

    return @p;
}


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

# A keep-alive client on one port: nginx runs the log phase of a request
# before it reads the next one on the same connection, so a scrape sent
# after a request on the same connection always sees that request
# recorded.  PlayarrTest::Client->new($t, $port), ->req($method, $path,
# %opt) as $t->request; a closed connection is opened again next time;
# ->close.

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

    my $conn = PlayarrTest::HTTP::header($r, 'Connection') // '';
    if ($r->{status} == 599 || lc $conn eq 'close') {
        $self->{c}->close;
        $self->{c} = undef;
    }

    return $r;
}

sub close {
    my ($self) = @_;

    $self->{c}->close if $self->{c};
    $self->{c} = undef;
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
    my @h = PlayarrTest::HTTP::header_pairs($opt{headers});
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
        my ($r, $used) = PlayarrTest::HTTP::_parse_response(
                             $self->{buf}, $method, $self->{eof});
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

