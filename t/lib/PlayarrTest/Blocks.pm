package PlayarrTest::Blocks;

=head1 NAME

PlayarrTest::Blocks - stateless tests written as data: per block a
configuration, a request and the answer expected, in the C<__DATA__> of
the test, after the t/*.t of openresty's headers-more module

=head1 SYNOPSIS

    use PlayarrTest::Blocks qw(run_blocks);

    run_blocks();                 # every block of __DATA__, in order

    __DATA__

    === zone below 8 pages
    --- http
    playarr_metrics_zone m:28k;   # <- emerg
    --- emerg
    zone "m:28k" is too small, the minimum is 32768

    === no token
    --- request
    GET /metrics
    --- error_code: 401
    --- response_headers
    WWW-Authenticate: Bearer realm="playarr-metrics"
    --- response_body
    {"error":"Missing or invalid Authorization header."}

=head1 DESCRIPTION

A block starts with a line C<=== name>; its sections with C<--- name>,
optionally followed by C<: value> (the section is then that value) or by
modifiers.  A section's text is its lines up to the next section or block,
without the last line's newline; blank lines at the end of a block are
not part of it.  Modifiers: C<eval> (the text is a Perl expression, its
value is the section; C<"abc\x01\n">) and, for C<file>, the file's name
and mode.  C<%%NAME%%> in any section is replaced by C<vars> (below) and,
once nginx runs, by the harness's own placeholders (C<%%DIR%%>,
C<%%PORT%%>...).

Sections of the configuration (a block without them uses the C<http>,
C<main> of C<run_blocks>, or the running C<t>):

    http, main              the texts of PlayarrTest->new
    file NAME [MODE]        a file written in DIR before nginx -t or start
                            (mode 0600 unless given); checked unchanged
                            after an emerg block
    mkdir NAME              a directory made in DIR

A block with C<emerg> is an C<nginx -t> case: the test must fail, with
exactly one C<[emerg]> line, which says exactly the section's text, in
the configuration file at the line that carries the comment C<< # <- >>
(in the block's C<http> or C<main>), and nginx says C<test failed>.

A block with C<request> sends it to the block's nginx (started when its
configuration differs from the previous block's, stopped at the end) or
to C<t>:

    request                 "METHOD PATH" (on one line), the body on the
                            lines after it (or request_body)
    request_body            the body, as it is
    more_headers            "Name: value" lines (repeat a name to send it
                            twice)
    error_code              the status expected (default 200)
    response_headers        "Name: value" lines, each header's values
                            exactly (in order when repeated); "!Name": no
                            such header
    response_body           the body, exactly
    response_body_like      a regex the body must match

Every answer with a body has a Content-Length, if any, equal to its
length; C<never> strings appear nowhere in it.

    run_blocks(%opt)

    blocks  => \@blocks     instead of __DATA__ (PlayarrTest::Blocks::parse)
    http, main              the configuration of a block without its own
    new     => { module => 0 }   more options of PlayarrTest->new
    t       => $t           a running PlayarrTest for blocks without their
                            own configuration
    vars    => { NAME => $value }    %%NAME%% in every section
    headers => [ Name => $value, ... ]
                            sent with every request, before its
                            more_headers
    never   => [ $secret ]  strings no answer may hold
    client  => $cl          requests sent on this PlayarrTest::Client
                            (keep-alive) instead of a connection each
    sections => { name => sub { my ($block, $r, $t, $value) = @_; ... } }
                            more sections: called with the block (its
                            method and path too), the response, the nginx
                            and the section's value, after the checks
                            above
    send    => sub { my ($block, $request) = @_; ... }
                            sends the request (a coderef that does it and
                            returns the response): around it, a test can
                            scrape before and after; default: $request->()

Returns the blocks that ran.

=cut

use strict;
use warnings;

use Exporter qw(import);
use Test::More ();

use PlayarrTest;

our @EXPORT_OK = qw(run_blocks);

my %SECTIONS = map { $_ => 1 }
    qw(http main file mkdir emerg request request_body more_headers
       error_code response_headers response_body response_body_like);


# the blocks of a text: [ { name, line, sec => { name => section },
# order => [sections], mkdir => [names] } ], a section { name, text,
# eval, file => [name, mode] for a file }
sub parse {
    my ($text, $where) = @_;
    my (@blocks, $b, $sec);
    my $n = 0;

    for my $line (split /\n/, $text, -1) {
        $n++;

        if ($line =~ /^=== (.+?)\s*$/) {
            push @blocks, $b = { name => $1, line => $n, sec => {},
                                 order => [], mkdir => [] };
            $sec = undef;
            next;
        }

        if ($line =~ /^--- (\w+)(?:(: ?)(.*)|\s*(.*?))\s*$/) {
            die "$where:$n: a section before the first block\n" unless $b;

            my ($name, $colon, $value, $mods) = ($1, $2, $3, $4 // '');
            my @mods = split ' ', $mods;

            $sec = { name => $name, text => [] };

            if ($name eq 'file') {
                my $file = shift @mods
                    or die "$where:$n: --- file without a name\n";
                my $mode = @mods && $mods[0] =~ /^0[0-7]+$/ ? oct shift @mods
                                                            : 0600;
                $sec->{file} = [$file, $mode];

            } elsif ($name eq 'mkdir') {
                push @{ $b->{mkdir} }, @mods;
                $sec = undef;
                next;
            }

            $sec->{eval} = grep { $_ eq 'eval' } @mods;
            $sec->{text} = [$value] if defined $colon;
            $b->{sec}{$name} = $sec unless $name eq 'file';
            push @{ $b->{order} }, $sec;
            next;
        }

        if ($sec) {
            push @{ $sec->{text} }, $line;
        } elsif ($b && $line =~ /\S/) {
            die "$where:$n: text outside a section: $line\n";
        }
    }

    for my $b (@blocks) {
        for my $s (@{ $b->{order} }) {
            my @l = @{ $s->{text} };
            pop @l while @l && $l[-1] !~ /\S/;
            $s->{text} = join "\n", @l;
        }
    }

    return @blocks;
}


# the blocks of the test's own __DATA__
sub data_blocks {
    no strict 'refs';
    my $fh = \*{'main::DATA'};

    die "PlayarrTest::Blocks: no __DATA__ in $0\n" unless defined fileno $fh;

    local $/;
    my $text = <$fh>;

    return parse($text, "$0 __DATA__");
}


sub _value {
    my ($s, $vars) = @_;
    my $text = $s->{text};

    $text =~ s/%%([A-Z][A-Z0-9_]*)%%/exists $vars->{$1} ? $vars->{$1}
                                                        : "%%$1%%"/ge;

    if ($s->{eval}) {
        package main;
        my $v = eval $text;
        die "eval of --- $s->{name}: $@" if $@;
        return $v;
    }

    return $text;
}


sub run_blocks {
    my (%opt) = @_;
    my @blocks = $opt{blocks} ? @{ $opt{blocks} } : data_blocks();
    my $vars = $opt{vars} || {};
    my ($own, $own_key);

    for my $b (@blocks) {
        for my $name (keys %{ $b->{sec} }) {
            die "block \"$b->{name}\": unknown section --- $name\n"
                unless $SECTIONS{$name} || $opt{sections}{$name};
        }

        my %v = map { $_ => _value($b->{sec}{$_}, $vars) }
                keys %{ $b->{sec} };
        my @files = map { [ @{ $_->{file} }, _value($_, $vars) ] }
                    grep { $_->{file} } @{ $b->{order} };
        my $http = $v{http} // $opt{http};
        my $main = $v{main} // $opt{main};

        if (exists $v{emerg}) {
            _emerg($b, \%v, $http // '', $main // '', \@files, \%opt);
            next;
        }

        die "block \"$b->{name}\": neither --- emerg nor --- request\n"
            unless exists $v{request};

        my $t = $opt{t};

        if (defined $http || defined $main || @files || @{ $b->{mkdir} }) {
            my $key = join "\0", $http // '', $main // '',
                                 map { @$_ } @files, $b->{mkdir};

            if (!$own || $key ne $own_key) {
                $own->stop if $own;
                $own = PlayarrTest->new(%{ $opt{new} || {} },
                                        http => $http // '',
                                        main => $main // '');
                _plant($own, \@files, $b->{mkdir});
                $own->start;
                $own_key = $key;
            }

            $t = $own;
        }

        die "block \"$b->{name}\": no nginx (no --- http, no t =>)\n"
            unless $t;

        _request($t, $b, \%v, \%opt);
    }

    $own->stop if $own;

    return @blocks;
}


sub _plant {
    my ($t, $files, $dirs) = @_;

    for my $d (@$dirs) {
        mkdir $t->path($d) or die "mkdir $d: $!";
    }

    $t->write_file($_->[0], $_->[2], $_->[1]) for @$files;
}


sub _emerg {
    my ($b, $v, $http, $main, $files, $opt) = @_;
    my $name = $b->{name};
    my $t = PlayarrTest->new(%{ $opt->{new} || {} },
                             http => $http, main => $main);

    _plant($t, $files, $b->{mkdir});

    my $line = $t->conf_line(qr/#\s*<-/)
        or die "block \"$name\": no line marked \"# <-\"\n";
    my $conf = $t->conf_file;
    my $want = $t->_subst($v->{emerg});
    my ($rc, $out) = $t->test_config;
    my @emerg = grep { /\[emerg\]/ } split /\n/, $out;
    my ($msg, $at) = ($emerg[0] // '') =~ /^nginx: \[emerg\] (.*) in (\S+)$/;

    Test::More::isnt($rc, 0, "$name: nginx -t fails");
    Test::More::is(scalar @emerg, 1, "$name: one [emerg]")
        or Test::More::diag($out);
    Test::More::is($msg, $want, "$name: the message") or Test::More::diag($out);
    Test::More::is($at, "$conf:$line", "$name: names $conf:$line")
        or Test::More::diag($out);
    Test::More::like($out, qr/test failed/, "$name: test failed");

    for my $f (@$files) {
        Test::More::is($t->read_file($f->[0]), $f->[2],
                       "$name: $f->[0] is left alone");
    }
}


sub _request {
    my ($t, $b, $v, $opt) = @_;
    my $name = $b->{name};
    my ($line, $body) = split /\n/, $t->_subst($v->{request}), 2;
    my ($method, $path) = $line =~ /^\s*([A-Z]+)\s+(\S+)\s*$/
        or die "block \"$name\": --- request is not \"METHOD PATH\"\n";
    my @h = @{ $opt->{headers} || [] };

    $body = $v->{request_body} if exists $v->{request_body};

    for my $l (split /\n/, $t->_subst($v->{more_headers} // '')) {
        next unless $l =~ /\S/;
        my ($k, $val) = $l =~ /^([^:\s]+):[ \t]?(.*)$/
            or die "block \"$name\": bad header line: $l\n";
        push @h, $k => $val;
    }

    my @o = (headers => \@h, defined $body ? (body => $body) : ());
    my $send = $opt->{client}
               ? sub { $opt->{client}->req($method, $path, @o) }
               : sub { $t->request($method, $path, @o) };

    @$b{qw(method path)} = ($method, $path);
    my $r = $opt->{send} ? $opt->{send}->($b, $send) : $send->();
    my $status = $v->{error_code} // 200;

    Test::More::is($r->{status}, $status, "$name: status $status")
        or Test::More::diag($r->{error} // $r->{raw});

    _headers_ok($t, $name, $r, $v->{response_headers})
        if exists $v->{response_headers};

    if (exists $v->{response_body}) {
        Test::More::is($r->{body}, $t->_subst($v->{response_body}),
                       "$name: body");
    }

    if (exists $v->{response_body_like}) {
        my $re = $t->_subst($v->{response_body_like});
        Test::More::like($r->{body}, qr/$re/, "$name: body like /$re/");
    }

    if (length($r->{body} // '')) {
        my $cl = PlayarrTest::header($r, 'Content-Length');
        Test::More::is($cl // length $r->{body}, length $r->{body},
                       "$name: Content-Length, if any, is the body's");
    }

    for my $s (@{ $opt->{never} || [] }) {
        Test::More::ok(index($r->{raw} // '', $s) < 0,
                       "$name: the answer holds no secret");
    }

    for my $s (sort keys %{ $opt->{sections} || {} }) {
        $opt->{sections}{$s}->($b, $r, $t, $v->{$s}) if exists $v->{$s};
    }

    return $r;
}


sub _headers_ok {
    my ($t, $name, $r, $text) = @_;
    my (%want, @order, @absent);

    for my $l (split /\n/, $t->_subst($text)) {
        next unless $l =~ /\S/;

        if ($l =~ /^!\s*(\S+)\s*$/) {
            push @absent, $1;
            next;
        }

        my ($k, $val) = $l =~ /^([^:\s]+):[ \t]?(.*)$/
            or die "$name: bad response_headers line: $l\n";
        push @order, lc $k unless $want{ lc $k };
        push @{ $want{ lc $k } }, $val;
    }

    for my $k (@order) {
        my $got = $r->{headers}{$k};
        my @got = !defined $got ? () : ref $got ? @$got : ($got);

        Test::More::is_deeply(\@got, $want{$k},
                              "$name: $k: @{[ join ' | ', @{ $want{$k} } ]}");
    }

    for my $k (@absent) {
        Test::More::ok(!defined $r->{headers}{ lc $k }, "$name: no $k");
    }
}


1;
