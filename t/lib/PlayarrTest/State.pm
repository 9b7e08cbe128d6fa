package PlayarrTest::State;

=head1 NAME

PlayarrTest::State - the setting the state file tests share (t/55, t/56,
t/62): one configuration with playarr_metrics_state_file, an instance
whose state directory the workers own, the same traffic, the series that
must come back

=head1 SYNOPSIS

    use PlayarrTest::State qw(state_http fresh traffic snapshot);

    my $t = fresh(interval => '1s');     # PlayarrTest->new + state/
    $t->start;
    traffic($t);                          # requests and one push
    my $before = snapshot($t->metrics(name => 'before'));

=head1 DESCRIPTION

    state_http(schema => $file, buckets => '0.1 1', interval => '1s')
        the http { } text: zone, token file, DIR/state/metrics.state,
        the schema (default PlayarrTest::schema()), one route, the user
        from X-User; / answers 200, /metrics and /push without auth
    fresh(%o)           PlayarrTest->new(http => state_http(%o)) with
                        DIR/state owned by the worker user
    traffic($t)         5 requests of alice, 3 of bob, one push (ok()) of
                        a gauge, a negative gauge, a fractional counter
                        and a histogram
    snapshot($body)     { key => value } of the families traffic fills

=cut

use strict;
use warnings;

use Exporter qw(import);

use PlayarrTest;

our @EXPORT_OK = qw(state_http fresh traffic snapshot);


sub state_http {
    my (%o) = @_;

    my $schema = $o{schema} // PlayarrTest::schema();
    my $buckets = $o{buckets} ? "playarr_metrics_buckets $o{buckets};" : '';
    my $interval = $o{interval} ? " interval=$o{interval}" : '';

    return <<"EOF";
    playarr_metrics_zone playarr:1m;
    playarr_metrics_token_file %%DIR%%/metrics.token;
    playarr_metrics_state_file %%DIR%%/state/metrics.state$interval;
    playarr_metrics_schema $schema;
    playarr_metrics_route /api/titles/:title_key;
    playarr_metrics_username \$http_x_user;
    $buckets

    server {
        listen 127.0.0.1:%%PORT%%;
        location / { return 200 "ok\\n"; }
        location = /metrics {
            playarr_metrics_export;
            playarr_metrics_auth off;
        }
        location = /push { playarr_metrics_push; playarr_metrics_auth off; }
    }
EOF
}


sub fresh {
    my (%o) = @_;
    my $t = PlayarrTest->new(http => state_http(%o));

    $t->worker_dir('state');

    return $t;
}


sub traffic {
    my ($t) = @_;

    $t->get('/api/titles/tt1', headers => { 'X-User' => 'alice' })
        for 1 .. 5;
    $t->get('/api/titles/tt2', headers => { 'X-User' => 'bob' }) for 1 .. 3;

    $t->push_ok('[{"metric":"provider_active","op":"set",'
                . '"labels":{"provider_id":"p1"},"value":1},'
                . '{"metric":"provider_expiration_days","op":"set",'
                . '"labels":{"provider_id":"p1"},"value":-2.5},'
                . '{"metric":"cache_operations","op":"inc",'
                . '"labels":{"operation":"hit"},"value":0.1},'
                . '{"metric":"job_duration","op":"observe",'
                . '"labels":{"job_type":"sync"},"value":45}]',
                'push business metrics', token => undef);
}


sub snapshot {
    my ($body) = @_;
    my $all = PlayarrTest::parse_metrics($body);

    return { map { $_ => $all->{$_} }
             grep { /^playarr_(?:http_requests_total|
                                 http_request_duration_seconds|
                                 provider_active|
                                 provider_expiration_days|
                                 cache_operations_total|
                                 job_duration_seconds)/x }
             keys %$all };
}


1;
