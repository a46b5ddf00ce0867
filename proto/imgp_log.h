/*  imgp_log — one-line logs on stderr, shared by every imgpipe program.

    Why: every job event must be one greppable line that names the job
    (`job=ID event=resized ms=12`), with a level, so operators can follow a
    job across processes. Thread-safe (one write of whole lines). Never log
    a secret or image bytes through it.

    Buffered mode (the broker): a busy broker logs a few lines per job, and
    one write(2) per line was a tenth of its time per job. With
    imgp_log_set_buffered(true) lines collect in a process buffer and go
    out in one write when it fills, when a WARN or ERROR is logged, and at
    imgp_log_flush(), which the loop calls before it blocks: so a line
    waits at most one loop pass, and an idle process has none pending.
    Other programs stay unbuffered (each line is written at once).
*/
#ifndef IMGP_LOG_H_INCLUDED
#define IMGP_LOG_H_INCLUDED

#include <stdarg.h>
#include <stdbool.h>

typedef enum {
    IMGP_LOG_DEBUG = 0,
    IMGP_LOG_INFO,
    IMGP_LOG_WARN,
    IMGP_LOG_ERROR
} imgp_log_level_t;

//  Set the program name shown on every line and whether DEBUG lines print.
//  Call once from main() before any thread starts.
void imgp_log_init (const char *program, bool verbose);

//  Collect lines in a buffer (true) or write each at once (false, the
//  default). Turning it off flushes. The buffer is flushed at exit too.
void imgp_log_set_buffered (bool buffered);

//  Write out the lines collected so far (nothing to do when unbuffered).
void imgp_log_flush (void);

//  True when DEBUG lines are printed (to skip building expensive traces).
bool imgp_log_verbose (void);

//  Print one line: "2026-11-28T04:32:52.123Z imgpipe-broker INFO <text>".
void imgp_log (imgp_log_level_t level, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));
void imgp_log_v (imgp_log_level_t level, const char *format, va_list args);

#define imgp_debug(...) imgp_log (IMGP_LOG_DEBUG, __VA_ARGS__)
#define imgp_info(...)  imgp_log (IMGP_LOG_INFO, __VA_ARGS__)
#define imgp_warn(...)  imgp_log (IMGP_LOG_WARN, __VA_ARGS__)
#define imgp_error(...) imgp_log (IMGP_LOG_ERROR, __VA_ARGS__)

#endif
