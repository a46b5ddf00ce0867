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

    Two forms of the same line (--log-format, imgp_log_set_format):
      text (the default)
        2026-12-06T12:00:00.123Z imgpipe-broker INFO job=ab12 event=done ms=12
      json: one object a line, for log shippers
        {"time":"2026-12-06T12:00:00.123Z","level":"info","program":
         "imgpipe-broker","event":"done","job":"ab12","ms":12}
    Call sites are the same for both: a printf format made only of
    `key=value` and `key="quoted value"` fields, `event=` first (after
    `job=` or `worker=` when the line is about one), no free prose
    (tests/unit/test_log.c fails the build's tests on a call that is not).

    How JSON is made: not by parsing the finished text, but by walking the
    format and its arguments together (one walker: s_fields_parse in the .c).
    The format says where each field starts and ends, so a value from
    outside (a client's message holding spaces, quotes or "job=x") stays
    inside its field; and each value's type comes from its conversion: a
    field that is exactly one %d/%u/%lld/%zu/%f... is a JSON number (NaN
    and infinities stay strings), anything else a string, so a job id or
    worker name made only of digits is still a string. `job=-` means no
    job: the key is left out. Strings are escaped (quotes, backslashes,
    control bytes) and bytes that are not UTF-8 become U+FFFD, so every
    line is valid JSON whatever an argument holds; a line too long for
    IMGP_LOG_JSON_MAX keeps its first fields and ends "truncated":true.
    The text form is printf's output as before (control bytes blanked).
*/
#ifndef IMGP_LOG_H_INCLUDED
#define IMGP_LOG_H_INCLUDED

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

//  Longest JSON line written (bytes, with its newline).
#define IMGP_LOG_JSON_MAX 4096

typedef enum {
    IMGP_LOG_TEXT = 0,      //  "TIME PROGRAM LEVEL key=value ..." (default)
    IMGP_LOG_JSON           //  one JSON object a line
} imgp_log_format_t;

typedef enum {
    IMGP_LOG_DEBUG = 0,
    IMGP_LOG_INFO,
    IMGP_LOG_WARN,
    IMGP_LOG_ERROR
} imgp_log_level_t;

//  Set the program name shown on every line and whether DEBUG lines print.
//  Call once from main() before any thread starts.
void imgp_log_init (const char *program, bool verbose);

//  Write lines in `format` from now on. Call from main() before any
//  thread starts, like imgp_log_init.
void imgp_log_set_format (imgp_log_format_t format);

//  "text" or "json" into *format. Returns 0, or -1 for any other name.
int imgp_log_format_parse (const char *name, imgp_log_format_t *format);

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

//  The line imgp_log would write, in the current form, into `line` (at most
//  `size` bytes with its newline and NUL), whatever the level and
//  --verbose. Returns its length. For tests, and for a caller that sends a
//  line elsewhere than stderr.
size_t imgp_log_render (char *line, size_t size, imgp_log_level_t level,
                        const char *format, ...) __attribute__ ((format (printf, 4, 5)));
size_t imgp_log_render_v (char *line, size_t size, imgp_log_level_t level,
                          const char *format, va_list args);

#define imgp_debug(...) imgp_log (IMGP_LOG_DEBUG, __VA_ARGS__)
#define imgp_info(...)  imgp_log (IMGP_LOG_INFO, __VA_ARGS__)
#define imgp_warn(...)  imgp_log (IMGP_LOG_WARN, __VA_ARGS__)
#define imgp_error(...) imgp_log (IMGP_LOG_ERROR, __VA_ARGS__)

#endif
