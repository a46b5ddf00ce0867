/*  imgp_log — one-line logs on stderr, shared by every imgpipe program.

    Why: every job event must be one greppable line that names the job
    (`job=ID event=resized ms=12`), with a level, so operators can follow a
    job across processes. Thread-safe (one fprintf per line). Never log a
    secret or image bytes through it.
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
