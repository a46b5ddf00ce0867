/*  bench_proc — CPU seconds and resident memory of processes, for the
    benchmark's tools (see bench_proc.h).
*/
#include "bench_proc.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

double
bench_proc_cpu_s (int pid)
{
    char path [64], buf [1024];
    snprintf (path, sizeof path, "/proc/%d/stat", pid);
    FILE *file = fopen (path, "r");
    if (!file)
        return -1;
    size_t len = fread (buf, 1, sizeof buf - 1, file);
    fclose (file);
    buf [len] = 0;
    //  The command name may hold spaces and parentheses: fields count from
    //  the last ')'. utime and stime are fields 14 and 15; field 3 follows ") ".
    char *p = strrchr (buf, ')');
    unsigned long utime = 0, stime = 0;
    if (!p || sscanf (p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                      &utime, &stime) != 2)
        return -1;
    return (double) (utime + stime) / (double) sysconf (_SC_CLK_TCK);
}

long
bench_proc_rss_kb (int pid)
{
    char path [64], line [256];
    snprintf (path, sizeof path, "/proc/%d/status", pid);
    FILE *file = fopen (path, "r");
    if (!file)
        return -1;
    long kb = -1;
    while (fgets (line, sizeof line, file))
        if (sscanf (line, "VmRSS: %ld", &kb) == 1)
            break;
    fclose (file);
    return kb;
}

double
bench_self_cpu_s (void)
{
    struct rusage ru;
    getrusage (RUSAGE_SELF, &ru);
    return (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec / 1e6
         + (double) ru.ru_stime.tv_sec + (double) ru.ru_stime.tv_usec / 1e6;
}

long
bench_self_peak_kb (void)
{
    struct rusage ru;
    getrusage (RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}
