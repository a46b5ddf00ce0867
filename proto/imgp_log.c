/*  imgp_log — see imgp_log.h. Lines are formatted into one buffer and
    written with a single fputs so lines from threads never interleave.
*/
#include "imgp_log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *s_program = "imgpipe";
static bool s_verbose = false;

void
imgp_log_init (const char *program, bool verbose)
{
    s_program = program;
    s_verbose = verbose;
}

bool
imgp_log_verbose (void)
{
    return s_verbose;
}

void
imgp_log_v (imgp_log_level_t level, const char *format, va_list args)
{
    static const char *names [] = { "DEBUG", "INFO", "WARN", "ERROR" };
    if (level == IMGP_LOG_DEBUG && !s_verbose)
        return;

    struct timespec now;
    clock_gettime (CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r (&now.tv_sec, &tm);

    char line [2048];
    int n = snprintf (line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s ",
                      tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                      tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000, s_program,
                      names [level]);
    if (n < 0 || (size_t) n >= sizeof line)
        return;
    vsnprintf (line + n, sizeof line - n - 1, format, args);
    //  One line per event, whatever the message held: no newline, escape
    //  sequence or other control byte from a client reaches the terminal.
    size_t len = strlen (line);
    for (size_t i = n; i < len; i++)
        if ((unsigned char) line [i] < 0x20 || line [i] == 0x7f)
            line [i] = ' ';
    line [len] = '\n';
    line [len + 1] = '\0';
    fputs (line, stderr);
}

void
imgp_log (imgp_log_level_t level, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    imgp_log_v (level, format, args);
    va_end (args);
}
