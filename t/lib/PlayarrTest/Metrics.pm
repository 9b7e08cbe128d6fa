package PlayarrTest::Metrics;

=head1 NAME

PlayarrTest::Metrics - what a test checks of a /metrics body: a scrape
through promtool and the prometheus_client parser, no duplicate series,
the self metrics; the text format parsed into series and values

=head1 SYNOPSIS

Mixed into C<PlayarrTest> (F<t/lib/PlayarrTest.pm>): the methods below
are called on a test object (they use its C<get> and C<write_file>); the
functions are also reachable as C<PlayarrTest::name>.

=head1 DESCRIPTION

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
    PlayarrTest::requests_key($endpoint, $status, $user)  the key of a
                                    playarr_http_requests_total series
    PlayarrTest::sample($body_or_parsed, $name, {labels})  value or undef
    PlayarrTest::samples($body_or_parsed, $name) list of [{labels}, value]
    PlayarrTest::duplicate_series($body) list of keys seen twice
    $t->self_metrics_ok($body)       the module's self metrics (names in
                                     %PlayarrTest::SELF, one place to adjust)

    PlayarrTest::family_sum($body_or_parsed, $name)
        the sum of a family's samples
    $t->promtool_batch(@files), $t->python_parse_batch(@files)
        { file => [ok, output] } for bodies saved with write_file, for
        tests that scrape hundreds of times and check after the load

=head2 Scraping and pushing as a test does it

    $t->scrape_setup(token => $tok, path => '/scrape')
        what scrape, quiet_scrape and push_updates send when a call says
        nothing: the Bearer token (none by default) and the export path
        (/metrics)
    $t->scrape($name, %opt)
        metrics() with those defaults (every check of metrics_response,
        named $name); returns the body and keeps it:
    $t->scrape_series($name, %opt)  parse_metrics() of a scrape
    $t->scraped                 the body of the last scrape
    $t->value($family, {labels}) a sample of it (sample())
    $t->quiet_scrape(%opt)      no assertion: the body, or a die unless
                                200 (or_undef => 1: undef); client => $cl
                                sends it on that PlayarrTest::Client's
                                connection (after the request it follows
                                there has been recorded), keepalive =>
                                \%state with keepalive_request (sent again
                                on a new connection when nginx closed
                                it); token, path, port
    $t->quiet_series(%opt)      parse_metrics() of a quiet_scrape
    PlayarrTest::delta($before, $after, $family or qr/.../)
        { series key => after - before } of the series that changed, of
        one family (its name: the family with _bucket, _sum, _count
        spelled out) or of the series names matching a regex; $before and
        $after are bodies or parse_metrics() results
    $t->push_updates($updates, %opt)
        POST /push, Content-Type: application/json, the default token;
        $updates a ref (encoded as canonical UTF-8 JSON) or the body as
        it is; path, method, token, timeout, headers (all of them,
        replacing the defaults)
    $t->push_ok($updates, $name, %opt)   status 204 and no body
    $t->push_bad($updates, $index, $error, $name, %opt)
        status 400, application/json, {"error": $error (a string: that
        exact text; a qr//: matching)}, "index": $index as a JSON number,
        or no index when $index is undef, no other field; returns the
        decoded answer

    $t->all_workers_answer($status, $name, token => $tok, path => $p,
                           code => sub { ... }, promtool => 1)
                                    ok() that hit_all_workers reached every
                                    worker and that every answer had
                                    $status; the request is a GET of path
                                    (/metrics) with the Bearer token, or
                                    code; promtool => 1 and $status 200:
                                    ok() that promtool takes every distinct
                                    body; returns the responses

Environment: C<PLAYARR_PROMTOOL_STRICT=1> (promtool lint warnings fail),
C<PLAYARR_NO_PYPARSE=1> (skip the prometheus_client parser),
C<PLAYARR_PYTHON> (the python3 that has prometheus_client; default
/usr/bin/python3).

=cut

use strict;
use warnings;

use JSON::PP ();
use POSIX ();
use Test::More ();

use PlayarrTest::HTTP;

our @LINT;

# Names of the self metrics (docs/metrics.md), in one place.
our %SELF = (
    build_info    => 'playarr_metrics_build_info',
    nginx_version => '1.22.1',
    zone_prefix   => 'playarr_metrics_zone_',
    zone_used     => qr/^playarr_metrics_zone_.*used/,
    zone_free     => qr/^playarr_metrics_zone_.*free/,
    series        => 'playarr_metrics_series',
);

sub metrics {
    my ($self, %opt) = @_;
    my $r = $self->metrics_response(%opt);

    return $r->{body} // '';
}


sub metrics_response {
    my ($self, %opt) = @_;
    my @h = PlayarrTest::HTTP::header_pairs($opt{headers});
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


# the key of a playarr_http_requests_total series, as parse_metrics()
# has it: endpoint, status code, user (undef: anonymous)
sub requests_key {
    my ($ep, $status, $user) = @_;

    return series_key('playarr_http_requests_total',
                      { endpoint => $ep, status_code => $status,
                        username => $user // 'anonymous' });
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


# { key => after - before } of the changed series of a family, or of the
# series whose name matches a regex
sub delta {
    my ($before, $after, $match) = @_;
    my %d;

    $before = parse_metrics($before) unless ref $before;
    $after = parse_metrics($after) unless ref $after;

    my $re = ref $match ? $match : qr/^\Q$match\E(?:\{|$)/;

    for my $k (keys %$after) {
        next unless $k =~ $re;
        my $diff = $after->{$k} - ($before->{$k} // 0);
        $d{$k} = $diff if abs($diff) > 1e-9;
    }

    return \%d;
}


# --- a test's scrapes and pushes -------------------------------------------

sub scrape_setup {
    my ($self, %opt) = @_;

    $self->{scrape}{$_} = $opt{$_} for keys %opt;

    return $self;
}


sub _scrape_opt {
    my ($self, %opt) = @_;
    my $d = $self->{scrape} || {};

    $opt{token} = $d->{token} unless exists $opt{token};
    $opt{path} ||= $d->{path} || '/metrics';

    return %opt;
}


sub scrape {
    my ($self, $name, %opt) = @_;

    %opt = $self->_scrape_opt(%opt);
    $opt{name} = $name if defined $name;
    $self->{scraped} = $self->metrics(%opt);

    return $self->{scraped};
}

sub scrape_series {
    my ($self, @arg) = @_;
    return parse_metrics($self->scrape(@arg));
}

sub scraped { $_[0]{scraped} }

sub value {
    my ($self, $name, $labels) = @_;
    return sample($self->{scraped} // '', $name, $labels);
}


sub quiet_scrape {
    my ($self, %opt) = @_;

    %opt = $self->_scrape_opt(%opt);

    my @h = defined $opt{token} ? (Authorization => "Bearer $opt{token}")
                                : ();
    my $r = $opt{client}
            ? $opt{client}->req('GET', $opt{path}, headers => \@h)
            : $opt{keepalive}
            ? $self->keepalive_request($opt{keepalive}, 'GET', $opt{path},
                                       headers => \@h)
            : $self->get($opt{path}, headers => \@h,
                         $opt{port} ? (port => $opt{port}) : ());

    if ($r->{status} != 200) {
        return undef if $opt{or_undef};
        die "scrape $opt{path}: $r->{status} " . ($r->{error} // '') . "\n";
    }

    return $r->{body};
}

sub quiet_series {
    my ($self, %opt) = @_;
    my $body = $self->quiet_scrape(%opt);

    return defined $body ? parse_metrics($body) : undef;
}


my $JSON = JSON::PP->new->canonical->utf8;

sub push_updates {
    my ($self, $updates, %opt) = @_;
    my $token = exists $opt{token} ? $opt{token}
                                   : ($self->{scrape} || {})->{token};
    my @h = $opt{headers}
            ? @{ $opt{headers} }
            : ((defined $token ? (Authorization => "Bearer $token") : ()),
               'Content-Type' => 'application/json');

    return $self->request($opt{method} || 'POST', $opt{path} || '/push',
                          headers => \@h,
                          body => ref $updates ? $JSON->encode($updates)
                                               : $updates,
                          $opt{timeout} ? (timeout => $opt{timeout}) : ());
}


sub push_ok {
    my ($self, $updates, $name, %opt) = @_;
    my $r = $self->push_updates($updates, %opt);

    Test::More::is($r->{status}, 204, "$name: 204")
        or Test::More::diag($r->{raw} // $r->{error});
    Test::More::is($r->{body}, '', "$name: no body");

    return $r;
}


sub push_bad {
    my ($self, $updates, $index, $error, $name, %opt) = @_;
    my $r = $self->push_updates($updates, %opt);
    my $j = PlayarrTest::HTTP::json_body($r);

    Test::More::is($r->{status}, 400, "$name: 400")
        or Test::More::diag($r->{raw} // $r->{error});
    Test::More::is(PlayarrTest::HTTP::header($r, 'Content-Type'),
                   'application/json', "$name: JSON answer");
    Test::More::is(ref $j, 'HASH', "$name: a JSON object")
        or Test::More::diag($r->{body});

    if (ref $error) {
        Test::More::like($j->{error} // '', $error, "$name: error text")
            or Test::More::diag($r->{body});
    } else {
        Test::More::is($j->{error}, $error, "$name: error text")
            or Test::More::diag($r->{body});
    }

    if (defined $index) {
        Test::More::is($j->{index}, $index, "$name: index $index");
        Test::More::like($r->{body}, qr/"index":$index\}\z/,
                         "$name: index a JSON number");
    } else {
        Test::More::ok(!exists $j->{index}, "$name: no index");
    }

    Test::More::is_deeply([sort keys %{ $j || {} }],
                          [sort('error', defined $index ? 'index' : ())],
                          "$name: no other field");

    return $j;
}


sub all_workers_answer {
    my ($self, $status, $name, %opt) = @_;
    my @h = defined $opt{token} ? (Authorization => "Bearer $opt{token}")
                                : ();
    my $code = $opt{code}
               || sub { $self->get($opt{path} || '/metrics', headers => \@h) };
    my ($resp, $seen, $all) = $self->hit_all_workers($code);
    my @wrong = grep { $_->{status} != $status } @$resp;

    Test::More::ok($all, "$name: all workers reached ("
                         . scalar(@$resp) . ' requests)')
        or Test::More::diag(Test::More::explain($seen));
    Test::More::is(scalar @wrong, 0, "$name: every answer $status")
        or Test::More::diag(join ', ',
               map { "$_->{status} from "
                     . (PlayarrTest::HTTP::header($_, 'X-Worker-Pid') // '?') }
               @wrong);

    if ($opt{promtool} && $status == 200) {
        my %seen;
        my @bodies = grep { !$seen{$_}++ } map { $_->{body} // '' } @$resp;
        my $ok = !grep { !($self->promtool_check($_))[0] } @bodies;

        Test::More::ok($ok, "$name: promtool accepts every body ("
                            . scalar(@bodies) . ' distinct)');
    }

    return $resp;
}


# the sum of a family's samples in a body or in parse_metrics() output
sub family_sum {
    my ($m, $name) = @_;
    my $s = 0;

    $m = parse_metrics($m) unless ref $m;
    $s += $m->{$_} for grep { /^\Q$name\E(?:\{|$)/ } keys %$m;
    return $s;
}


1;
