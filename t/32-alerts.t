#!/usr/bin/perl

# docs/prometheus/alerts.yml: `promtool check rules` accepts it,
# it has a rule for each thing Playarr's operators watch, and its unit
# tests (docs/prometheus/alerts_test.yml, `promtool test rules`) pass and
# cover every alert, the 5xx ratio, authentication failure and provider
# expiry ones at least.  A broken rule file is refused: the check is real.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Temp qw(tempdir);
use Test::More;
use PlayarrTest;

my $PROMTOOL = $ENV{PROMTOOL} || '/usr/bin/promtool';
my $DIR = PlayarrTest::repo() . '/docs/prometheus';
my $RULES = "$DIR/alerts.yml";
my $TESTS = "$DIR/alerts_test.yml";

plan skip_all => "no $PROMTOOL (apt-get install prometheus)"
    unless -x $PROMTOOL;

sub run {
    my @cmd = @_;
    my $out = `@cmd 2>&1`;

    return ($? >> 8, $out);
}

my ($rc, $out) = run($PROMTOOL, 'check', 'rules', $RULES);

is($rc, 0, 'promtool check rules alerts.yml') or diag($out);
my ($n) = $out =~ /SUCCESS: (\d+) rules found/;
ok($n && $n >= 9, "$n rules") or diag($out);

my $rules = PlayarrTest::slurp($RULES);
my %alerts = map { $_ => 1 } $rules =~ /^\s*- alert:\s*(\S+)/mg;
is(scalar keys %alerts, $n, 'every rule is an alert');

# the expression of each alert
my %expr;
for my $block (split /^\s*- alert:\s*/m, $rules) {
    my ($name) = $block =~ /^(\S+)/ or next;
    my ($e) = $block =~ /expr:\s*(?:\|\s*\n)?(.*?)\n\s*(?:for|labels):/s;
    $expr{$name} = $e if $e;
}

my %want = (
    '5xx ratio'             => qr/playarr_http_requests_total\{status_code=~"5\.\."\}.*\/.*playarr_http_requests_total/s,
    'p95 latency per endpoint'
        => qr/histogram_quantile\(0\.95,.*by \(instance, endpoint, le\).*playarr_http_request_duration_seconds_bucket/s,
    'authentication failure spike'
        => qr/increase\(playarr_authentication_failures_total\[5m\]\)/,
    'provider inactive'     => qr/^playarr_provider_active == 0$/,
    'provider expiring within 7 days'
        => qr/playarr_provider_expiration_days < 7/,
    'failing jobs'          => qr/playarr_job_executions_total\{status="failure"\}/,
    'series refused by the cap'
        => qr/increase\(playarr_metrics_series_refused_total\[\w+\]\) > 0/,
    'zone nearly full'
        => qr/playarr_metrics_zone_free_bytes \/ playarr_metrics_zone_size_bytes < 0\.1/,
    'scrape target down'    => qr/^up\{.*\} == 0$/,
);

for my $what (sort keys %want) {
    my @hits = grep { $expr{$_} =~ $want{$what} } sort keys %expr;
    ok(@hits, "a rule for $what: @hits");
}

($rc, $out) = run($PROMTOOL, 'test', 'rules', $TESTS);
is($rc, 0, 'promtool test rules alerts_test.yml') or diag($out);
like($out, qr/SUCCESS/, 'unit tests pass');

# each alert is expected to fire somewhere in the unit tests
my $tests = PlayarrTest::slurp($TESTS);
my %tested;

for my $case (split /^\s*- eval_time:/m, $tests) {
    my ($name) = $case =~ /alertname:\s*(\S+)/ or next;
    $tested{$name} = 1 if $case =~ /exp_alerts:\s*\n\s*- exp_labels:/;
}

for my $name (sort keys %alerts) {
    ok($tested{$name}, "unit test makes $name fire");
}

ok(!grep({ !$alerts{$_} } keys %tested), 'unit tests name known alerts');

# a broken expression and a broken expectation are both caught
my $tmp = tempdir('playarr-alerts-XXXXXXXX', TMPDIR => 1, CLEANUP => 1);
my $bad = $rules;

$bad =~ s/expr: playarr_provider_active == 0/expr: playarr_provider_active ==/
    or die 'no provider_active rule to break';
open my $fh, '>', "$tmp/alerts.yml" or die $!;
print {$fh} $bad;
close $fh;

($rc, $out) = run($PROMTOOL, 'check', 'rules', "$tmp/alerts.yml");
isnt($rc, 0, 'a broken rule fails promtool check rules');

$bad = $tests;
$bad =~ s/provider_id: p1\n/provider_id: p2\n/ or die 'no p1 to break';
open $fh, '>', "$tmp/alerts_test.yml" or die $!;
print {$fh} $bad;
close $fh;
open $fh, '>', "$tmp/alerts.yml" or die $!;
print {$fh} $rules;
close $fh;

($rc, $out) = run($PROMTOOL, 'test', 'rules', "$tmp/alerts_test.yml");
isnt($rc, 0, 'a wrong expectation fails promtool test rules');

# the YAML examples of docs/prometheus.md: configurations pass
# `promtool check config` (their token files, rule file and target files
# pointed at real ones), rule groups `promtool check rules`
my $doc = PlayarrTest::slurp(PlayarrTest::repo() . '/docs/prometheus.md');
my @blocks = $doc =~ /^```yaml\n(.*?)^```/msg;

mkdir "$tmp/targets" or die $!;
open $fh, '>', "$tmp/token" or die $!;
print {$fh} "x\n";
close $fh;

for my $i (0 .. $#blocks) {
    my $y = $blocks[$i];

    $y =~ s{/etc/prometheus/[\w.-]+\.token}{$tmp/token}g;
    $y =~ s{/etc/prometheus/playarr-alerts\.yml}{$RULES}g;
    $y =~ s{/etc/prometheus/playarr-targets/}{$tmp/targets/}g;
    $blocks[$i] = $y;

    next unless $y =~ /^- targets:/m;

    open $fh, '>', "$tmp/targets/$i.yml" or die $!;
    print {$fh} $y;
    close $fh;
}

my $checked = 0;

for my $i (0 .. $#blocks) {
    my $y = $blocks[$i];
    my $kind = $y =~ /^groups:/m ? 'rules'
        : $y =~ /^(?:scrape_configs|remote_write|rule_files|global):/m
        ? 'config' : next;
    my $file = "$tmp/doc-$i.yml";

    open $fh, '>', $file or die $!;
    print {$fh} $y;
    close $fh;

    ($rc, $out) = run($PROMTOOL, 'check', $kind, $file);
    my ($first) = $y =~ /^(?!#)(.*\S.*)$/m;
    is($rc, 0, "docs/prometheus.md example $i ($first): promtool check"
       . " $kind") or diag("$y\n$out");
    $checked++;
}

cmp_ok($checked, '>=', 6, "$checked examples of docs/prometheus.md checked");
ok(scalar(() = glob("$tmp/targets/*.yml")), 'a file_sd target file among them');

done_testing;
