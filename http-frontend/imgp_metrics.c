/*  imgp_metrics — see imgp_metrics.h.

    Every series is a slot in a fixed array of C11 atomics, updated with
    relaxed adds: a scrape needs each number to be right, not a snapshot
    of all of them at one instant. A histogram keeps per-bucket counts (one
    add an observation) and makes them cumulative when written; its count
    is the sum of the buckets, so `+Inf` and `_count` always agree, and its
    sum is kept in nanoseconds because atomic adds on doubles are loops.

    Only series that have moved are written for the request families (8
    routes x 22 codes would be mostly zeros); refusals, gauges and the
    round-trip histogram are always written, so alerts see them from 0.
*/
#include "imgp_metrics.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_PREFIX "imgpipe_"
#define S_BUCKETS_MAX 16            //  most bounds of one histogram
#define S_SECONDS_MAX 1e6           //  longer observations count as this (no overflow)
#define S_NUMBER_SIZE 32            //  text of one number

//  The status codes the frontend sends; others count as "other".
static const int s_codes [] = {200, 202, 204, 304, 400, 401, 404, 405, 408, 411, 413,
                               415, 417, 422, 429, 431, 500, 502, 503, 505, 507};
#define S_CODES (sizeof s_codes / sizeof s_codes [0])

static const char *s_routes [IMGP_ROUTE_COUNT] = {
    "upload", "status", "thumbnail", "health", "ready", "metrics", "cluster", "other"};

static const char *s_refusals [IMGP_REFUSAL_COUNT] = {
    "rate_limited", "conn_limit", "too_large", "queue_full",
    "broker_down", "unauthorized", "head_timeout", "upload_timeout", "pool_crowded"};

//  Request durations: fast answers to slow uploads.
static const double s_request_bounds [] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                           0.5,   1,     2.5,  5,     10,   30,  60};
//  Broker round trips: a loopback call is well under a millisecond.
static const double s_roundtrip_bounds [] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                             0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                             1,      2.5,     5};

typedef struct {
    const double *bounds;       //  upper bounds, ascending (static)
    size_t size;                //  number of bounds
    atomic_uint_least64_t counts [S_BUCKETS_MAX + 1];   //  per bucket, last above all
    atomic_uint_least64_t sum_ns;                       //  sum of observations, ns
} s_histogram_t;

struct _imgp_metrics_t {
    atomic_uint_least64_t requests [IMGP_ROUTE_COUNT][S_CODES + 1];    //  last: other
    s_histogram_t durations [IMGP_ROUTE_COUNT];     //  request duration by route
    atomic_uint_least64_t refusals [IMGP_REFUSAL_COUNT];    //  refusals by reason
    atomic_int_least64_t gauges [IMGP_GAUGE_COUNT];         //  the gauges
    atomic_uint_least64_t upload_bytes;                     //  upload bytes received
    s_histogram_t roundtrip;                        //  broker round trips
};

struct _imgp_metrics_out_t {
    char *text;                 //  the exposition so far, NUL-terminated
    size_t length;              //  its length
    size_t max;                 //  bytes allocated
    bool failed;                //  an append ran out of memory
};

typedef struct {
    const char *name;           //  label name
    const char *value;          //  label value, escaped when written
} s_label_t;

//  --------------------------------------------------------------------------
//  The writer

static void
s_out_printf (imgp_metrics_out_t *self, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));

static void
s_out_printf (imgp_metrics_out_t *self, const char *format, ...)
{
    if (self->failed)
        return;
    va_list args;
    va_start (args, format);
    int needed = vsnprintf (self->text + self->length, self->max - self->length, format, args);
    va_end (args);
    if (needed < 0 || self->length + (size_t) needed < self->max) {
        self->length += needed > 0 ? (size_t) needed : 0;
        return;
    }
    size_t max = self->max * 2 + (size_t) needed;
    char *text = realloc (self->text, max);
    if (!text) {
        self->text [self->length] = 0;
        self->failed = true;
        return;
    }
    self->text = text;
    self->max = max;
    va_start (args, format);
    vsnprintf (self->text + self->length, self->max - self->length, format, args);
    va_end (args);
    self->length += (size_t) needed;
}

//  `text` with backslash and newline escaped, and double quotes too when
//  `quote` (label values; HELP text leaves quotes alone).
static void
s_out_escaped (imgp_metrics_out_t *self, const char *text, bool quote)
{
    for (; *text; text++) {
        if (*text == '\\')
            s_out_printf (self, "\\\\");
        else if (*text == '\n')
            s_out_printf (self, "\\n");
        else if (*text == '"' && quote)
            s_out_printf (self, "\\\"");
        else
            s_out_printf (self, "%c", *text);
    }
}

//  A sample value or bound as the format spells it. Whole numbers are
//  written in full (%.15g would turn a byte counter past 1e15 into 1e+15
//  with digits lost); others with 15 digits, so 0.1 stays "0.1".
static void
s_format_double (char *buf, double value)
{
    if (isnan (value))
        strcpy (buf, "NaN");
    else if (isinf (value))
        strcpy (buf, value > 0 ? "+Inf" : "-Inf");
    else if (value == floor (value) && fabs (value) < 1e18)
        snprintf (buf, S_NUMBER_SIZE, "%.0f", value);
    else
        snprintf (buf, S_NUMBER_SIZE, "%.15g", value);
}

static void
s_assert_name (const char *name)
{
    assert (*name && strspn (name, "abcdefghijklmnopqrstuvwxyz0123456789_") == strlen (name));
    (void) name;
}

static void
s_out_head (imgp_metrics_out_t *self, const char *name, const char *type, const char *help)
{
    s_assert_name (name);
    s_out_printf (self, "# HELP " S_PREFIX "%s ", name);
    s_out_escaped (self, help, false);
    s_out_printf (self, "\n# TYPE " S_PREFIX "%s %s\n", name, type);
}

//  One sample line: imgpipe_NAME{LABELS} VALUE. Counts come as doubles
//  too: exact up to 2^53, far beyond any count a process reaches.
static void
s_out_sample (imgp_metrics_out_t *self, const char *name, const s_label_t *labels, size_t count,
              double value)
{
    char number [S_NUMBER_SIZE];
    s_format_double (number, value);
    s_out_printf (self, S_PREFIX "%s", name);
    for (size_t i = 0; i < count; i++) {
        s_out_printf (self, "%s%s=\"", i ? "," : "{", labels [i].name);
        s_out_escaped (self, labels [i].value, true);
        s_out_printf (self, "\"");
    }
    s_out_printf (self, "%s %s\n", count ? "}" : "", number);
}

//  The sample lines of one histogram, with `label` (may be NULL) on each.
static void
s_out_buckets (imgp_metrics_out_t *self, const char *name, const s_label_t *label,
               const double *bounds, const uint64_t *counts, size_t size, double sum)
{
    char series [128], le [S_NUMBER_SIZE];
    s_label_t labels [2];
    size_t count = 0;           //  labels of _sum and _count; buckets add le
    if (label)
        labels [count++] = *label;
    labels [count] = (s_label_t) {"le", le};
    uint64_t cumulative = 0;
    snprintf (series, sizeof series, "%s_bucket", name);
    for (size_t i = 0; i <= size; i++) {
        cumulative += counts [i];
        s_format_double (le, i < size ? bounds [i] : INFINITY);
        s_out_sample (self, series, labels, count + 1, (double) cumulative);
    }
    snprintf (series, sizeof series, "%s_sum", name);
    s_out_sample (self, series, labels, count, sum);
    snprintf (series, sizeof series, "%s_count", name);
    s_out_sample (self, series, labels, count, (double) cumulative);
}

imgp_metrics_out_t *
imgp_metrics_out_new (void)
{
    imgp_metrics_out_t *self = calloc (1, sizeof (imgp_metrics_out_t));
    if (self) {
        self->max = 4096;
        self->text = calloc (1, self->max);
    }
    if (self && !self->text)
        imgp_metrics_out_destroy (&self);
    return self;
}

void
imgp_metrics_out_destroy (imgp_metrics_out_t **self_p)
{
    if (self_p && *self_p) {
        free ((*self_p)->text);
        free (*self_p);
        *self_p = NULL;
    }
}

void
imgp_metrics_out_scalar (imgp_metrics_out_t *self, const char *name, imgp_metric_type_t type,
                         const char *help, double value)
{
    assert (self && name && help);
    s_out_head (self, name, type == IMGP_METRIC_COUNTER ? "counter" : "gauge", help);
    s_out_sample (self, name, NULL, 0, value);
}

void
imgp_metrics_out_histogram (imgp_metrics_out_t *self, const char *name, const char *help,
                            const double *bounds, const uint64_t *counts, size_t size, double sum)
{
    assert (self && name && help && counts && (bounds || size == 0));
    assert (strlen (name) < 100);
    s_out_head (self, name, "histogram", help);
    s_out_buckets (self, name, NULL, bounds, counts, size, sum);
}

char *
imgp_metrics_out_text (imgp_metrics_out_t **self_p)
{
    assert (self_p && *self_p);
    char *text = (*self_p)->failed ? NULL : (*self_p)->text;
    if (text)
        (*self_p)->text = NULL;
    imgp_metrics_out_destroy (self_p);
    return text;
}

//  --------------------------------------------------------------------------
//  Histograms

//  Counts and sum start at calloc's zeros, as every other series does.
static void
s_histogram_init (s_histogram_t *self, const double *bounds, size_t size)
{
    assert (size <= S_BUCKETS_MAX);
    self->bounds = bounds;
    self->size = size;
}

static void
s_histogram_observe (s_histogram_t *self, double seconds)
{
    if (!(seconds > 0))
        seconds = 0;            //  negative or NaN: a clock step, count it as instant
    seconds = fmin (seconds, S_SECONDS_MAX);
    size_t bucket = 0;
    while (bucket < self->size && seconds > self->bounds [bucket])
        bucket++;
    atomic_fetch_add_explicit (&self->counts [bucket], 1, memory_order_relaxed);
    atomic_fetch_add_explicit (&self->sum_ns, (uint64_t) llround (seconds * 1e9),
                               memory_order_relaxed);
}

//  Read the counts; returns their total.
static uint64_t
s_histogram_read (s_histogram_t *self, uint64_t *counts, double *sum)
{
    uint64_t total = 0;
    for (size_t i = 0; i <= self->size; i++) {
        counts [i] = atomic_load_explicit (&self->counts [i], memory_order_relaxed);
        total += counts [i];
    }
    *sum = (double) atomic_load_explicit (&self->sum_ns, memory_order_relaxed) / 1e9;
    return total;
}

//  The histogram's samples, with `label` (may be NULL); none when empty
//  and `skip_empty`.
static void
s_histogram_write (s_histogram_t *self, imgp_metrics_out_t *out, const char *name,
                   const s_label_t *label, bool skip_empty)
{
    uint64_t counts [S_BUCKETS_MAX + 1];
    double sum;
    if (s_histogram_read (self, counts, &sum) || !skip_empty)
        s_out_buckets (out, name, label, self->bounds, counts, self->size, sum);
}

//  --------------------------------------------------------------------------
//  The registry

#define S_COUNT_OF(array) (sizeof (array) / sizeof ((array) [0]))

imgp_metrics_t *
imgp_metrics_new (void)
{
    imgp_metrics_t *self = calloc (1, sizeof (imgp_metrics_t));
    if (!self)
        return NULL;
    //  calloc's zeros are valid atomics on every platform we build for;
    //  only the histograms' bounds need setting.
    for (size_t route = 0; route < IMGP_ROUTE_COUNT; route++)
        s_histogram_init (&self->durations [route], s_request_bounds,
                          S_COUNT_OF (s_request_bounds));
    s_histogram_init (&self->roundtrip, s_roundtrip_bounds, S_COUNT_OF (s_roundtrip_bounds));
    return self;
}

void
imgp_metrics_destroy (imgp_metrics_t **self_p)
{
    if (self_p && *self_p) {
        free (*self_p);
        *self_p = NULL;
    }
}

static size_t
s_code_index (int status)
{
    size_t index = 0;
    while (index < S_CODES && s_codes [index] != status)
        index++;
    return index;               //  S_CODES: other
}

void
imgp_metrics_request (imgp_metrics_t *self, imgp_route_t route, int status, double seconds)
{
    assert (self && route < IMGP_ROUTE_COUNT);
    atomic_fetch_add_explicit (&self->requests [route][s_code_index (status)], 1,
                               memory_order_relaxed);
    s_histogram_observe (&self->durations [route], seconds);
}

void
imgp_metrics_refusal (imgp_metrics_t *self, imgp_refusal_t reason)
{
    assert (self && reason < IMGP_REFUSAL_COUNT);
    atomic_fetch_add_explicit (&self->refusals [reason], 1, memory_order_relaxed);
}

void
imgp_metrics_gauge_add (imgp_metrics_t *self, imgp_gauge_t gauge, int64_t delta)
{
    assert (self && gauge < IMGP_GAUGE_COUNT);
    atomic_fetch_add_explicit (&self->gauges [gauge], delta, memory_order_relaxed);
}

void
imgp_metrics_roundtrip (imgp_metrics_t *self, double seconds)
{
    assert (self);
    s_histogram_observe (&self->roundtrip, seconds);
}

void
imgp_metrics_upload_bytes (imgp_metrics_t *self, uint64_t bytes)
{
    assert (self);
    atomic_fetch_add_explicit (&self->upload_bytes, bytes, memory_order_relaxed);
}

static void
s_write_requests (imgp_metrics_t *self, imgp_metrics_out_t *out)
{
    s_out_head (out, "http_requests_total", "counter", "HTTP requests answered, by route and status.");
    for (size_t route = 0; route < IMGP_ROUTE_COUNT; route++)
        for (size_t code = 0; code <= S_CODES; code++) {
            uint64_t value
                = atomic_load_explicit (&self->requests [route][code], memory_order_relaxed);
            if (value == 0)
                continue;
            char status [S_NUMBER_SIZE];
            snprintf (status, sizeof status, "%d", code < S_CODES ? s_codes [code] : 0);
            s_label_t labels [] = {{"route", s_routes [route]},
                                   {"status", code < S_CODES ? status : "other"}};
            s_out_sample (out, "http_requests_total", labels, 2, (double) value);
        }
}

static void
s_write_durations (imgp_metrics_t *self, imgp_metrics_out_t *out)
{
    s_out_head (out, "http_request_duration_seconds", "histogram",
                "Time from a request's head to the end of its answer, by route.");
    for (size_t route = 0; route < IMGP_ROUTE_COUNT; route++) {
        s_label_t label = {"route", s_routes [route]};
        s_histogram_write (&self->durations [route], out, "http_request_duration_seconds", &label,
                           true);
    }
}

static void
s_write_refusals (imgp_metrics_t *self, imgp_metrics_out_t *out)
{
    s_out_head (out, "http_refusals_total", "counter", "Requests refused, by reason.");
    for (size_t reason = 0; reason < IMGP_REFUSAL_COUNT; reason++) {
        s_label_t label = {"reason", s_refusals [reason]};
        s_out_sample (out, "http_refusals_total", &label, 1,
                      (double) atomic_load_explicit (&self->refusals [reason],
                                                     memory_order_relaxed));
    }
}

void
imgp_metrics_write (imgp_metrics_t *self, imgp_metrics_out_t *out)
{
    assert (self && out);
    s_write_requests (self, out);
    s_write_durations (self, out);
    s_write_refusals (self, out);
    imgp_metrics_out_scalar (out, "http_connections_open", IMGP_METRIC_GAUGE,
                             "HTTP connections open now.",
                             (double) atomic_load (&self->gauges [IMGP_GAUGE_CONNECTIONS]));
    imgp_metrics_out_scalar (out, "http_workers_busy", IMGP_METRIC_GAUGE,
                             "Worker threads serving a request now.",
                             (double) atomic_load (&self->gauges [IMGP_GAUGE_WORKERS_BUSY]));
    imgp_metrics_out_scalar (out, "http_upload_bytes_total", IMGP_METRIC_COUNTER,
                             "Upload body bytes received.",
                             (double) atomic_load (&self->upload_bytes));
    s_out_head (out, "broker_roundtrip_seconds", "histogram",
                "Time from sending a request to the broker to its reply.");
    s_histogram_write (&self->roundtrip, out, "broker_roundtrip_seconds", NULL, false);
}
