/*  test_log — the log's two forms (proto/imgp_log) and the rule every log
    call in the tree follows.

    JSON form: each line must be one valid JSON object (checked with
    jansson, not by eye) whatever the arguments hold: quotes, backslashes,
    control bytes, bytes that are not UTF-8, a value trying to fake another
    field, a line too long; types come from the conversions (numbers as
    numbers, a job id of digits still a string). The text form stays what
    it was. --log-format is read by imgp_conf like any option, and the real
    programs write JSON with it.

    The rule (tests "calls"): every imgp_log / imgp_debug / imgp_info /
    imgp_warn / imgp_error call in the programs' sources has a literal
    format made only of key=value fields, `event=` first (after `job=` or
    `worker=` when the line is about one), no free prose, no key used twice
    or taken by the JSON envelope, no key named like a secret. A new call
    written as prose fails here, so it fails CI (tests/run.sh runs every
    tests/unit/test_*.c).
*/
#include <criterion/criterion.h>
#include <dirent.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "imgp_conf.h"
#include "imgp_log.h"

//  ---------------------------------------------------------------------------
//  Helpers

static void
s_json_mode (void)
{
    imgp_log_init ("test_log", false);
    imgp_log_set_format (IMGP_LOG_JSON);
}

//  The JSON line of one call, checked: one object, one newline at the end,
//  no other newline, within IMGP_LOG_JSON_MAX. The caller json_decrefs it.
#define s_line(...) s_rendered (s_render_buf, \
    imgp_log_render (s_render_buf, sizeof s_render_buf, IMGP_LOG_INFO, __VA_ARGS__), 0)
static char s_render_buf [IMGP_LOG_JSON_MAX];

static json_t *
s_line_check (const char *line, size_t len, size_t flags)
{
    cr_assert (len < IMGP_LOG_JSON_MAX, "line of %zu bytes", len);
    cr_assert (len > 2 && line [len - 1] == '\n', "no newline at the end: %s", line);
    cr_assert_null (memchr (line, '\n', len - 1), "a newline inside the line: %s", line);
    json_error_t error;
    json_t *object = json_loadb (line, len - 1, flags | JSON_REJECT_DUPLICATES, &error);
    cr_assert_not_null (object, "not JSON (%s at %d): %s", error.text, error.position, line);
    cr_assert (json_is_object (object), "not an object: %s", line);
    return object;
}

//  s_line_check of a line imgp_log_render returned, its length checked too.
static json_t *
s_rendered (const char *line, size_t len, size_t flags)
{
    cr_assert_eq (len, strlen (line), "length returned != length written");
    return s_line_check (line, len, flags);
}

static const char *
s_str (json_t *object, const char *key)
{
    json_t *value = json_object_get (object, key);
    cr_assert (json_is_string (value), "'%s' is not a string in %s", key,
               json_dumps (object, JSON_COMPACT));
    return json_string_value (value);
}

static json_int_t
s_int (json_t *object, const char *key)
{
    json_t *value = json_object_get (object, key);
    cr_assert (json_is_integer (value), "'%s' is not an integer in %s", key,
               json_dumps (object, JSON_COMPACT));
    return json_integer_value (value);
}

//  ---------------------------------------------------------------------------
//  JSON form

Test (json, envelope_and_order)
{
    s_json_mode ();
    json_t *o = s_line ("job=%s event=done worker=%s ms=%lld bytes=%zu attempt=%d", "ab12",
                        "r1-x", 12LL, (size_t) 345, 1);
    regex_t re;
    cr_assert_eq (regcomp (&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                           "\\.[0-9]{3}Z$", REG_EXTENDED | REG_NOSUB), 0);
    cr_expect_eq (regexec (&re, s_str (o, "time"), 0, NULL, 0), 0, "time %s", s_str (o, "time"));
    regfree (&re);
    cr_expect_str_eq (s_str (o, "level"), "info");
    cr_expect_str_eq (s_str (o, "program"), "test_log");
    cr_expect_str_eq (s_str (o, "event"), "done");
    cr_expect_str_eq (s_str (o, "job"), "ab12");
    cr_expect_str_eq (s_str (o, "worker"), "r1-x");
    cr_expect_eq (s_int (o, "ms"), 12);
    cr_expect_eq (s_int (o, "bytes"), 345);
    cr_expect_eq (s_int (o, "attempt"), 1);
    cr_expect_eq (json_object_size (o), 9);
    //  The order a reader sees: envelope, event, job, worker, the rest.
    const char *order [] = { "\"time\"", "\"level\"", "\"program\"", "\"event\"", "\"job\"",
                             "\"worker\"", "\"ms\"", "\"bytes\"", "\"attempt\"" };
    const char *at = s_render_buf;
    for (size_t i = 0; i < sizeof order / sizeof order [0]; i++) {
        const char *next = strstr (at, order [i]);
        cr_expect_not_null (next, "%s missing or out of order in %s", order [i], s_render_buf);
        at = next ? next : at;
    }
    json_decref (o);

    //  Levels by name; a line with no job or worker has no such keys.
    imgp_log_render (s_render_buf, sizeof s_render_buf, IMGP_LOG_ERROR, "event=x");
    o = s_rendered (s_render_buf, strlen (s_render_buf), 0);
    cr_expect_str_eq (s_str (o, "level"), "error");
    cr_expect_null (json_object_get (o, "job"));
    cr_expect_null (json_object_get (o, "worker"));
    json_decref (o);
    imgp_log_render (s_render_buf, sizeof s_render_buf, IMGP_LOG_WARN, "event=x");
    o = s_rendered (s_render_buf, strlen (s_render_buf), 0);
    cr_expect_str_eq (s_str (o, "level"), "warn");
    json_decref (o);
    imgp_log_render (s_render_buf, sizeof s_render_buf, IMGP_LOG_DEBUG, "event=x");
    o = s_rendered (s_render_buf, strlen (s_render_buf), 0);
    cr_expect_str_eq (s_str (o, "level"), "debug");
    json_decref (o);
}

Test (json, types_come_from_conversions)
{
    s_json_mode ();
    json_t *o = s_line ("event=t job=%s worker=%s n=%d neg=%d big=%lld small=%lld u=%u "
                        "z=%zu l=%ld ul=%lu f=%.1f e=%g size=%dx%d q=\"%d\" hex=%x s=%s "
                        "pad=%5d zero=%03d c=%c pct=%d%% ch=%hhd sh=%hd",
                        "12345", "42", 7, -3, LLONG_MAX, LLONG_MIN, 4000000000u, (size_t) 0,
                        -5L, 6UL, 2.5, 1e-7, 640, 480, 9, 255, "17", 42, 7, 'A', 50,
                        (signed char) -1, (short) 300);
    cr_expect_str_eq (s_str (o, "job"), "12345", "a job id of digits stays a string");
    cr_expect_str_eq (s_str (o, "worker"), "42");
    cr_expect_eq (s_int (o, "n"), 7);
    cr_expect_eq (s_int (o, "neg"), -3);
    cr_expect_eq (s_int (o, "big"), LLONG_MAX);
    cr_expect_eq (s_int (o, "small"), LLONG_MIN);
    cr_expect_eq (s_int (o, "u"), 4000000000LL);
    cr_expect_eq (s_int (o, "z"), 0);
    cr_expect_eq (s_int (o, "l"), -5);
    cr_expect_eq (s_int (o, "ul"), 6);
    cr_expect (json_is_real (json_object_get (o, "f")));
    cr_expect_float_eq (json_real_value (json_object_get (o, "f")), 2.5, 1e-9);
    cr_expect (json_is_real (json_object_get (o, "e")), "1e-07 is a number");
    cr_expect_str_eq (s_str (o, "size"), "640x480", "literal text makes a string");
    cr_expect_str_eq (s_str (o, "q"), "9", "a quoted value is a string");
    cr_expect_str_eq (s_str (o, "hex"), "ff", "hex is a string");
    cr_expect_str_eq (s_str (o, "s"), "17", "%%s of digits stays a string");
    cr_expect_str_eq (s_str (o, "pad"), "   42", "a padded number is not JSON's");
    cr_expect_str_eq (s_str (o, "zero"), "007", "JSON has no leading zeros");
    cr_expect_str_eq (s_str (o, "c"), "A");
    cr_expect_str_eq (s_str (o, "pct"), "50%");
    cr_expect_eq (s_int (o, "ch"), -1);
    cr_expect_eq (s_int (o, "sh"), 300);
    json_decref (o);

    //  Not numbers in JSON: NaN and the infinities stay strings.
    o = s_line ("event=t a=%f b=%f c=%.2f", NAN, INFINITY, -INFINITY);
    cr_expect_str_eq (s_str (o, "a"), "nan");
    cr_expect_str_eq (s_str (o, "b"), "inf");
    cr_expect_str_eq (s_str (o, "c"), "-inf");
    json_decref (o);

    //  The largest size_t is a JSON number too (beyond int64: jansson
    //  reads it as a real when asked to).
    size_t len = imgp_log_render (s_render_buf, sizeof s_render_buf, IMGP_LOG_INFO,
                                  "event=t max=%zu", SIZE_MAX);
    cr_expect_not_null (strstr (s_render_buf, "\"max\":18446744073709551615}"), "%s",
                        s_render_buf);
    o = s_rendered (s_render_buf, len, JSON_DECODE_INT_AS_REAL);
    json_decref (o);
}

Test (json, escaping)
{
    s_json_mode ();
    json_t *o = s_line ("event=t quote=\"%s\" bare=%s ctl=\"%s\" utf8=%s bad=%s cut=%s "
                        "overlong=%s surrogate=%s high=%s",
                        "say \"hi\" \\ back", "a\\b\"c", "nl\n tab\t cr\r bell\x07 del\x7f esc\x1b",
                        "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "x\xff\xfey", "\xe2\x82",
                        "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80");
    cr_expect_str_eq (s_str (o, "quote"), "say \"hi\" \\ back");
    cr_expect_str_eq (s_str (o, "bare"), "a\\b\"c");
    cr_expect_str_eq (s_str (o, "ctl"), "nl\n tab\t cr\r bell\x07 del\x7f esc\x1b",
                      "control bytes escaped, kept as they were");
    cr_expect_str_eq (s_str (o, "utf8"), "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
                      "valid UTF-8 kept");
    cr_expect_str_eq (s_str (o, "bad"), "x\xef\xbf\xbd\xef\xbf\xbdy", "invalid bytes: U+FFFD");
    cr_expect_str_eq (s_str (o, "cut"), "\xef\xbf\xbd\xef\xbf\xbd");
    cr_expect_str_eq (s_str (o, "overlong"), "\xef\xbf\xbd\xef\xbf\xbd");
    cr_expect_str_eq (s_str (o, "surrogate"), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    cr_expect_str_eq (s_str (o, "high"), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    json_decref (o);
    //  The raw line has no control byte at all.
    for (const char *c = s_render_buf; *c && c [1]; c++)
        cr_expect ((unsigned char) *c >= 0x20 && *c != 0x7f, "raw byte 0x%02x in %s",
                   (unsigned char) *c, s_render_buf);
}

Test (json, a_value_cannot_fake_fields)
{
    s_json_mode ();
    //  A client's text with spaces, quotes and key=value in it stays in its
    //  field, quoted or not.
    json_t *o = s_line ("job=%s event=failed code=%s message=\"%s\" detail=%s", "ab12",
                        "bad_image", "x\" job=evil event=hacked y=\"", "a job=evil2 event=x");
    cr_expect_str_eq (s_str (o, "job"), "ab12");
    cr_expect_str_eq (s_str (o, "event"), "failed");
    cr_expect_str_eq (s_str (o, "message"), "x\" job=evil event=hacked y=\"");
    cr_expect_str_eq (s_str (o, "detail"), "a job=evil2 event=x");
    cr_expect_null (json_object_get (o, "y"));
    cr_expect_eq (json_object_size (o), 8);
    json_decref (o);
}

static const char *volatile s_nothing = NULL;    //  a NULL the compiler cannot see

Test (json, odd_values)
{
    s_json_mode ();
    json_t *o = s_line ("job=- event=t empty= emptys=%s q=\"\" null=%s prec=%.3s star=%.*s "
                        "width=%*d ptr=%p path=%s/ lit=plain note=\"two words\"",
                        "", s_nothing, "abcdef", 2, "xyz", 4, 7, (void *) 0x10,
                        "/tmp/a b");
    cr_expect_null (json_object_get (o, "job"), "job=- is no job");
    const char *want [][2] = {
        { "empty", "" }, { "emptys", "" }, { "q", "" }, { "null", "(null)" },
        { "prec", "abc" }, { "star", "xy" }, { "width", "   7" }, { "ptr", "0x10" },
        { "path", "/tmp/a b/" }, { "lit", "plain" }, { "note", "two words" },
    };
    for (size_t i = 0; i < sizeof want / sizeof want [0]; i++)
        cr_expect_str_eq (s_str (o, want [i][0]), want [i][1], "field %s", want [i][0]);
    json_decref (o);

    //  Prose (which the calls test keeps out of the tree) is not lost: the
    //  words are kept under "text"; a line without event= is still JSON.
    o = s_line ("cannot open %s: %s", "/x", "No such file");
    cr_expect_null (json_object_get (o, "event"));
    cr_expect_str_eq (s_str (o, "text"), "cannot open /x: No such file");
    json_decref (o);
    o = s_line ("event=t n=%d (logged once)", 3);
    cr_expect_eq (s_int (o, "n"), 3);
    cr_expect_str_eq (s_str (o, "text"), "(logged once)");
    json_decref (o);
    //  Empty format, lone spaces, a lone quote, a trailing '%'.
    o = s_line ("%s", "");
    json_decref (o);
    o = s_line ("   ");
    json_decref (o);
    o = s_line ("event=t q=\"open");
    cr_expect_str_eq (s_str (o, "q"), "open");
    json_decref (o);
}

Test (json, long_lines_are_cut_and_still_json)
{
    s_json_mode ();
    static char big [20000];
    memset (big, 'a', sizeof big - 1);
    big [100] = '"';
    big [5000] = '\n';
    json_t *o = s_line ("job=%s event=t big=\"%s\" after=%d", "ab12", big, 5);
    cr_expect (json_is_true (json_object_get (o, "truncated")), "%s", s_render_buf);
    cr_expect_str_eq (s_str (o, "event"), "t");
    cr_expect_str_eq (s_str (o, "job"), "ab12");
    json_decref (o);

    //  Every escape doubles or sextuples: a line of control bytes.
    memset (big, '\x01', sizeof big - 1);
    o = s_line ("event=t big=%s", big);
    cr_expect (json_is_true (json_object_get (o, "truncated")));
    json_decref (o);

    //  More fields than kept.
    char format [1024] = "event=t";
    for (int i = 0; i < 40; i++)
        snprintf (format + strlen (format), sizeof format - strlen (format), " k%d=%d", i, i);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#pragma GCC diagnostic ignored "-Wformat-security"
    size_t len = imgp_log_render (s_render_buf, sizeof s_render_buf, IMGP_LOG_INFO, format);
#pragma GCC diagnostic pop
    o = s_rendered (s_render_buf, len, 0);
    cr_expect (json_is_true (json_object_get (o, "truncated")));
    cr_expect_str_eq (s_str (o, "k0"), "0", "only a conversion makes a number");
    json_decref (o);

    //  A small buffer: cut, still one object.
    char small [128];
    len = imgp_log_render (small, sizeof small, IMGP_LOG_INFO, "job=%s event=t msg=\"%s\"",
                           "0123456789abcdef0123456789abcdef", big);
    o = s_rendered (small, len, 0);
    cr_expect (json_is_true (json_object_get (o, "truncated")));
    json_decref (o);
}

//  ---------------------------------------------------------------------------
//  Writing: stderr gets the line; the text form is as before

//  Run `fn` with stderr going to a file; return what was written (free it).
static char *
s_capture (void (*fn) (void))
{
    char path [] = "/tmp/test_log.XXXXXX";
    int fd = mkstemp (path);
    cr_assert (fd >= 0);
    fflush (stderr);
    int saved = dup (2);
    dup2 (fd, 2);
    fn ();
    fflush (stderr);
    imgp_log_flush ();
    dup2 (saved, 2);
    close (saved);
    static char text [16384];
    ssize_t n = pread (fd, text, sizeof text - 1, 0);
    close (fd);
    unlink (path);
    text [n > 0 ? n : 0] = '\0';
    return strdup (text);
}

static void
s_log_some (void)
{
    imgp_info ("job=%s event=resized ms=%lld in=%dx%d", "ab12", 12LL, 640, 480);
    imgp_debug ("event=hidden");
    imgp_warn ("event=odd message=\"%s\"", "line\nbreak");
}

Test (write, json_lines_on_stderr)
{
    s_json_mode ();
    char *text = s_capture (s_log_some);
    char *line2 = strchr (text, '\n');
    cr_assert_not_null (line2, "%s", text);
    json_t *o = s_line_check (text, (size_t) (line2 + 1 - text), 0);
    cr_expect_str_eq (s_str (o, "event"), "resized");
    cr_expect_eq (s_int (o, "ms"), 12);
    cr_expect_str_eq (s_str (o, "in"), "640x480");
    json_decref (o);
    o = s_line_check (line2 + 1, strlen (line2 + 1), 0);
    cr_expect_str_eq (s_str (o, "event"), "odd", "DEBUG is not written without --verbose");
    cr_expect_str_eq (s_str (o, "message"), "line\nbreak");
    json_decref (o);
    free (text);

    //  Buffered (the broker) writes the same lines.
    imgp_log_set_buffered (true);
    text = s_capture (s_log_some);
    imgp_log_set_buffered (false);
    cr_expect_eq (strlen (text) > 0 && strchr (strchr (text, '\n') + 1, '\n') != NULL, true,
                  "%s", text);
    free (text);
}

Test (write, text_form_unchanged)
{
    imgp_log_init ("test_log", false);
    imgp_log_set_format (IMGP_LOG_TEXT);
    char *text = s_capture (s_log_some);
    regex_t re;
    cr_assert_eq (regcomp (&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}\\.[0-9]{3}Z test_log INFO "
                           "job=ab12 event=resized ms=12 in=640x480\n"
                           "[0-9T:.Z-]{24} test_log WARN event=odd message=\"line break\"\n$",
                           REG_EXTENDED | REG_NOSUB), 0);
    cr_expect_eq (regexec (&re, text, 0, NULL, 0), 0, "text form: %s", text);
    regfree (&re);
    free (text);
}

//  ---------------------------------------------------------------------------
//  --log-format through imgp_conf, and the real programs

typedef struct {
    int n;          //  a field for the table
} s_config_t;

static const imgp_conf_spec_t s_specs [] = {
    IMGP_CONF_NUM (s_config_t, n, "n", 1, 0, 9, "a number"),
    IMGP_CONF_END
};

static int
s_start (const char *format_flag, const char *env)
{
    char *argv [] = { "test_log", "--log-format", (char *) format_flag, NULL };
    if (env)
        setenv ("IMGP_LOG_FORMAT", env, 1);
    else
        unsetenv ("IMGP_LOG_FORMAT");
    s_config_t config;
    int exit_code = -1;
    imgp_conf_t *conf = imgp_conf_start ("test_log", "test", s_specs, format_flag ? 3 : 1,
                                         argv, &config, &exit_code);
    if (!conf)
        return exit_code;
    imgp_conf_destroy (&conf);
    return 0;
}

static bool
s_renders_json (void)
{
    imgp_log_render (s_render_buf, sizeof s_render_buf, IMGP_LOG_INFO, "event=x");
    return s_render_buf [0] == '{';
}

Test (conf, log_format_flag)
{
    cr_expect_eq (s_start (NULL, NULL), 0);
    cr_expect (!s_renders_json (), "text is the default");
    cr_expect_eq (s_start ("json", NULL), 0);
    cr_expect (s_renders_json ());
    cr_expect_eq (s_start ("text", NULL), 0);
    cr_expect (!s_renders_json ());
    cr_expect_eq (s_start (NULL, "json"), 0);
    cr_expect (s_renders_json (), "IMGP_LOG_FORMAT=json");
    cr_expect_eq (s_start ("text", "json"), 0);
    cr_expect (!s_renders_json (), "the flag beats the environment");
    cr_expect_eq (s_start ("xml", NULL), 2, "an unknown format is a bad flag");
    cr_expect_eq (s_start (NULL, "JSON"), 2, "names are exact");
    unsetenv ("IMGP_LOG_FORMAT");
    imgp_log_format_t format;
    cr_expect_eq (imgp_log_format_parse (NULL, &format), -1);
    cr_expect_eq (imgp_log_format_parse ("", &format), -1);
    cr_expect_eq (imgp_log_format_parse ("json", &format), 0);
    cr_expect_eq (format, IMGP_LOG_JSON);
    cr_expect_not_null (imgp_conf_builtin ("log-format"));
    cr_expect_null (imgp_conf_builtin ("width"));
}

//  Run `command` (stderr into a file); returns its exit status and what
//  it wrote on stderr (free it).
static int
s_run (const char *command, char **err)
{
    char path [] = "/tmp/test_log_run.XXXXXX";
    int fd = mkstemp (path);
    cr_assert (fd >= 0);
    close (fd);
    char line [2048];
    snprintf (line, sizeof line, "%s 2>%s >/dev/null", command, path);
    int status = system (line);
    FILE *file = fopen (path, "r");
    cr_assert_not_null (file);
    static char text [65536];
    size_t n = fread (text, 1, sizeof text - 1, file);
    text [n] = '\0';
    fclose (file);
    unlink (path);
    *err = strdup (text);
    return WIFEXITED (status) ? WEXITSTATUS (status) : -1;
}

//  Every line of `text` a JSON object with `event`; at least one has
//  event `want`. Returns the number of lines.
static int
s_all_json (const char *text, const char *want, const char *what)
{
    int lines = 0;
    bool found = false;
    for (const char *line = text; *line; ) {
        const char *end = strchr (line, '\n');
        cr_assert_not_null (end, "%s: last line without newline: %s", what, line);
        json_error_t error;
        json_t *o = json_loadb (line, (size_t) (end - line), JSON_REJECT_DUPLICATES, &error);
        cr_assert_not_null (o, "%s: not JSON (%s): %.*s", what, error.text, (int) (end - line),
                            line);
        cr_expect (json_is_string (json_object_get (o, "event")), "%s: no event: %.*s", what,
                   (int) (end - line), line);
        found |= json_is_string (json_object_get (o, "event"))
              && strcmp (json_string_value (json_object_get (o, "event")), want) == 0;
        json_decref (o);
        lines++;
        line = end + 1;
    }
    cr_expect (found, "%s: no event %s in: %s", what, want, text);
    return lines;
}

Test (programs, write_json_with_the_flag, .timeout = 60)
{
    struct {
        const char *args;           //  after the program's path
        int exit_code;              //  what it must exit with
        const char *event;          //  an event it must log
    } runs [] = {
        { "broker/imgpipe-broker --log-format json --curve-secret /nonexistent "
          "--data-dir /tmp", 2, "start_failed" },
        { "resizer/imgpipe-resizer --log-format=json --nice 0 --name 'a b'", 1, "config_error" },
        { "http-frontend/imgpipe-frontend --log-format json --allow-loaders 'x\"y'", 2,
          "config_error" },
    };
    for (size_t i = 0; i < sizeof runs / sizeof runs [0]; i++) {
        char command [1024], *err;
        snprintf (command, sizeof command, "%s/%s", IMGP_BUILD_DIR, runs [i].args);
        int rc = s_run (command, &err);
        cr_expect_eq (rc, runs [i].exit_code, "%s exited %d: %s", command, rc, err);
        cr_expect_gt (s_all_json (err, runs [i].event, command), 0);
        free (err);
    }
    //  Every program refuses another format, from the flag or the
    //  environment, and names the option (exit 2: bad usage).
    const char *programs [] = { "broker/imgpipe-broker", "resizer/imgpipe-resizer",
                                "http-frontend/imgpipe-frontend", "client/imgpipe" };
    for (size_t i = 0; i < 4; i++) {
        char command [1024], *err;
        snprintf (command, sizeof command, "%s/%s --log-format xml status x", IMGP_BUILD_DIR,
                  programs [i]);
        cr_expect_eq (s_run (command, &err), 2, "%s", command);
        cr_expect_not_null (strstr (err, "--log-format must be text or json"), "%s", err);
        free (err);
        snprintf (command, sizeof command, "IMGP_LOG_FORMAT=json %s/%s --log-format json --help",
                  IMGP_BUILD_DIR, programs [i]);
        cr_expect_eq (s_run (command, &err), 0, "%s: %s", command, err);
        free (err);
    }
}

//  ---------------------------------------------------------------------------
//  The rule over every log call in the tree

typedef struct {
    int calls;                      //  log calls found
    int bad;                        //  of which break the rule
} s_scan_t;

//  Why `format` breaks the rule, or NULL when it keeps it.
static const char *
s_format_problem (const char *format, char *why, size_t size)
{
    static const char *reserved [] = { "time", "level", "program", "text", "truncated" };
    char keys [32][32];
    int count = 0;
    bool event = false;
    const char *p = format;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        const char *key = p;
        while ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')
            p++;
        size_t len = (size_t) (p - key);
        if (len == 0 || *p != '=' || len >= 32) {
            snprintf (why, size, "free prose or a bad key at \"%.20s\" (want key=value, "
                      "keys [a-z0-9_])", key);
            return why;
        }
        p++;
        if (*p == '"') {                //  a quoted value ends at its quote
            const char *close = strchr (p + 1, '"');
            if (!close || (close [1] && close [1] != ' ')) {
                snprintf (why, size, "a quoted value not closed before a space: \"%.20s\"", p);
                return why;
            }
            p = close + 1;
        }
        else
            while (*p && *p != ' ') {
                if (*p == '"') {
                    snprintf (why, size, "a quote inside a bare value at \"%.20s\"", key);
                    return why;
                }
                p++;
            }
        for (size_t r = 0; r < sizeof reserved / sizeof reserved [0]; r++)
            if (strlen (reserved [r]) == len && strncmp (key, reserved [r], len) == 0) {
                snprintf (why, size, "key %s is the JSON envelope's", reserved [r]);
                return why;
            }
        for (int k = 0; k < count; k++)
            if (strlen (keys [k]) == len && strncmp (keys [k], key, len) == 0) {
                snprintf (why, size, "key %.*s twice", (int) len, key);
                return why;
            }
        if (count == 32) {
            snprintf (why, size, "more than 32 fields");
            return why;
        }
        snprintf (keys [count], sizeof keys [count], "%.*s", (int) len, key);
        //  Never a secret: a field named like one is refused outright.
        if (strstr (keys [count], "secret") || strstr (keys [count], "password")
        ||  strstr (keys [count], "token")) {
            snprintf (why, size, "key %.31s names a secret: log a name, never the secret",
                      keys [count]);
            return why;
        }
        if (strcmp (keys [count], "event") == 0)
            event = true;
        else
        if (!event && strcmp (keys [count], "job") != 0 && strcmp (keys [count], "worker") != 0) {
            snprintf (why, size, "%.31s before event= (only job= and worker= may come first)",
                      keys [count]);
            return why;
        }
        count++;
    }
    if (!event) {
        snprintf (why, size, "no event=");
        return why;
    }
    return NULL;
}

//  Skip blanks and comments from `p`. Counts newlines into *line.
static const char *
s_skip_blank (const char *p, int *line)
{
    for (;;) {
        if (*p == '\n')
            (*line)++;
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        else
        if (p [0] == '/' && p [1] == '/')
            while (*p && *p != '\n')
                p++;
        else
        if (p [0] == '/' && p [1] == '*') {
            const char *end = strstr (p + 2, "*/");
            for (const char *c = p; end && c < end; c++)
                *line += *c == '\n';
            p = end ? end + 2 : p + strlen (p);
        }
        else
            return p;
    }
}

//  Adjacent string literals from `p` into `format`, unescaped. Returns the
//  end, or NULL when `p` is not a literal.
static const char *
s_literals (const char *p, char *format, size_t size, int *line)
{
    size_t n = 0;
    bool any = false;
    for (p = s_skip_blank (p, line); *p == '"'; p = s_skip_blank (p, line)) {
        any = true;
        for (p++; *p && *p != '"'; p++) {
            char c = *p;
            if (c == '\\' && p [1]) {
                p++;
                c = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
            }
            if (n + 1 < size)
                format [n++] = c;
        }
        if (*p == '"')
            p++;
    }
    format [n] = '\0';
    return any ? p : NULL;
}

static bool
s_ident (char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
        || c == '_';
}

//  Check every log call of one source file.
static void
s_scan_file (s_scan_t *scan, const char *path, const char *shown)
{
    FILE *file = fopen (path, "r");
    cr_assert_not_null (file, "cannot read %s", path);
    fseek (file, 0, SEEK_END);
    long size = ftell (file);
    rewind (file);
    char *text = calloc (1, (size_t) size + 1);
    cr_assert_eq (fread (text, 1, (size_t) size, file), (size_t) size);
    fclose (file);

    static const char *names [] = { "imgp_log", "imgp_debug", "imgp_info", "imgp_warn",
                                    "imgp_error" };
    int line = 1;
    const char *p = text;
    while (*p) {
        //  Comments, strings and character constants are not code.
        if ((p [0] == '/' && (p [1] == '/' || p [1] == '*'))) {
            p = s_skip_blank (p, &line);
            continue;
        }
        if (*p == '"' || *p == '\'') {
            char quote = *p++;
            while (*p && *p != quote) {
                line += *p == '\n';
                p += *p == '\\' && p [1] ? 2 : 1;
            }
            p += *p ? 1 : 0;
            continue;
        }
        if (*p == '\n')
            line++;
        if (!s_ident (*p) || (p > text && s_ident (p [-1]))) {
            p++;
            continue;
        }
        const char *start = p;
        while (s_ident (*p))
            p++;
        size_t len = (size_t) (p - start);
        bool is_log = false;
        for (size_t i = 0; i < 5; i++)
            is_log |= strlen (names [i]) == len && strncmp (start, names [i], len) == 0;
        int at = line;
        const char *q = is_log ? s_skip_blank (p, &line) : p;
        if (!is_log || *q != '(')
            continue;
        q++;
        if (len == strlen ("imgp_log")) {   //  imgp_log (LEVEL, format, ...)
            int depth = 0;
            while (*q && !(depth == 0 && *q == ',')) {
                depth += *q == '(' ? 1 : *q == ')' ? -1 : 0;
                line += *q == '\n';
                q++;
            }
            q += *q ? 1 : 0;
        }
        scan->calls++;
        char format [2048], why [160];
        const char *end = s_literals (q, format, sizeof format, &line);
        const char *problem = !end ? "the format is not a string literal"
                                   : s_format_problem (format, why, sizeof why);
        if (problem) {
            scan->bad++;
            cr_expect_fail ("%s:%d: %.*s (\"%s\"): %s", shown, at, (int) len, start,
                            end ? format : "", problem);
        }
        p = end ? end : q;
    }
    free (text);
}

//  Every .c and .h under `dir` (relative to the source tree), recursively.
static void
s_scan_dir (s_scan_t *scan, const char *dir)
{
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/%s", IMGP_SOURCE_DIR, dir);
    DIR *d = opendir (path);
    if (!d)
        return;                     //  a program not in this tree
    struct dirent *entry;
    while ((entry = readdir (d))) {
        const char *name = entry->d_name;
        if (name [0] == '.')
            continue;
        char rel [PATH_MAX / 2];
        snprintf (rel, sizeof rel, "%.1000s/%.255s", dir, name);
        snprintf (path, sizeof path, "%s/%s", IMGP_SOURCE_DIR, rel);
        struct stat st;
        if (stat (path, &st) != 0)
            continue;
        size_t n = strlen (name);
        if (S_ISDIR (st.st_mode))
            s_scan_dir (scan, rel);
        else
        if (n > 2 && (strcmp (name + n - 2, ".c") == 0 || strcmp (name + n - 2, ".h") == 0)
        &&  strcmp (rel, "proto/imgp_log.c") != 0 && strcmp (rel, "proto/imgp_log.h") != 0)
            s_scan_file (scan, path, rel);
    }
    closedir (d);
}

Test (calls, every_log_call_is_event_first_key_value)
{
    s_scan_t scan = { 0, 0 };
    const char *dirs [] = { "proto", "broker", "resizer", "http-frontend", "client" };
    for (size_t i = 0; i < sizeof dirs / sizeof dirs [0]; i++)
        s_scan_dir (&scan, dirs [i]);
    //  A scanner that finds nothing would pass anything.
    cr_expect_gt (scan.calls, 100, "only %d log calls found under %s", scan.calls,
                  IMGP_SOURCE_DIR);
    cr_expect_eq (scan.bad, 0, "%d of %d log calls break the rule (lines above)", scan.bad,
                  scan.calls);
}

Test (calls, the_rule_itself)
{
    char why [160];
    const char *good [] = {
        "event=started", "job=%s event=done ms=%lld", "worker=%s event=ready slots=%d",
        "job=%s worker=%s event=x", "event=x message=\"%s has spaces\" n=%d",
        "event=x path=%s/ in=%dx%d", "event=x empty=",
    };
    for (size_t i = 0; i < sizeof good / sizeof good [0]; i++)
        cr_expect_null (s_format_problem (good [i], why, sizeof why), "%s: %s", good [i], why);
    const char *bad [] = {
        "cannot open %s: %s", "spool: event=x", "ms=%d event=x", "event=x (logged once)",
        "event=x event=y", "event=x time=%s", "event=x msg=\"open", "event=x msg=\"a\"b",
        "event=x a=b\"c\"", "job=%s", "", "event=x Key=1", "event=x k=v trailing words",
        "event=x curve_secret=%s", "event=x password=%s", "event=x api_token=%s",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++)
        cr_expect_not_null (s_format_problem (bad [i], why, sizeof why), "passed: '%s'", bad [i]);
}
