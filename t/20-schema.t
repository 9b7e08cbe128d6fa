#!/usr/bin/perl

# playarr_metrics_schema (docs/directives.md): Playarr's own
# metrics.json loads, every family shows its # HELP and # TYPE before any
# value, histograms use the schema's buckets (prom-client's defaults when
# there are none), entries named like the built-in HTTP families configure
# them, and every broken schema is an [emerg] from `nginx -t` naming the
# schema, the metric and the file and line of the directive.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use Test::More;
use PlayarrTest;

PlayarrTest::need_module();

my $SCHEMA = PlayarrTest::need_schema();

my $JSON = JSON::PP->new->canonical;

my $catalog = do {
    open my $fh, '<', $SCHEMA or die "$SCHEMA: $!";
    local $/;
    $JSON->decode(<$fh>);
};

# metrics.json in file order (JSON::PP loses the order of object keys)
my @keys = do {
    open my $fh, '<', $SCHEMA or die "$SCHEMA: $!";
    local $/;
    my $text = <$fh>;
    my @k;
    push @k, $1 while $text =~ /^    "([A-Za-z0-9_]+)": \{/mg;
    @k;
};
my %def = %{ $catalog->{metrics} };

is(scalar @keys, scalar keys %def, 'metrics.json: every key found in order');
is(scalar keys %def, 31, 'metrics.json holds 31 families');

my @SELF = qw(playarr_metrics_build_info playarr_metrics_zone_size_bytes
              playarr_metrics_zone_used_bytes playarr_metrics_zone_free_bytes
              playarr_metrics_series playarr_metrics_series_refused_total
              playarr_metrics_updates_rejected_total
              playarr_http_requests_in_flight);

my @BUILTIN = qw(playarr_http_requests_total
                 playarr_http_request_duration_seconds
                 playarr_authentication_failures_total
                 playarr_managed_errors_total);

my @DEFAULT_BUCKETS = qw(0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10);


sub le_list {
    my ($body, $name, $labels) = @_;
    my @le;

    for my $s (PlayarrTest::samples($body, "${name}_bucket")) {
        my %l = %{ $s->[0] };
        my $le = delete $l{le};
        next if grep { ($l{$_} // '') ne ($labels->{$_} // '') }
                     keys %$labels, keys %l;
        push @le, $le;
    }

    return \@le;
}


# --- the real metrics.json ---

{
    my $t = PlayarrTest->new(http => <<"EOF");
    playarr_metrics_zone playarr:1m;
    playarr_metrics_token_file %%DIR%%/metrics.token;
    playarr_metrics_schema $SCHEMA;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;
        location = /metrics { playarr_metrics_export; }
        location = /metrics/json { playarr_metrics_export json; }
        location = /push { playarr_metrics_push; }
        location = /hello { return 200 "hello\\n"; }
    }
EOF

    my ($rc, $out) = $t->test_config;
    is($rc, 0, 'metrics.json: nginx -t passes') or diag($out);
    unlike($out, qr/\[(?:emerg|alert|crit|error|warn)\]/,
           'metrics.json: nginx -t says nothing wrong');

    $t->start;
    my $token = $t->read_token('metrics.token');

    my $body = $t->metrics(token => $token, name => 'metrics.json loaded');
    my $types = PlayarrTest::metric_types($body);
    my $help = PlayarrTest::metric_help($body);

    for my $key (@keys) {
        my $d = $def{$key};
        is($types->{ $d->{name} }, $d->{type}, "$key: # TYPE $d->{type}");
        is($help->{ $d->{name} }, $d->{help}, "$key: # HELP as in the schema");

        my $n = () = $body =~ /^# TYPE \Q$d->{name}\E /mg;
        is($n, 1, "$key: one # TYPE line");

        # a family without labels has its one series from the start, at 0,
        # as prom-client shows it
        my $labelled = @{ $d->{labelNames} || [] } ? 1 : 0;

        if ($labelled) {
            my @s = grep { /^\Q$d->{name}\E(?:_bucket|_sum|_count)?[{ ]/ }
                    split /\n/, $body;
            is_deeply(\@s, [], "$key: no sample before any update");

        } elsif ($d->{type} ne 'histogram') {
            is(PlayarrTest::sample($body, $d->{name}, {}), 0,
               "$key: its one series reads 0 before any update");
        }

        is(PlayarrTest::sample($body, 'playarr_metrics_series',
                               { family => $d->{name} }), 1 - $labelled,
           "$key: playarr_metrics_series{family} " . (1 - $labelled));
    }

    is_deeply([sort keys %$types],
              [sort((map { $def{$_}{name} } @keys), @SELF)],
              'the families are the schema\'s and the self metrics, no other');

    # the families come in the order of the schema, built-in ones first
    my @order = $body =~ /^# TYPE (\S+) /mg;
    my %builtin = map { $_ => 1 } @BUILTIN;
    is_deeply([ @order[0 .. 3] ], \@BUILTIN, 'built-in HTTP families first');
    is_deeply([ grep { !$builtin{$_} } @order[4 .. 30] ],
              [ grep { !$builtin{$_} } map { $def{$_}{name} } @keys ],
              'then the schema\'s in file order');

    $t->self_metrics_ok($body);

    # /metrics/json lists them too, with the same help and type
    my $r = $t->get('/metrics/json',
                    headers => { Authorization => "Bearer $token" });
    is($r->{status}, 200, '/metrics/json: 200');
    my $json = PlayarrTest::json_body($r);
    is(ref $json, 'ARRAY', '/metrics/json: an array') or diag($r->{body});
    my %jf = map { $_->{name} => $_ } @{ $json || [] };
    is(scalar keys %jf, 32,
       '/metrics/json: 31 families and playarr_http_requests_in_flight');
    for my $key (@keys) {
        my $d = $def{$key};
        is_deeply([ @{ $jf{ $d->{name} } || {} }{qw(help type aggregator)} ],
                  [ $d->{help}, $d->{type}, 'sum' ],
                  "/metrics/json: $key help, type, aggregator");
    }

    # every histogram has the schema's buckets: one observation each
    my @hist = grep { $def{$_}{type} eq 'histogram' } @keys;
    is(scalar @hist, 5, 'five histograms in metrics.json');

    # (the built-in one is nginx's: a request observes it, a push cannot)
    my %nginx = (endpoint => 'unknown_endpoint', username => 'anonymous');

    for my $key (@hist) {
        my $d = $def{$key};

        if ($builtin{ $d->{name} }) {
            is($t->get('/hello')->{status}, 200, "$key: a recorded request");
            next;
        }

        my %labels = map { $_ => "v_$_" } @{ $d->{labelNames} };
        my $x = $t->push_updates({ metric => $key, op => 'observe',
                                   labels => \%labels, value => 0.5 },
                                 token => $token);
        is($x->{status}, 204, "$key: observe accepted") or diag($x->{raw});
    }

    $body = $t->metrics(token => $token, name => 'after one observation each');

    for my $key (@hist) {
        my $d = $def{$key};
        my %labels = $builtin{ $d->{name} }
                     ? %nginx : map { $_ => "v_$_" } @{ $d->{labelNames} };
        is_deeply(le_list($body, $d->{name}, \%labels),
                  [ (map { 0 + $_ } @{ $d->{buckets} }), '+Inf' ],
                  "$key: le bounds are the schema's buckets");
        is(PlayarrTest::sample($body, "$d->{name}_count", \%labels), 1,
           "$key: _count 1");
        next if $builtin{ $d->{name} };
        is(PlayarrTest::sample($body, "$d->{name}_sum", \%labels), 0.5,
           "$key: _sum 0.5");
    }

    $t->stop;
}


# --- a schema of our own: defaults, escapes, the built-ins configured ---

{
    my $t = PlayarrTest->new(http => <<'EOF');
    playarr_metrics_zone playarr:1m;
    playarr_metrics_token_file %%DIR%%/metrics.token;
    playarr_metrics_schema schema.json;
    playarr_metrics_route /api/titles/:title_key;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;
        location = /metrics { playarr_metrics_export; }
        location = /metrics/json { playarr_metrics_export json; }
        location = /push { playarr_metrics_push; }
        location /api/ { return 200 "ok\n"; }
    }
EOF

    my $odd_help = "a \\ backslash, a \"quote\"\nand a second line, caf\x{e9}";
    my $schema = {
        metrics => {
            plain => { type => 'histogram', name => 'playarr_test_plain',
                       help => 'no buckets given', labelNames => ['kind'] },
            bare => { type => 'counter', name => 'playarr_test_bare_total',
                      help => $odd_help },
            mixed => { type => 'gauge', name => 'playarr_test_Mixed',
                       help => 'upper case is valid in names',
                       labelNames => ['Label_1'] },
            http_requests => {
                type => 'counter', name => 'playarr_http_requests_total',
                help => 'custom requests help',
                labelNames => [qw(endpoint status_code username)] },
            http_request_duration => {
                type => 'histogram',
                name => 'playarr_http_request_duration_seconds',
                help => 'custom duration help',
                labelNames => [qw(endpoint username)],
                buckets => [0.5, 2] },
        },
    };

    # written next to nginx.conf: a relative path is the conf prefix's
    $t->write_file('schema.json', JSON::PP->new->utf8->encode($schema));

    my ($rc, $out) = $t->test_config;
    is($rc, 0, 'own schema, relative path: nginx -t passes') or diag($out);

    $t->start;
    my $token = $t->read_token('metrics.token');

    my $x = $t->push_updates([
        { metric => 'plain', op => 'observe', labels => { kind => 'a' },
          value => 0.007 },
        { metric => 'bare', op => 'inc' },
        { metric => 'playarr_test_Mixed', op => 'set',
          labels => { Label_1 => 'x' }, value => 2 },
    ], token => $token);
    is($x->{status}, 204, 'own schema: updates accepted') or diag($x->{raw});

    my $r = $t->get('/api/titles/tt42');
    is($r->{status}, 200, 'a recorded request');

    my $body = $t->metrics(token => $token, name => 'own schema');
    my $help = PlayarrTest::metric_help($body);

    is_deeply(le_list($body, 'playarr_test_plain', { kind => 'a' }),
              [ @DEFAULT_BUCKETS, '+Inf' ],
              'histogram without buckets: prom-client\'s defaults');
    is(PlayarrTest::sample($body, 'playarr_test_plain_bucket',
                           { kind => 'a', le => '0.005' }), 0,
       'defaults: 0.007 is not <= 0.005');
    is(PlayarrTest::sample($body, 'playarr_test_plain_bucket',
                           { kind => 'a', le => '0.01' }), 1,
       'defaults: 0.007 is <= 0.01');

    my $help_line = '# HELP playarr_test_bare_total a \\\\ backslash, '
                    . 'a "quote"\\nand a second line, caf' . "\xc3\xa9";
    like($body, qr/^\Q$help_line\E$/m,
         'help: backslash and newline escaped, UTF-8 kept');
    like($body, qr/^playarr_test_bare_total 1$/m, 'label-less counter: 1');
    like($body, qr/^playarr_test_Mixed\{Label_1="x"\} 2$/m,
         'mixed-case name and label');

    is($help->{playarr_http_requests_total}, 'custom requests help',
       'built-in family: help from the schema');
    is($help->{playarr_http_request_duration_seconds}, 'custom duration help',
       'built-in histogram: help from the schema');
    isnt($help->{playarr_managed_errors_total} // '', '',
         'a built-in family not in the schema keeps a help of its own');

    is(PlayarrTest::sample($body, 'playarr_http_requests_total',
                           { endpoint => '/api/titles/:title_key',
                             status_code => 200, username => 'anonymous' }),
       1, 'built-in family configured by the schema still records requests');
    is_deeply(le_list($body, 'playarr_http_request_duration_seconds',
                      { endpoint => '/api/titles/:title_key',
                        username => 'anonymous' }),
              [ 0.5, 2, '+Inf' ],
              'built-in histogram: buckets from the schema');

    # the JSON answer carries the help text unharmed
    $r = $t->get('/metrics/json',
                 headers => { Authorization => "Bearer $token" });
    my $json = JSON::PP->new->utf8->decode($r->{body});
    my ($bare) = grep { $_->{name} eq 'playarr_test_bare_total' } @$json;
    is($bare->{help}, $odd_help,
       '/metrics/json: help decodes to the schema\'s');

    $t->stop;
}


# --- broken schemas: nginx -t fails, naming schema, metric, file:line ---

sub builtin_msg {
    my ($key, $type, $name) = @_;
    my $text = "metric \"$key\" must be a $type with the labels of the"
               . " built-in \"$name\"";
    return qr/\Q$text\E/;
}

sub entry {
    my (%e) = @_;
    return { type => 'gauge', name => 'playarr_x', help => 'x', %e };
}

my @bad = (
    { name => 'unknown type',
      metrics => { x => entry(type => 'summary') },
      msg => qr/metric "x" has an unknown "type"/ },
    { name => 'no type',
      metrics => { x => { name => 'playarr_x', help => 'x' } },
      msg => qr/metric "x" has no "type"/ },
    { name => 'type not a string',
      metrics => { x => entry(type => 1) },
      msg => qr/metric "x" has no "type"/ },
    { name => 'bad metric name (dash)',
      metrics => { x => entry(name => 'playarr-x') },
      msg => qr/metric "x" has no valid "name"/ },
    { name => 'metric name starting with a digit',
      metrics => { x => entry(name => '9playarr_x') },
      msg => qr/metric "x" has no valid "name"/ },
    { name => 'empty metric name',
      metrics => { x => entry(name => '') },
      msg => qr/metric "x" has no valid "name"/ },
    { name => 'no name',
      metrics => { x => { type => 'gauge', help => 'x' } },
      msg => qr/metric "x" has no valid "name"/ },
    { name => 'entry not an object',
      metrics => { x => 'gauge' },
      msg => qr/metric "x" is not an object/ },
    { name => 'help not a string',
      metrics => { x => entry(help => ['x']) },
      msg => qr/metric "x" has a "help" that is not a string/ },
    { name => 'labelNames not an array',
      metrics => { x => entry(labelNames => 'a') },
      msg => qr/metric "x" has "labelNames" that is not an array/ },
    { name => 'invalid label name',
      metrics => { x => entry(labelNames => ['media-type']) },
      msg => qr/metric "x" has an invalid label name/ },
    { name => 'label name with a colon',
      metrics => { x => entry(labelNames => ['a:b']) },
      msg => qr/metric "x" has an invalid label name/ },
    { name => 'label name not a string',
      metrics => { x => entry(labelNames => [1]) },
      msg => qr/metric "x" has an invalid label name/ },
    { name => 'label starting with __',
      metrics => { x => entry(labelNames => ['__name']) },
      msg => qr/metric "x" has a label name starting with "__"/ },
    { name => 'le label on a histogram',
      metrics => { x => entry(type => 'histogram', labelNames => ['le']) },
      msg => qr/metric "x" has the label name "le", reserved/ },
    { name => 'duplicate label',
      metrics => { x => entry(labelNames => ['a', 'b', 'a']) },
      msg => qr/metric "x" has a label name twice/ },
    { name => 'duplicate metric name',
      metrics => { a => entry(name => 'playarr_same'),
                   b => entry(name => 'playarr_same') },
      msg => qr/metric "[ab]" duplicates the name "playarr_same" of "[ab]"/ },
    { name => 'duplicate of a built-in name with another type',
      metrics => { x => entry(name => 'playarr_http_requests_total') },
      msg => builtin_msg('x', 'counter',
                        'playarr_http_requests_total') },
    { name => 'buckets not ascending',
      metrics => { x => entry(type => 'histogram', buckets => [1, 0.5]) },
      msg => qr/metric "x" has buckets that are not in ascending order/ },
    { name => 'buckets repeated',
      metrics => { x => entry(type => 'histogram', buckets => [1, 1]) },
      msg => qr/metric "x" has buckets that are not in ascending order/ },
    { name => 'bucket not a number',
      metrics => { x => entry(type => 'histogram', buckets => [1, '2']) },
      msg => qr/metric "x" has a bucket that is not a finite number/ },
    { name => 'buckets empty',
      metrics => { x => entry(type => 'histogram', buckets => []) },
      msg => qr/metric "x" has "buckets" that are not an array/ },
    { name => 'buckets not an array',
      metrics => { x => entry(type => 'histogram', buckets => 5) },
      msg => qr/metric "x" has "buckets" that are not an array/ },
    { name => 'buckets on a gauge',
      metrics => { x => entry(buckets => [1, 2]) },
      msg => qr/metric "x" has "buckets" but is not a histogram/ },
    { name => 'built-in counter with other labels',
      metrics => { http_requests => entry(
                       type => 'counter', name => 'playarr_http_requests_total',
                       labelNames => ['endpoint', 'status_code']) },
      msg => builtin_msg('http_requests', 'counter',
                        'playarr_http_requests_total') },
    { name => 'built-in counter with labels in another order',
      metrics => { managed_errors => entry(
                       type => 'counter',
                       name => 'playarr_managed_errors_total',
                       labelNames => [qw(endpoint username error_type)]) },
      msg => builtin_msg('managed_errors', 'counter',
                        'playarr_managed_errors_total') },
    { name => 'built-in histogram as a counter',
      metrics => { d => entry(
                       type => 'counter',
                       name => 'playarr_http_request_duration_seconds',
                       labelNames => ['endpoint', 'username']) },
      msg => builtin_msg('d', 'histogram',
                        'playarr_http_request_duration_seconds') },
    { name => 'built-in counter with an extra label',
      metrics => { a => entry(
                       type => 'counter',
                       name => 'playarr_authentication_failures_total',
                       labelNames => [qw(endpoint username ip)]) },
      msg => builtin_msg('a', 'counter',
                        'playarr_authentication_failures_total') },
);

my @raw = (
    { name => 'malformed JSON',
      text => qq({"metrics": {\n  "x": {"type": "gauge",\n)
              . qq(    "name": "playarr_x"\n  ]\n}}\n),
      msg => qr/^invalid schema "[^"]+": .+ at line 4 column 3$/ },
    { name => 'trailing comma',
      text => qq({"metrics": {\n)
              . qq(  "x": {"type": "gauge", "name": "playarr_x",}\n}}\n),
      msg => qr/^invalid schema "[^"]+": .+ at line 2 column \d+$/ },
    { name => 'duplicate key',
      text => qq({"metrics": {\n)
              . qq(  "x": {"type": "gauge", "name": "playarr_x"},\n)
              . qq(  "x": {"type": "gauge", "name": "playarr_y"}\n}}\n),
      msg => qr/^invalid\ schema\ "[^"]+":\ duplicate\ object\ key
                \ near\ '"x"'\ at\ line\ 3\ column\ \d+$/x },
    { name => 'duplicate field in an entry',
      text => qq({"metrics": {"x": {"type": "gauge", "type": "counter",)
              . qq( "name": "playarr_x"}}}),
      msg => qr/^invalid schema "[^"]+": duplicate object key/ },
    { name => 'empty file',
      text => '',
      msg => qr/^invalid schema "[^"]+": .+ at line \d+ column \d+$/ },
    { name => 'no "metrics" object',
      text => '{"families": {}}',
      msg => qr/^invalid schema "[^"]+": no "metrics" object$/ },
    { name => '"metrics" is an array',
      text => '{"metrics": []}',
      msg => qr/^invalid schema "[^"]+": no "metrics" object$/ },
    { name => 'top level is an array',
      text => '[{"metrics": {}}]',
      msg => qr/^invalid schema "[^"]+": no "metrics" object$/ },
    { name => 'missing file',
      file => 'none/schema.json',
      msg => qr/^invalid schema "[^"]+none\/schema\.json": .*No such file/ },
);

for my $c (@bad, @raw) {
    my $file = $c->{file} || 'schema.json';
    my $t = PlayarrTest->new(http => <<"EOF");
    playarr_metrics_zone playarr:1m;

    playarr_metrics_schema %%DIR%%/$file;
EOF

    if (!$c->{file}) {
        $t->write_file($file,
                       exists $c->{text}
                       ? $c->{text}
                       : $JSON->encode({ metrics => $c->{metrics} }));
    }

    my $path = $t->path($file);
    my $line = $t->conf_line(qr/playarr_metrics_schema/);
    my $conf = $t->conf_file;
    my ($rc, $out) = $t->test_config;
    my @emerg = grep { /\[emerg\]/ } split /\n/, $out;

    isnt($rc, 0, "$c->{name}: nginx -t fails");
    is(scalar @emerg, 1, "$c->{name}: one [emerg]") or diag($out);

    my ($msg) = ($emerg[0] // '') =~ /\[emerg\] (.*) in \Q$conf\E:\Q$line\E$/;
    ok(defined $msg, "$c->{name}: names $conf:$line") or diag($out);
    like($msg // '', qr/^invalid schema "\Q$path\E": /,
         "$c->{name}: names the schema file");
    like($msg // '', $c->{msg}, "$c->{name}: message") or diag($out);
}

# the directive itself: twice, or outside http
for my $c (
    { name => 'schema twice',
      http => "playarr_metrics_zone playarr:1m;\n"
              . "    playarr_metrics_schema $SCHEMA;\n"
              . "    playarr_metrics_schema $SCHEMA;\n",
      at => 2, msg => qr/"playarr_metrics_schema" directive is duplicate/ },
    { name => 'schema in a server block',
      http => "playarr_metrics_zone playarr:1m;\n"
              . "    server {\n        listen 127.0.0.1:%%PORT%%;\n"
              . "        playarr_metrics_schema $SCHEMA;\n    }\n",
      at => 1,
      msg => qr/"playarr_metrics_schema" directive is not allowed here/ },
    { name => 'schema without a zone',
      http => "playarr_metrics_schema $SCHEMA;\n",
      at => 1, msg => qr/playarr_metrics_zone/ },
)
{
    my $t = PlayarrTest->new(http => $c->{http});
    my @l = split /\n/, $t->conf_text;
    my @at = grep { $l[$_ - 1] =~ /playarr_metrics_schema/ } 1 .. @l;
    my $line = $at[ $c->{at} - 1 ];
    my $conf = $t->conf_file;
    my ($rc, $out) = $t->test_config;
    my @emerg = grep { /\[emerg\]/ } split /\n/, $out;

    isnt($rc, 0, "$c->{name}: nginx -t fails");
    is(scalar @emerg, 1, "$c->{name}: one [emerg]") or diag($out);
    like($emerg[0] // '', qr/ in \Q$conf\E:$line$/,
         "$c->{name}: names $conf:$line") or diag($out);
    like($emerg[0] // '', $c->{msg}, "$c->{name}: message") or diag($out);
}

done_testing;
