# tests/bench/assemble.jq — run.sh's JSON: the tools' outputs ($raw, $pipe,
# $cap, one object each a run) with the machine, the pipeline/raw ratios
# and the issue-10 targets beside what this run measured (reported, not
# asserted). A section that did not run (--only) is an empty array and its
# figures null.
def setting: "\(.width)x\(.height) \(.format)";
def div($a; $b): if $a == null or $b == null or $b == 0 then null else $a / $b end;
def most(f): [f | select(. != null)] | max;
def least(f): [f | select(. != null)] | min;
def raw_rate($s; $m; $round):
    [$raw[] | select(setting == $s and .malloc == $m and .round == $round)][0].images_per_s;
def median: sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;

{machine: {at: $at, cpu: $cpu, cores: $cores, load_before: $load_before,
           load_after: $load_after, build: $build, quick: ($quick == 1),
           threads: $threads, jobs: $jobs, nice: $nice, resizer_args: $resizer_args,
           rounds: $rounds, build_dir: $build_dir, baseline_dir: $baseline_dir},
 raw: $raw,
 pipeline: [$pipe[] | . + {setting: setting,
     ratio_raw_glibc: div(.images_per_s; raw_rate(setting; "glibc"; .round)),
     ratio_raw_resizer_malloc: div(.images_per_s; raw_rate(setting; "resizer"; .round))}],
 capacity: [$cap[] | . + {spool_fs: $cap_fs}]}
# The targets look at the build under test only, not at BASELINE_DIR's rows.
| . as $all
| {pipeline: [.pipeline[] | select(.build != "base")],
   capacity: [.capacity[] | select(.build != "base")]}
# resizer CPU per image of the default thumbnail (the first setting)
| ([.pipeline[0].processes[]? | select(.name == "resizer") | .cpu_ms_per_image] | add)
    as $resizer_ms
| most(.capacity[] | select(.payload_bytes < 1000) | .jobs_per_s) as $best
| (.pipeline[0].concurrency // 0) as $conc
| $all + {targets: {
    # each setting's median over the rounds, then the worst setting
    pipeline_over_raw_glibc: {want: ">= 0.90",
        got: ([.pipeline | group_by(.setting)[] | [.[].ratio_raw_glibc | select(. != null)]
               | median | select(. != null)] | min),
        same_malloc: ([.pipeline | group_by(.setting)[]
               | [.[].ratio_raw_resizer_malloc | select(. != null)] | median
               | select(. != null)] | min)},
    resizer_idle: {want: "< 0.03", got: most(.pipeline[].resizer_stops[]?.idle)},
    broker_tiny_jobs_per_s: {want: ">= 20000", got: $best,
        # less moved by other work on the machine than the rate: the
        # broker's CPU per job at its cheapest point, as jobs per core-second
        cpu_us_per_job: least(.capacity[] | select(.payload_bytes < 1000)
                              | .broker_cpu_us_per_job | select(. > 0))},
    broker_mb_per_s: {want: ">= 500",
                      got: most(.capacity[] | select(.payload_bytes >= 1000) | .mb_per_s)},
    frontend_rss_mb: {want: "<= 64 + uploads in flight (\($conc) x \($max_photo / 1048576 * 10 | round / 10) MB)",
                      idle: most(.pipeline[].processes[] | select(.name == "frontend") | .rss_idle_mb),
                      peak: most(.pipeline[].processes[] | select(.name == "frontend") | .rss_peak_mb),
                      bound: (64 + $conc * $max_photo / 1048576)},
    resizer_rss_after_over_idle: {want: "< 2 within 30 s (measured \(.pipeline[0].after_s) s after)",
                      got: most(.pipeline[].processes[] | select(.name == "resizer")
                                | div(.rss_after_mb; .rss_idle_mb))},
    resizer_cores_one_broker_feeds: {best_tiny_jobs_per_s: $best,
                      resizer_cpu_ms_per_image: $resizer_ms, setting: .pipeline[0].setting,
                      cores: (if $best and $resizer_ms then $best * $resizer_ms / 1000 else null end)}}}
