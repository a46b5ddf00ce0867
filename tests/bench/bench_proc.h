/*  bench_proc — what the benchmark's tools read about processes: CPU
    seconds and resident memory, from /proc (another process) or getrusage
    (this one). Linux only, like the benchmark.
*/
#ifndef BENCH_PROC_H
#define BENCH_PROC_H

//  utime + stime of process `pid` in seconds (/proc/PID/stat), or -1 when
//  it is gone.
double bench_proc_cpu_s (int pid);

//  VmRSS of process `pid` in kB (/proc/PID/status), or -1 when it is gone.
long bench_proc_rss_kb (int pid);

//  user + system CPU seconds of this process so far (getrusage).
double bench_self_cpu_s (void);

//  Peak RSS of this process so far in kB (getrusage's ru_maxrss).
long bench_self_peak_kb (void);

#endif
