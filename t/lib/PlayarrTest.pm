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

A test object is one private nginx, and the three jobs of the harness
are three modules, all mixed into this class:

    PlayarrTest::Nginx    its life: directory, configuration, free ports,
                          start, reload, stop, error log checks; forked
                          load clients
    PlayarrTest::HTTP     talking to it: requests, keep-alive connections,
                          raw bytes, the response parser, session cookies
    PlayarrTest::Metrics  what a scrape must be: promtool, the
                          prometheus_client parser, no duplicate series,
                          self metrics; the text format parsed

Their functions are also here under their old names
(C<PlayarrTest::sample>, C<PlayarrTest::header>, ...), and C<use
PlayarrTest qw(bearer sample)> brings the ones named into the test.  Each module's POD
lists what it offers: C<perldoc t/lib/PlayarrTest/Nginx.pm>.

L<PlayarrTest::Blocks> runs tests written as data (per block a
configuration, a request, the answer expected, or the exact [emerg] of
nginx -t); L<PlayarrTest::State> is the setting of the state file tests.

=head2 What a test needs, in one line each

    PlayarrTest::need_module();     skip_all unless the module is built
                                    (PLAYARR_METRICS_SO or build/)
    my $SCHEMA = PlayarrTest::need_schema();
                                    Playarr's metrics.json,
                                    PlayarrTest::schema(): the repo's
                                    docs/playarr/ copy, or
                                    PLAYARR_METRICS_JSON; skip_all when
                                    it cannot be read
    PlayarrTest::need_all($why);    skip_all unless PLAYARR_TEST_ALL=1:
                                    a slow or system-changing test, which
                                    make test runs and make check does not

=cut

use strict;
use warnings;

use PlayarrTest::Nginx;
use PlayarrTest::HTTP;
use PlayarrTest::Metrics;

our @ISA = qw(PlayarrTest::Nginx PlayarrTest::HTTP PlayarrTest::Metrics);

# the functions, under PlayarrTest:: as the tests call them
my %FUNCTIONS = (
    'PlayarrTest::Nginx' => [qw(repo nginx_bin module_path example_http
                                slurp wait_until spawn kids_running reap_kids
                                upstream stop_upstream
                                _proc_children _is_nginx_worker)],
    'PlayarrTest::HTTP' => [qw(header parse_challenge json_body bearer
                               parse_response session_jwt header_pairs)],
    'PlayarrTest::Metrics' => [qw(parse_metrics metric_types metric_help
                                  series_key requests_key sample samples
                                  delta duplicate_series family_sum)],
);

for my $pkg (keys %FUNCTIONS) {
    no strict 'refs';
    *{"PlayarrTest::$_"} = \&{"${pkg}::$_"} for @{ $FUNCTIONS{$pkg} };
}

sub need_module {
    my $so = module_path();

    Test::More::plan(skip_all => "module not built: $so") unless -e $so;
}


sub schema {
    return $ENV{PLAYARR_METRICS_JSON} || repo() . '/docs/playarr/metrics.json';
}


sub need_schema {
    my $schema = schema();

    Test::More::plan(skip_all => "no $schema (set PLAYARR_METRICS_JSON)")
        unless -r $schema;

    return $schema;
}


# nginx-tests' TEST_NGINX_UNSAFE: the tests that take long or change the
# machine run only when asked for
sub need_all {
    my ($why) = @_;

    Test::More::plan(skip_all => "$why: PLAYARR_TEST_ALL=1 runs it"
                                 . ' (make test does, make check not)')
        unless $ENV{PLAYARR_TEST_ALL};
}


# use PlayarrTest qw(bearer sample): those functions, in the test's package
sub import {
    my ($class, @names) = @_;
    my $caller = caller;

    no strict 'refs';

    for my $name (@names) {
        die "PlayarrTest: no function $name to import\n"
            unless defined &{"PlayarrTest::$name"};
        *{"${caller}::$name"} = \&{"PlayarrTest::$name"};
    }
}


our @LINT;
our %SELF;
*LINT = \@PlayarrTest::Metrics::LINT;
*SELF = \%PlayarrTest::Metrics::SELF;


1;
