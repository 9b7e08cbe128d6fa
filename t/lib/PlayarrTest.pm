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
(C<PlayarrTest::sample>, C<PlayarrTest::header>, ...).  Each module's POD
lists what it offers: C<perldoc t/lib/PlayarrTest/Nginx.pm>.

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
                                spawn reap_kids _proc_children
                                _is_nginx_worker)],
    'PlayarrTest::HTTP' => [qw(header parse_challenge json_body
                               parse_response session_jwt header_pairs)],
    'PlayarrTest::Metrics' => [qw(parse_metrics metric_types metric_help
                                  series_key sample samples
                                  duplicate_series family_sum)],
);

for my $pkg (keys %FUNCTIONS) {
    no strict 'refs';
    *{"PlayarrTest::$_"} = \&{"${pkg}::$_"} for @{ $FUNCTIONS{$pkg} };
}

our @LINT;
our %SELF;
*LINT = \@PlayarrTest::Metrics::LINT;
*SELF = \%PlayarrTest::Metrics::SELF;


1;
