/*  imgp_progress — see imgp_progress.h.

    The bar is one line drawn with "\r" and erased with "\r\033[K" (erase
    to end of line), which every terminal imgpipe meets understands; no
    curses. Rates count files uploaded and ended (done or failed) since the
    run began: skipped files cost nothing, so they would make "time left"
    look shorter than it is.
*/
#include "imgp_progress.h"

#include <assert.h>
#include <czmq.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#define S_REDRAW_MS 100         //  the bar is redrawn at most this often
#define S_BAR_WIDTH 20          //  characters of the bar itself, at most
#define S_BAR_MIN 5             //  a narrower bar is left out

typedef struct {
    char *input;                //  the file (owned)
    char *text;                 //  "code: message" (owned)
} s_failure_t;

struct _imgp_progress_t {
    FILE *out;                  //  where it all goes (borrowed)
    bool bar;                   //  draw a bar, not lines
    bool drawn;                 //  a bar is on screen now
    long long start;            //  monotonic ms of the start
    long long drawn_at;         //  when the bar was last drawn
    size_t total;               //  inputs known
    bool final;                 //  total is all of them
    size_t done;                //  thumbnails written
    size_t skipped;             //  inputs skipped, done before
    size_t failed;              //  inputs failed
    zhashx_t *codes;            //  failures per error code (values: counts as pointers)
    s_failure_t listed [IMGP_PROGRESS_LISTED];  //  the first failures
    size_t listed_count;        //  entries used
};

static long long
s_now_ms (void)
{
    return (long long) zclock_mono ();
}

imgp_progress_t *
imgp_progress_new (FILE *out, bool bar)
{
    assert (out);
    imgp_progress_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->codes = zhashx_new ();
    if (!self->codes) {
        free (self);
        return NULL;
    }
    self->out = out;
    self->bar = bar;
    self->start = s_now_ms ();
    return self;
}

void
imgp_progress_destroy (imgp_progress_t **self_p)
{
    assert (self_p);
    imgp_progress_t *self = *self_p;
    if (self) {
        for (size_t i = 0; i < self->listed_count; i++) {
            free (self->listed [i].input);
            free (self->listed [i].text);
        }
        zhashx_destroy (&self->codes);
        free (self);
        *self_p = NULL;
    }
}

//  Copy `text` for a one-line report: control characters become spaces.
static void
s_clean (char *dest, size_t dest_size, const char *text)
{
    snprintf (dest, dest_size, "%s", text ? text : "");
    for (char *c = dest; *c; c++)
        if ((unsigned char) *c < 0x20 || *c == 0x7F)
            *c = ' ';
}

static void
s_erase (imgp_progress_t *self)
{
    if (self->drawn)
        fputs ("\r\033[K", self->out);
    self->drawn = false;
}

//  "1:01", "12:03:09"
static void
s_duration (char *text, size_t size, long long seconds)
{
    if (seconds >= 3600)
        snprintf (text, size, "%lld:%02lld:%02lld", seconds / 3600, seconds / 60 % 60,
                  seconds % 60);
    else
        snprintf (text, size, "%lld:%02lld", seconds / 60, seconds % 60);
}

//  Columns of the terminal `out` is, or 0 when unknown.
static size_t
s_columns (FILE *out)
{
    struct winsize size;
    return ioctl (fileno (out), TIOCGWINSZ, &size) == 0 ? size.ws_col : 0;
}

static void
s_draw (imgp_progress_t *self)
{
    size_t ended = self->done + self->skipped + self->failed;
    size_t worked = self->done + self->failed;
    double seconds = (double) (s_now_ms () - self->start) / 1000.0;
    double rate = seconds > 0 ? (double) worked / seconds : 0;
    char left [32] = "", text [200];
    if (rate > 0 && self->total >= ended) {
        char duration [24];
        s_duration (duration, sizeof duration,
                    (long long) ((double) (self->total - ended) / rate + 0.5));
        snprintf (left, sizeof left, "  %s%s left", self->final ? "" : ">", duration);
    }
    int len = snprintf (text, sizeof text, "%zu/%zu%s  %zu done  %zu failed  %zu skipped  "
                        "%.1f images/s%s", ended, self->total, self->final ? "" : "+",
                        self->done, self->failed, self->skipped, rate, left);
    //  A line longer than the terminal wraps, and "\r" then redraws only
    //  its last part: the bar narrows to what is left of the width (gone
    //  under S_BAR_MIN), then the text is cut.
    size_t columns = s_columns (self->out);
    size_t room = columns > (size_t) len + 4 ? columns - (size_t) len - 4 : 0;
    size_t width = columns == 0 || room > S_BAR_WIDTH ? S_BAR_WIDTH : room;
    char bar [S_BAR_WIDTH + 4] = "";
    if (width >= S_BAR_MIN) {
        size_t filled = self->total ? ended * width / self->total : 0;
        bar [0] = '[';
        for (size_t i = 0; i < width; i++)
            bar [i + 1] = i < filled ? '#' : '.';
        memcpy (bar + width + 1, "] ", 3);
    }
    else
    if (columns > 1 && (size_t) len >= columns)
        text [columns - 1] = 0;
    fprintf (self->out, "\r\033[K%s%s", bar, text);
    fflush (self->out);
    self->drawn = true;
    self->drawn_at = s_now_ms ();
}

void
imgp_progress_tick (imgp_progress_t *self)
{
    assert (self);
    if (self->bar && s_now_ms () - self->drawn_at >= S_REDRAW_MS)
        s_draw (self);
}

void
imgp_progress_total (imgp_progress_t *self, size_t total, bool final)
{
    assert (self);
    self->total = total;
    self->final = final;
}

void
imgp_progress_say (imgp_progress_t *self, const char *text)
{
    assert (self && text);
    s_erase (self);
    fprintf (self->out, "%s\n", text);
    fflush (self->out);
    if (self->bar)
        s_draw (self);
}

void
imgp_progress_done (imgp_progress_t *self, const char *input, const char *output, int width,
                    int height, long long ms, const char *worker)
{
    assert (self && input && output);
    self->done++;
    if (self->bar) {
        imgp_progress_tick (self);
        return;
    }
    char name [160];
    s_clean (name, sizeof name, worker);
    fprintf (self->out, "ok %s -> %s %dx%d %lldms%s%s\n", input, output, width, height, ms,
             *name ? " " : "", name);
    fflush (self->out);
}

void
imgp_progress_skipped (imgp_progress_t *self, const char *input, const char *output)
{
    assert (self && input && output);
    self->skipped++;
    if (self->bar)
        imgp_progress_tick (self);
    else {
        fprintf (self->out, "skipped %s -> %s (made before with these options)\n", input,
                 output);
        fflush (self->out);
    }
}

//  Count the failure under its code, and keep it when among the first.
static void
s_remember (imgp_progress_t *self, const char *input, const char *code, const char *text)
{
    size_t count = (size_t) zhashx_lookup (self->codes, code);
    zhashx_update (self->codes, code, (void *) (count + 1));
    if (self->listed_count < IMGP_PROGRESS_LISTED) {
        s_failure_t *failure = &self->listed [self->listed_count];
        failure->input = strdup (input);
        failure->text = strdup (text);
        if (failure->input && failure->text)
            self->listed_count++;
        else {
            free (failure->input);
            free (failure->text);
        }
    }
}

void
imgp_progress_failed (imgp_progress_t *self, const char *input, const char *code,
                      const char *message)
{
    assert (self && input && code && message);
    self->failed++;
    char clean_code [64], clean_message [512], text [600], line [5000];
    s_clean (clean_code, sizeof clean_code, code);
    s_clean (clean_message, sizeof clean_message, message);
    snprintf (text, sizeof text, "%s: %s", clean_code, clean_message);
    s_remember (self, input, clean_code, text);
    snprintf (line, sizeof line, "failed %s: %s", input, text);
    imgp_progress_say (self, line);
}

void
imgp_progress_summary (imgp_progress_t *self)
{
    assert (self);
    //  The bar's last state stays on screen, above the summary.
    if (self->bar) {
        s_draw (self);
        fputs ("\n", self->out);
        self->drawn = false;
    }
    long long ms = s_now_ms () - self->start;
    double seconds = (double) ms / 1000.0;
    fprintf (self->out, "%zu done, %zu skipped, %zu failed, %.1f s, %.1f images/s\n",
             self->done, self->skipped, self->failed, seconds,
             seconds > 0 ? (double) self->done / seconds : 0.0);
    if (self->failed > 0) {
        fprintf (self->out, "failed:");
        const char *sep = " ";
        for (void *count = zhashx_first (self->codes); count; count = zhashx_next (self->codes)) {
            fprintf (self->out, "%s%zu %s", sep, (size_t) count,
                     (const char *) zhashx_cursor (self->codes));
            sep = ", ";
        }
        fprintf (self->out, "\n");
        for (size_t i = 0; i < self->listed_count; i++)
            fprintf (self->out, "  %s: %s\n", self->listed [i].input, self->listed [i].text);
        if (self->failed > self->listed_count)
            fprintf (self->out, "  ... and %zu more\n", self->failed - self->listed_count);
    }
    fflush (self->out);
}

size_t
imgp_progress_done_count (imgp_progress_t *self)
{
    return self->done;
}

size_t
imgp_progress_skipped_count (imgp_progress_t *self)
{
    return self->skipped;
}

size_t
imgp_progress_failed_count (imgp_progress_t *self)
{
    return self->failed;
}

long long
imgp_progress_elapsed_ms (imgp_progress_t *self)
{
    return s_now_ms () - self->start;
}
