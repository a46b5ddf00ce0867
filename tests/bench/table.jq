# tests/bench/table.jq — the human table of run.sh's JSON (assemble.jq).
# Sections that did not run are left out.
def f($d): if . == null then "-" else (. * pow(10; $d) | round) / pow(10; $d) | tostring end;
def r($w): tostring | " " * ($w - length) + .;     # right-aligned in $w
def l($w): tostring | .[0:$w] + " " * ($w - length);
def setting: "\(.width)x\(.height) \(.format)";
def div($a; $b): if $a == null or $b == null or $b == 0 then null else $a / $b end;

.machine as $m | .raw as $raw | ($m.rounds // 1) as $rounds
# a row's name: its setting, and its round when there were several
| ([.pipeline[], .capacity[] | select(.build == "base")] | length > 0) as $based
| def row_name: "\(setting)\(if $rounds > 1 then " #\(.round)" else "" end)\(if .build == "base" then " base" else "" end)";
  (if $based or $rounds > 1 then 21 else 15 end) as $w |
  def raw_cpu($s; $malloc; $round):
    [$raw[] | select(setting == $s and .malloc == $malloc and .round == $round)][0].cpu_ms_per_image;
"imgpipe benchmark, \($m.at), \($m.cpu), \($m.cores) cores, load average \($m.load_before) before / \($m.load_after) after, \($m.build) build\(if $m.quick then ", QUICK" else "" end)",
(if ($m.baseline_dir // "") != "" then "rows marked base: \($m.baseline_dir); the others: \($m.build_dir) (runs alternate)" else empty end),
(if ($raw | length) > 0 then
  "",
  "raw libvips: \($m.threads) thread(s), files in memory, \($m.jobs) jobs, at nice \($m.nice) like the resizers",
  "  \("setting" | l($w))  malloc    images/s  CPU ms/image  peak RSS MB",
  ($raw[] | "  \(row_name | l($w))  \(.malloc | l(8))  \(.images_per_s | f(1) | r(8))  \(.cpu_ms_per_image | f(1) | r(12))  \(.peak_rss_mb | f(0) | r(11))")
 else empty end),
(if (.pipeline | length) > 0 then
  "",
  "pipeline: \($m.threads) resizer(s)\(if $m.resizer_args != "" then " (" + $m.resizer_args + ")" else "" end), 1 broker, 1 frontend, loadgen with \(.pipeline[0].concurrency) jobs in flight",
  "  \("setting" | l($w))  images/s  /raw glibc  /raw same malloc  202 p50/p90/p99/max ms  resizer idle  errors",
  (.pipeline[] | "  \(row_name | l($w))  \(.images_per_s | f(1) | r(8))  \(.ratio_raw_glibc | f(2) | r(10))  \(.ratio_raw_resizer_malloc | f(2) | r(16))  \(.upload_202 | "\(.p50_ms | f(1))/\(.p90_ms | f(1))/\(.p99_ms | f(1))/\(.max_ms | f(1))" | r(22))  \([.resizer_stops[]? | .idle | if . == null then "-" else (. * 100 | f(1)) + "%" end] | join(" ") | r(12))  \(.errors + .failed)"),
  "",
  "CPU ms per image (pipeline window; raw: libvips alone); resizer wall: its busy ms per job (stop line)",
  "  \("setting" | l($w))  raw glibc  raw same malloc  resizers  broker  frontend  loadgen    all  raw glibc/all  resizer wall",
  (.pipeline[] | .setting as $s | .round as $round | row_name as $row_name
    | (reduce .processes[] as $x ({}; .[$x.name] += $x.cpu_ms_per_image)) as $sum
    | ([$sum[]] | add) as $all
    | "  \($row_name | l($w))  \(raw_cpu($s; "glibc"; $round) | f(1) | r(9))  \(raw_cpu($s; "resizer"; $round) | f(1) | r(15))  \($sum.resizer | f(1) | r(8))  \($sum.broker | f(1) | r(6))  \($sum.frontend | f(1) | r(8))  \($sum.loadgen | f(1) | r(7))  \($all | f(1) | r(5))  \(div(raw_cpu($s; "glibc"; $round); $all) | f(2) | r(13))  \(div([.resizer_stops[]?.busy_ms] | add; [.resizer_stops[]?.jobs] | add) | f(1) | r(12))"),
  "",
  "memory, RSS MB: idle before / peak during / \(.pipeline[0].after_s) s after",
  (.pipeline[] | row_name as $s | .processes[] | select(.name != "loadgen")
    | "  \($s | l($w))  \(.name | l(9))  \(.rss_idle_mb | f(0)) / \(.rss_peak_mb | f(0)) / \(.rss_after_mb | f(0))")
 else empty end),
(if (.capacity | length) > 0 then
  "",
  "broker capacity: resizers with --dry-run, intake clients on the codec, spool on \(.capacity[0].spool_fs)",
  "  K resizers  C clients  payload B  jobs    jobs/s   MB/s    broker CPU %  broker us/job  done\(if $based then "  build" else "" end)",
  (.capacity[] | "  \(.resizers | r(10))  \(.clients | r(9))  \(.payload_bytes | r(9))  \(.jobs | r(6))  \(.jobs_per_s | f(0) | r(7))  \(.mb_per_s | f(1) | r(6))  \(.broker_cpu_pct | f(0) | r(12))  \(.broker_cpu_us_per_job | f(0) | r(13))  \(if .done == .jobs then "all" else "\(.done) of \(.jobs)" end)\(if $based then "  " + .build else "" end)")
 else empty end),
"",
"targets (issue 10; reported, not asserted)",
(.targets |
  "  pipeline / raw glibc, worst setting     \(.pipeline_over_raw_glibc.got | f(2))  (want \(.pipeline_over_raw_glibc.want); against raw with the same malloc: \(.pipeline_over_raw_glibc.same_malloc | f(2)))\(if $rounds > 1 then ", median of \($rounds) rounds" else "" end)",
  "  resizer idle fraction, worst            \(.resizer_idle.got | if . then (. * 100 | f(1)) + "%" else "-" end)  (want < 3%)",
  "  broker tiny jobs/s, best point          \(.broker_tiny_jobs_per_s.got | f(0))  (want \(.broker_tiny_jobs_per_s.want); broker CPU \(.broker_tiny_jobs_per_s.cpu_us_per_job | f(0)) us/job at best = \(div(1000000; .broker_tiny_jobs_per_s.cpu_us_per_job) | f(0)) jobs per broker CPU-second)",
  "  broker MB/s with 1 MiB, best point      \(.broker_mb_per_s.got | f(1))  (want \(.broker_mb_per_s.want))",
  "  frontend RSS MB idle / peak             \(.frontend_rss_mb.idle | f(0)) / \(.frontend_rss_mb.peak | f(0))  (want \(.frontend_rss_mb.want) = \(.frontend_rss_mb.bound | f(0)))",
  "  resizer RSS after / idle, worst         \(.resizer_rss_after_over_idle.got | f(2))  (want \(.resizer_rss_after_over_idle.want))",
  "  resizer cores one broker feeds          \(.resizer_cores_one_broker_feeds.cores | f(0))  (best tiny jobs/s x \(.resizer_cores_one_broker_feeds.resizer_cpu_ms_per_image | f(1)) ms of resizer CPU per image, \(.resizer_cores_one_broker_feeds.setting // "-"))")
