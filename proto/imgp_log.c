/*  imgp_log — see imgp_log.h. Lines are formatted into one buffer and
    written whole (one fputs, or one write of many lines when buffered), so
    lines from threads never interleave.

    The date and time up to the second are formatted once per second per
    thread (gmtime_r and a printf per line cost as much as the rest of
    the line); only the milliseconds are written each time.
*/
#include "imgp_log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_LINE_MAX 2048             //  one line, cut beyond
#define S_BUFFER_SIZE (64 * 1024)   //  buffered lines before a write

static const char *s_program = "imgpipe";
static bool s_verbose = false;

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static bool s_buffered = false;         //  under s_lock
static char s_buffer [S_BUFFER_SIZE];   //  lines not yet written, under s_lock
static size_t s_used = 0;               //  bytes of s_buffer in use, under s_lock

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

//  Write the buffer out; call with s_lock held.
static void
s_flush_locked (void)
{
    if (s_used > 0) {
        fwrite (s_buffer, 1, s_used, stderr);
        fflush (stderr);
    }
    s_used = 0;
}

void
imgp_log_flush (void)
{
    pthread_mutex_lock (&s_lock);
    s_flush_locked ();
    pthread_mutex_unlock (&s_lock);
}

static void
s_flush_at_exit (void)
{
    imgp_log_flush ();
}

void
imgp_log_set_buffered (bool buffered)
{
    static bool registered = false;
    pthread_mutex_lock (&s_lock);
    if (!buffered)
        s_flush_locked ();
    s_buffered = buffered;
    if (buffered && !registered)
        registered = atexit (s_flush_at_exit) == 0;
    pthread_mutex_unlock (&s_lock);
}

//  Hand one whole line (with its newline) to stderr or the buffer.
static void
s_emit (const char *line, size_t len, imgp_log_level_t level)
{
    pthread_mutex_lock (&s_lock);
    if (!s_buffered) {
        pthread_mutex_unlock (&s_lock);
        fputs (line, stderr);
        return;
    }
    if (s_used + len > sizeof s_buffer)
        s_flush_locked ();
    memcpy (s_buffer + s_used, line, len);
    s_used += len;
    //  Trouble is written at once, with what led to it.
    if (level >= IMGP_LOG_WARN)
        s_flush_locked ();
    pthread_mutex_unlock (&s_lock);
}

//  "2026-11-28T04:32:52" for `seconds`, formatted again only when the
//  second changed since this thread's last line. Returns its length.
static size_t
s_date (time_t seconds, char *dst)
{
    static __thread time_t cached_seconds = -1;
    static __thread char cached [32];
    static __thread size_t cached_len;
    if (seconds != cached_seconds) {
        struct tm tm;
        gmtime_r (&seconds, &tm);
        int n = snprintf (cached, sizeof cached, "%04d-%02d-%02dT%02d:%02d:%02d",
                          tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                          tm.tm_min, tm.tm_sec);
        cached_len = n > 0 && (size_t) n < sizeof cached ? (size_t) n : 0;
        cached_seconds = seconds;
    }
    memcpy (dst, cached, cached_len);
    return cached_len;
}

void
imgp_log_v (imgp_log_level_t level, const char *format, va_list args)
{
    static const char *names [] = { "DEBUG", "INFO", "WARN", "ERROR" };
    if (level == IMGP_LOG_DEBUG && !s_verbose)
        return;

    struct timespec now;
    clock_gettime (CLOCK_REALTIME, &now);
    char line [S_LINE_MAX];
    size_t n = s_date (now.tv_sec, line);
    long ms = now.tv_nsec / 1000000;
    line [n++] = '.';
    line [n++] = (char) ('0' + ms / 100);
    line [n++] = (char) ('0' + ms / 10 % 10);
    line [n++] = (char) ('0' + ms % 10);
    line [n++] = 'Z';
    int rest = snprintf (line + n, sizeof line - n, " %s %s ", s_program, names [level]);
    if (rest < 0 || n + (size_t) rest >= sizeof line)
        return;
    n += (size_t) rest;
    vsnprintf (line + n, sizeof line - n - 1, format, args);
    //  One line per event, whatever the message held: no newline, escape
    //  sequence or other control byte from a client reaches the terminal.
    size_t len = n + strlen (line + n);
    for (size_t i = n; i < len; i++)
        if ((unsigned char) line [i] < 0x20 || line [i] == 0x7f)
            line [i] = ' ';
    line [len] = '\n';
    line [len + 1] = '\0';
    s_emit (line, len + 1, level);
}

void
imgp_log (imgp_log_level_t level, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    imgp_log_v (level, format, args);
    va_end (args);
}
