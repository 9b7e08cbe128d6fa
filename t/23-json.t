#!/usr/bin/perl

# /metrics/json (docs/metrics.md) against the real thing:
# prom-client's register.getMetricsAsJSON().  A node script
# (t/js/prom-client-json.js) registers the families of metrics.json with
# prom-client and applies a list of updates batch by batch; the same
# batches are pushed to nginx; after each batch both JSON documents must
# be the same, modulo ordering (of families, of values, of label keys).
#
# prom-client is installed once with npm into build/node/ (pinned below),
# and reused by later runs.  The test skips only when npm cannot reach its
# registry; without node or npm it fails (`make deps` installs them).
#
# Differences that are not compared: prom-client adds "exemplar": null to
# histogram buckets (exemplars are a prom-client 15 feature nginx has no
# use for); the built-in HTTP families' values are nginx's own (pushes
# cannot touch them, t/61-update-rules.t).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use B ();
use Fcntl qw(:flock);
use File::Temp ();
use JSON::PP;
use Test::More;
use PlayarrTest;

PlayarrTest::need_module();

my $SCHEMA = PlayarrTest::need_schema();

my $PROM_CLIENT = '15.1.3';
my $NODE_DIR = PlayarrTest::repo() . '/build/node';
my $SCRIPT = "$FindBin::Bin/js/prom-client-json.js";
my $JSON = JSON::PP->new->canonical->utf8;

my @BUILTIN = qw(playarr_http_requests_total
                 playarr_http_request_duration_seconds
                 playarr_authentication_failures_total
                 playarr_managed_errors_total);


# --- prom-client, installed once into build/node ---

sub installed_version {
    my $f = "$NODE_DIR/node_modules/prom-client/package.json";
    open my $fh, '<', $f or return '';
    local $/;
    my $p = eval { $JSON->decode(<$fh>) } || {};
    return $p->{version} // '';
}

sub install_prom_client {
    for my $tool (qw(node npm)) {
        if (system("command -v $tool >/dev/null 2>&1") != 0) {
            fail("$tool is missing: `make deps` installs nodejs and npm");
            done_testing;
            exit 1;
        }
    }

    mkdir PlayarrTest::repo() . '/build';
    mkdir $NODE_DIR;

    # one installer at a time (prove -j)
    open my $lock, '>', "$NODE_DIR.lock" or die "$NODE_DIR.lock: $!";
    flock $lock, LOCK_EX or die "flock: $!";

    return if installed_version() eq $PROM_CLIENT;

    open my $pj, '>', "$NODE_DIR/package.json" or die "package.json: $!";
    print {$pj} JSON::PP->new->pretty->canonical->encode({
        name => 'playarr-metrics-tests', private => JSON::PP::true,
        description => 'prom-client for t/23-json.t (build/, not the repo)',
        dependencies => { 'prom-client' => $PROM_CLIENT },
    });
    close $pj;

    my $out = `cd '$NODE_DIR' && timeout 300 npm install --no-audit \\
               --no-fund --no-package-lock --loglevel=error 2>&1`;
    my $rc = $? >> 8;

    if ($rc != 0 || installed_version() ne $PROM_CLIENT) {
        my $net = qr/ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|
                     ENETUNREACH|EHOSTUNREACH|network|socket\ hang\ up|
                     request\ to\ \S+\ failed|E(?:40[37]|5\d\d)\b/xi;

        if ($out =~ $net || $rc == 124) {
            my ($why) = grep { $_ =~ $net } split /\n/, $out;
            plan skip_all => "npm cannot reach its registry to install "
                             . "prom-client\@$PROM_CLIENT: "
                             . ($why // 'timed out');
        }

        fail("npm install prom-client\@$PROM_CLIENT (exit $rc)");
        diag($out);
        done_testing;
        exit 1;
    }
}

install_prom_client();
is(installed_version(), $PROM_CLIENT, "prom-client $PROM_CLIENT in build/node");


# --- comparing two getMetricsAsJSON() documents ---

# a JSON scalar with its type: n: number (as the double it reads as),
# s: string, b: boolean, null
sub canon_scalar {
    my ($v) = @_;

    return 'null' unless defined $v;
    return 'b:' . ($v ? 1 : 0) if JSON::PP::is_bool($v);
    return '?:' . $JSON->encode($v) if ref $v;

    my $f = B::svref_2object(\$v)->FLAGS;

    if (($f & (B::SVf_IOK | B::SVf_NOK)) && !($f & B::SVf_POK)) {
        return 'n:' . sprintf('%.17g', $v);
    }

    return 's:' . $v;
}

sub canon_value {
    my ($v, $opt) = @_;
    my %l = %{ $v->{labels} || {} };
    my @keys = sort grep { $_ ne 'exemplar' } keys %$v;

    return join ' ',
        'keys=' . join(',', @keys),
        'metricName=' . canon_scalar($v->{metricName}),
        'value=' . canon_scalar($v->{value}),
        'labels={' . join(',', map {
            my $c = canon_scalar($l{$_});
            $c =~ s/^n:/s:/ if $opt->{string_labels} && $_ ne 'le'
                               && $c =~ /^n:(-?\d+)$/;
            "$_=$c"
        } sort keys %l) . '}';
}

# compares families by name; values modulo order
sub compare {
    my ($got, $want, $name, %opt) = @_;
    my %g = map { $_->{name} => $_ } @{ $got || [] };
    my %w = map { $_->{name} => $_ } @{ $want || [] };
    my %pushed = map { $_ => 1 } @{ $opt{pushed} || [] };
    my %builtin = map { $_ => 1 } @BUILTIN;

    is(scalar @{ $got || [] }, scalar keys %g, "$name: no family twice");

    # nginx always has the built-in HTTP families; prom-client only when
    # the schema defines them
    delete $g{$_} for grep { $builtin{$_} && !$w{$_} } keys %g;

    # and its one self metric in JSON, which prom-client has not
    ok(delete $g{playarr_http_requests_in_flight},
       "$name: playarr_http_requests_in_flight present");

    is_deeply([ sort keys %g ], [ sort keys %w ], "$name: the same families");

    for my $f (sort keys %w) {
        my $gf = $g{$f} or next;
        my $wf = $w{$f};

        is_deeply([ sort keys %$gf ], [ sort keys %$wf ],
                  "$name: $f: the same fields");
        is_deeply([ map { canon_scalar($gf->{$_}) } qw(help type aggregator) ],
                  [ map { canon_scalar($wf->{$_}) } qw(help type aggregator) ],
                  "$name: $f: help, type, aggregator");

        next if $builtin{$f} && !$pushed{$f};

        my @gv = sort map { canon_value($_, \%opt) } @{ $gf->{values} || [] };
        my @wv = sort map { canon_value($_, \%opt) } @{ $wf->{values} || [] };

        is_deeply(\@gv, \@wv, "$name: $f: values")
            or diag("nginx:\n  " . join("\n  ", @gv)
                    . "\nprom-client:\n  " . join("\n  ", @wv));
    }
}


# --- running both sides ---

sub prom_client {
    my ($t, $schema, $batches) = @_;
    my $file = $t->write_file('batches.json', $JSON->encode($batches));
    my $out = `NODE_PATH='$NODE_DIR/node_modules' \\
               node '$SCRIPT' '$schema' '$file' 2>&1`;

    if ($? != 0) {
        fail('prom-client script');
        diag($out);
        return [];
    }

    return $JSON->decode($out);
}

sub run_case {
    my (%c) = @_;
    my $t = PlayarrTest->new(http => <<"EOF");
    playarr_metrics_zone playarr:1m;
    playarr_metrics_token_file %%DIR%%/metrics.token;
    playarr_metrics_schema $c{schema};

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;
        location = /metrics { playarr_metrics_export; }
        location = /metrics/json { playarr_metrics_export json; }
        location = /push { playarr_metrics_push; }
    }
EOF

    my $want = prom_client($t, $c{schema}, $c{batches});
    is(scalar @$want, scalar @{ $c{batches} },
       "$c{name}: prom-client answered for every batch");

    $t->start;

    my $token = $t->read_token('metrics.token');
    my %pushed;

    for my $i (0 .. $#{ $c{batches} }) {
        my $batch = $c{batches}[$i];
        my $name = "$c{name}, batch $i";

        if (@$batch) {
            my $r = $t->request('POST', '/push',
                                body => $JSON->encode($batch),
                                headers => [
                                    Authorization => "Bearer $token",
                                    'Content-Type' => 'application/json' ]);
            is($r->{status}, 204, "$name: pushed") or diag($r->{raw});
        }

        $pushed{$_->{metric}} = 1 for @$batch;

        my $r = $t->get('/metrics/json',
                        headers => { Authorization => "Bearer $token" });
        is($r->{status}, 200, "$name: /metrics/json 200");
        is(PlayarrTest::header($r, 'Content-Type'), 'application/json',
           "$name: Content-Type application/json");
        my $got = eval { $JSON->decode($r->{body}) };
        ok(ref $got eq 'ARRAY', "$name: a JSON array") or diag($@);

        compare($got, $want->[$i], $name, pushed => [ keys %pushed ],
                %{ $c{opt} || {} });

        $t->metrics(token => $token, name => "$name: /metrics");
    }

    $t->stop;

    return;
}


# --- the real metrics.json ---

my %L = (provider_id => 'p1', media_type => 'movies');

my @batches = (
    # 0: nothing yet
    [],

    # 1: every op on every type, by key and by name
    [
        { metric => 'provider_titles_count', op => 'set', labels => \%L,
          value => 120 },
        { metric => 'provider_titles_count', op => 'set',
          labels => { %L, media_type => 'tvshows' }, value => 40 },
        { metric => 'playarr_provider_titles_count', op => 'inc',
          labels => \%L, value => 5 },
        { metric => 'provider_titles_count', op => 'dec',
          labels => { %L, media_type => 'tvshows' } },
        { metric => 'provider_titles_count', op => 'dec',
          labels => { %L, provider_id => 'p2' }, value => 2.5 },
        { metric => 'ignored_provider_titles_count', op => 'inc',
          labels => \%L },
        { metric => 'main_titles_count', op => 'set',
          labels => { media_type => 'movies' }, value => 1e21 },
        { metric => 'episodes_count', op => 'set',
          labels => { source => 'tmdb' }, value => 0 },
        { metric => 'channels_count', op => 'set',
          labels => { provider_id => 'p1', category => "News \"24\"\n\\" },
          value => 7 },
        { metric => 'watchlist_titles_count', op => 'set',
          labels => { user => "ren\x{e9}e", media_type => 'movies' },
          value => 3 },
        { metric => 'watchlist_channels_count', op => 'inc',
          labels => { user => '' }, value => -1 },
        { metric => 'active_users', op => 'set', value => 4 },
        { metric => 'active_users', op => 'inc' },
        { metric => 'playarr_active_users', op => 'dec', value => 0.5 },
        { metric => 'provider_active_connections', op => 'inc',
          labels => { provider_id => 'p1' }, value => 0.1 },
        { metric => 'provider_active_connections', op => 'inc',
          labels => { provider_id => 'p1' }, value => 0.2 },
        { metric => 'provider_max_connections', op => 'set',
          labels => { provider_id => 'p1' }, value => 0.7999999999999999 },
        { metric => 'provider_active', op => 'set',
          labels => { provider_id => 'p1' }, value => 1 },
        { metric => 'provider_expiration_days', op => 'set',
          labels => { provider_id => 'p1' }, value => -4.5 },
        (map { { metric => 'cache_operations', op => 'inc',
                 labels => { operation => 'tenth' }, value => 0.1 } } 1 .. 10),
        { metric => 'cache_operations', op => 'inc',
          labels => { operation => 'hit' } },
        { metric => 'playarr_cache_operations_total', op => 'inc',
          labels => { operation => 'hit' }, value => 2.5 },
        { metric => 'cache_operations', op => 'inc',
          labels => { operation => 'zero' }, value => 0 },
        { metric => 'best_source_selections', op => 'inc',
          labels => { provider_id => 'p1' } },
        { metric => 'stream_requests', op => 'inc',
          labels => { user => 'alice' }, value => 0.1 },
        { metric => 'stream_requests', op => 'inc',
          labels => { user => 'alice' }, value => 0.2 },
        { metric => 'provider_titles_processed', op => 'inc', labels => \%L,
          value => 1000 },
        { metric => 'main_titles_processed', op => 'inc', labels => \%L,
          value => 12 },
        { metric => 'job_executions', op => 'inc',
          labels => { job_type => 'sync', status => 'success' } },
        { metric => 'job_executions', op => 'inc',
          labels => { job_type => 'sync', status => 'failure' }, value => 2 },
        (map { { metric => 'best_source_selection_duration', op => 'observe',
                 labels => { media_type => 'movies' }, value => $_ } }
             0.05, 0.1, 0.3, 1, 31, -2),
        { metric => 'playarr_stream_request_duration_seconds', op => 'observe',
          labels => { media_type => 'tvshows' }, value => 0.75 },
        (map { { metric => 'job_duration', op => 'observe',
                 labels => { job_type => 'sync' }, value => $_ } }
             5, 10, 45.5, 4000),
        { metric => 'provider_api_requests', op => 'inc',
          labels => { provider_id => 'p1', endpoint => '/player_api.php',
                      status_code => '200' } },
        { metric => 'provider_api_request_duration', op => 'observe',
          labels => { provider_id => 'p1', endpoint => '/player_api.php',
                      status_code => '200' }, value => 0.42 },
        { metric => 'watchlist_operations', op => 'inc',
          labels => { operation => 'add', media_type => 'movies',
                      username => 'alice' } },
        { metric => 'provider_operations', op => 'inc',
          labels => { operation => 'create', username => 'admin' } },
        { metric => 'user_operations', op => 'inc',
          labels => { operation => 'update', username => 'admin' } },
        { metric => 'provider_categories_synced', op => 'inc',
          labels => \%L, value => 33 },
    ],

    # 2: resets, one per type, and the label-less gauge
    [
        { metric => 'provider_titles_count', op => 'reset' },
        { metric => 'playarr_cache_operations_total', op => 'reset' },
        { metric => 'job_duration', op => 'reset' },
        { metric => 'active_users', op => 'reset' },
    ],

    # 3: set again after the resets
    [
        { metric => 'provider_titles_count', op => 'set',
          labels => { %L, provider_id => 'p3' }, value => 1 },
        { metric => 'provider_titles_count', op => 'inc', labels => \%L },
        { metric => 'cache_operations', op => 'inc',
          labels => { operation => 'hit' } },
        { metric => 'job_duration', op => 'observe',
          labels => { job_type => 'cleanup' }, value => 20 },
        { metric => 'active_users', op => 'inc', value => 2 },
    ],
);

run_case(name => 'metrics.json', schema => $SCHEMA, batches => \@batches);


# --- defaults and label-less families: a schema of our own ---

{
    my $dir = File::Temp::tempdir('playarr-json-XXXXXXXX', TMPDIR => 1,
                                  CLEANUP => 1);
    chmod 0755, $dir;
    my $schema = "$dir/schema.json";

    open my $fh, '>', $schema or die "$schema: $!";
    print {$fh} $JSON->encode({ metrics => {
        plain => { type => 'histogram', name => 'playarr_test_plain_seconds',
                   help => 'default buckets', labelNames => ['kind'] },
        bare_hist => { type => 'histogram', name => 'playarr_test_bare_seconds',
                       help => 'no labels', buckets => [1, 2] },
        bare_counter => { type => 'counter', name => 'playarr_test_bare_total',
                          help => 'no labels either' },
        status => { type => 'counter', name => 'playarr_test_status_total',
                    help => 'an integer label value',
                    labelNames => ['status_code'] },
    } });
    close $fh;

    run_case(
        name => 'own schema',
        schema => $schema,
        # label values: nginx keeps strings (Prometheus label values are
        # strings); prom-client keeps a number given as a label value,
        # so integer label values are compared as strings here
        opt => { string_labels => 1 },
        batches => [
            [],
            [
                (map { { metric => 'plain', op => 'observe',
                         labels => { kind => 'a' }, value => $_ } }
                     0.003, 0.007, 0.25, 7, 11),
                { metric => 'bare_hist', op => 'observe', value => 1.5 },
                { metric => 'bare_counter', op => 'inc', value => 2 },
                { metric => 'status', op => 'inc',
                  labels => { status_code => 200 } },
            ],
            [
                { metric => 'plain', op => 'reset' },
                { metric => 'bare_hist', op => 'reset' },
                { metric => 'bare_counter', op => 'reset' },
            ],
            [
                { metric => 'plain', op => 'observe',
                  labels => { kind => 'b' }, value => 0.5 },
                { metric => 'bare_counter', op => 'inc' },
            ],
        ]);
}

done_testing;
