/*  test_metrics — unit tests of imgp_metrics: what each update counts, the
    Prometheus text it renders (checked line by line by a small parser:
    HELP and TYPE before samples, imgpipe_ names, cumulative buckets ending
    in +Inf equal to _count), the writer helpers for the broker's families,
    and exact sums under concurrent updates from many threads.

    Never: depend on timing; every value checked is one the test caused.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgp_metrics.h"

//  --------------------------------------------------------------------------
//  A checker of the exposition format

#define MAX_FAMILIES 64
#define MAX_SERIES MAX_FAMILIES

typedef struct {
    char name [128];            //  family name
    char type [32];             //  its TYPE
    int helps;                  //  HELP lines seen
} family_t;

typedef struct {
    char key [256];             //  histogram name + labels other than le
    double last;                //  last cumulative bucket value
    double last_le;             //  last bound
    double inf;                 //  the +Inf bucket, -1 until seen
} series_t;

typedef struct {
    family_t families [MAX_FAMILIES];   //  families seen
    int family_count;
    series_t series [MAX_SERIES];       //  histogram series seen
    int series_count;
} checker_t;

//  The entry named `name` of an array of `*count` entries of `stride`
//  bytes, each starting with its name (char [128] or more), added zeroed
//  when missing.
static void *
s_entry (void *array, size_t stride, int *count, const char *name, bool *added)
{
    char *entry = array;
    for (int i = 0; i < *count; i++, entry += stride)
        if (strcmp (entry, name) == 0) {
            *added = false;
            return entry;
        }
    cr_assert_lt (*count, MAX_FAMILIES);
    (*count)++;
    memset (entry, 0, stride);
    snprintf (entry, 128, "%s", name);
    *added = true;
    return entry;
}

static family_t *
s_family (checker_t *checker, const char *name)
{
    bool added;
    return s_entry (checker->families, sizeof (family_t), &checker->family_count, name, &added);
}

static series_t *
s_series (checker_t *checker, const char *key)
{
    bool added;
    series_t *series
        = s_entry (checker->series, sizeof (series_t), &checker->series_count, key, &added);
    if (added) {
        series->last_le = -INFINITY;
        series->inf = -1;
    }
    return series;
}

//  "name{labels}": the labels with le="..." taken out, and the le value.
static void
s_split_le (const char *labels, char *rest, size_t size, double *le)
{
    const char *at = strstr (labels, "le=\"");
    cr_assert (at, "bucket without le: %s", labels);
    *le = strncmp (at + 4, "+Inf\"", 5) == 0 ? INFINITY : strtod (at + 4, NULL);
    const char *end = strchr (at + 4, '"') + 1;
    const char *start = at [-1] == ',' ? at - 1 : at;   //  le is written last
    snprintf (rest, size, "%.*s%s", (int) (start - labels), labels, end);
    if (strcmp (rest, "{}") == 0)
        rest [0] = 0;
}

//  Family of a sample name: histogram samples have a suffix.
static family_t *
s_sample_family (checker_t *checker, const char *name, const char **suffix)
{
    static const char *suffixes [] = {"_bucket", "_sum", "_count"};
    for (size_t i = 0; i < 3; i++) {
        size_t len = strlen (name), slen = strlen (suffixes [i]);
        if (len > slen && strcmp (name + len - slen, suffixes [i]) == 0) {
            char base [128];
            snprintf (base, sizeof base, "%.*s", (int) (len - slen), name);
            family_t *family = s_family (checker, base);
            if (strcmp (family->type, "histogram") == 0) {
                *suffix = suffixes [i];
                return family;
            }
        }
    }
    *suffix = "";
    return s_family (checker, name);
}

static void
s_check_histogram_sample (checker_t *checker, const char *name, const char *suffix,
                          const char *labels, double value)
{
    char key [256], rest [200];
    if (strcmp (suffix, "_bucket") == 0) {
        double le;
        s_split_le (labels, rest, sizeof rest, &le);
        snprintf (key, sizeof key, "%.*s%s", (int) (strlen (name) - 7), name, rest);
        series_t *series = s_series (checker, key);
        cr_assert_gt (le, series->last_le, "bounds not ascending in %s", key);
        cr_assert_geq (value, series->last, "buckets not cumulative in %s", key);
        series->last = value;
        series->last_le = le;
        if (isinf (le))
            series->inf = value;
    }
    else if (strcmp (suffix, "_count") == 0) {
        snprintf (key, sizeof key, "%.*s%s", (int) (strlen (name) - 6), name, labels);
        series_t *series = s_series (checker, key);
        cr_assert_eq (series->inf, value, "+Inf %g != _count %g in %s", series->inf, value, key);
    }
}

static void
s_check_sample (checker_t *checker, const char *line)
{
    char name [128], labels [200] = "";
    size_t name_len = strcspn (line, "{ ");
    snprintf (name, sizeof name, "%.*s", (int) name_len, line);
    cr_assert (strncmp (name, "imgpipe_", 8) == 0, "unprefixed: %s", line);
    const char *rest = line + name_len;
    if (*rest == '{') {
        const char *close = strstr (rest, "} ");
        cr_assert (close, "unclosed labels: %s", line);
        snprintf (labels, sizeof labels, "%.*s", (int) (close - rest + 1), rest);
        rest = close + 1;
    }
    cr_assert_eq (*rest, ' ', "no value: %s", line);
    char *end;
    double value = strtod (rest + 1, &end);
    cr_assert (end != rest + 1 && *end == 0, "bad value: %s", line);
    const char *suffix;
    family_t *family = s_sample_family (checker, name, &suffix);
    cr_assert (family->helps == 1 && family->type [0], "sample before HELP/TYPE: %s", line);
    if (*suffix)
        s_check_histogram_sample (checker, name, suffix, labels, value);
}

static void
s_check_line (checker_t *checker, const char *line)
{
    char name [128], word [32];
    if (strncmp (line, "# HELP ", 7) == 0) {
        cr_assert_eq (sscanf (line + 7, "%127s", name), 1);
        family_t *family = s_family (checker, name);
        cr_assert_eq (family->helps++, 0, "second HELP for %s", name);
    }
    else if (strncmp (line, "# TYPE ", 7) == 0) {
        cr_assert_eq (sscanf (line + 7, "%127s %31s", name, word), 2);
        family_t *family = s_family (checker, name);
        cr_assert (family->helps == 1 && !family->type [0], "TYPE out of place: %s", line);
        cr_assert (strcmp (word, "counter") == 0 || strcmp (word, "gauge") == 0
                   || strcmp (word, "histogram") == 0, "type %s", word);
        snprintf (family->type, sizeof family->type, "%s", word);
    }
    else
        s_check_sample (checker, line);
}

//  Check every line of `text`; returns the number of families.
static int
s_check_text (const char *text)
{
    cr_assert (text);
    size_t len = strlen (text);
    cr_assert (len > 0 && text [len - 1] == '\n', "text must end with a newline");
    checker_t *checker = calloc (1, sizeof (checker_t));
    char *copy = strdup (text), *saveptr;
    for (char *line = strtok_r (copy, "\n", &saveptr); line; line = strtok_r (NULL, "\n", &saveptr))
        s_check_line (checker, line);
    for (int i = 0; i < checker->series_count; i++)
        cr_assert_geq (checker->series [i].inf, 0, "no +Inf bucket in %s", checker->series [i].key);
    int families = checker->family_count;
    free (copy);
    free (checker);
    return families;
}

//  The value of the sample `series` (name and labels exactly), or -1.
static double
s_value (const char *text, const char *series)
{
    size_t len = strlen (series);
    for (const char *line = text; line && *line; line = strchr (line, '\n'), line = line ? line + 1 : NULL)
        if (strncmp (line, series, len) == 0 && line [len] == ' ')
            return strtod (line + len + 1, NULL);
    return -1;
}

//  A sample and the value it must have (-1: absent).
typedef struct {
    const char *series;         //  name and labels, exactly as written
    double value;               //  expected value
} expect_t;

static void
s_expect (const char *text, const expect_t *expect, size_t count)
{
    for (size_t i = 0; i < count; i++)
        cr_assert_eq (s_value (text, expect [i].series), expect [i].value, "%s is %g, not %g",
                      expect [i].series, s_value (text, expect [i].series), expect [i].value);
}

#define EXPECT(text, ...)                                                                          \
    do {                                                                                           \
        expect_t expect_ [] = {__VA_ARGS__};                                                       \
        s_expect (text, expect_, sizeof expect_ / sizeof expect_ [0]);                             \
    } while (0)

//  --------------------------------------------------------------------------
//  The registry

//  The registry's text alone, as GET /metrics writes it before the
//  broker's families; the caller frees it.
static char *
s_render (imgp_metrics_t *metrics)
{
    imgp_metrics_out_t *out = imgp_metrics_out_new ();
    cr_assert (out);
    imgp_metrics_write (metrics, out);
    return imgp_metrics_out_text (&out);
}

Test (metrics, empty_registry_renders_every_family_at_zero)
{
    imgp_metrics_t *metrics = imgp_metrics_new ();
    cr_assert (metrics);
    char *text = s_render (metrics);
    cr_assert_eq (s_check_text (text), 7);
    cr_assert (strstr (text, "# TYPE imgpipe_http_requests_total counter\n"));
    cr_assert (strstr (text, "# TYPE imgpipe_http_request_duration_seconds histogram\n"));
    EXPECT (text,
            {"imgpipe_http_connections_open", 0},
            {"imgpipe_http_workers_busy", 0},
            {"imgpipe_http_upload_bytes_total", 0},
            {"imgpipe_http_refusals_total{reason=\"upload_timeout\"}", 0},
            {"imgpipe_broker_roundtrip_seconds_bucket{le=\"+Inf\"}", 0},
            {"imgpipe_broker_roundtrip_seconds_count", 0});
    free (text);
    imgp_metrics_destroy (&metrics);
    imgp_metrics_destroy (&metrics);
    cr_assert_null (metrics);
}

Test (metrics, updates_show_in_their_series)
{
    imgp_metrics_t *metrics = imgp_metrics_new ();
    imgp_metrics_request (metrics, IMGP_ROUTE_UPLOAD, 202, 0.003);
    imgp_metrics_request (metrics, IMGP_ROUTE_UPLOAD, 202, 0.004);
    imgp_metrics_request (metrics, IMGP_ROUTE_UPLOAD, 413, 0.2);
    imgp_metrics_request (metrics, IMGP_ROUTE_THUMBNAIL, 299, 0.01);
    imgp_metrics_request (metrics, IMGP_ROUTE_OTHER, 404, 120);
    imgp_metrics_refusal (metrics, IMGP_REFUSAL_CONN_LIMIT);
    imgp_metrics_refusal (metrics, IMGP_REFUSAL_CONN_LIMIT);
    imgp_metrics_gauge_add (metrics, IMGP_GAUGE_CONNECTIONS, 5);
    imgp_metrics_gauge_add (metrics, IMGP_GAUGE_CONNECTIONS, -2);
    imgp_metrics_gauge_add (metrics, IMGP_GAUGE_WORKERS_BUSY, 1);
    imgp_metrics_upload_bytes (metrics, 12345);
    imgp_metrics_roundtrip (metrics, 0.0002);
    char *text = s_render (metrics);
    s_check_text (text);

    //  Buckets are cumulative: 3 ms and 4 ms are in le=0.005 and up, 0.2 s
    //  from le=0.25; 120 s is only in +Inf. Unused series are left out.
#define UPLOAD_BUCKET(le) "imgpipe_http_request_duration_seconds_bucket{route=\"upload\",le=\"" le "\"}"
#define OTHER_BUCKET(le) "imgpipe_http_request_duration_seconds_bucket{route=\"other\",le=\"" le "\"}"
    EXPECT (text,
            {"imgpipe_http_requests_total{route=\"upload\",status=\"202\"}", 2},
            {"imgpipe_http_requests_total{route=\"upload\",status=\"413\"}", 1},
            {"imgpipe_http_requests_total{route=\"thumbnail\",status=\"other\"}", 1},
            {"imgpipe_http_requests_total{route=\"status\",status=\"200\"}", -1},
            {UPLOAD_BUCKET ("0.001"), 0},
            {UPLOAD_BUCKET ("0.005"), 2},
            {UPLOAD_BUCKET ("0.1"), 2},
            {UPLOAD_BUCKET ("0.25"), 3},
            {"imgpipe_http_request_duration_seconds_count{route=\"upload\"}", 3},
            {OTHER_BUCKET ("60"), 0},
            {OTHER_BUCKET ("+Inf"), 1},
            {"imgpipe_http_request_duration_seconds_count{route=\"status\"}", -1},
            {"imgpipe_http_refusals_total{reason=\"conn_limit\"}", 2},
            {"imgpipe_http_refusals_total{reason=\"rate_limited\"}", 0},
            {"imgpipe_http_connections_open", 3},
            {"imgpipe_http_workers_busy", 1},
            {"imgpipe_http_upload_bytes_total", 12345},
            {"imgpipe_broker_roundtrip_seconds_bucket{le=\"0.0001\"}", 0},
            {"imgpipe_broker_roundtrip_seconds_bucket{le=\"0.00025\"}", 1});
    cr_assert_float_eq (
        s_value (text, "imgpipe_http_request_duration_seconds_sum{route=\"upload\"}"), 0.207, 1e-9);
    free (text);
    imgp_metrics_destroy (&metrics);
}

Test (metrics, bucket_bounds_are_inclusive_and_odd_values_are_safe)
{
    imgp_metrics_t *metrics = imgp_metrics_new ();
    imgp_metrics_roundtrip (metrics, 0.001);
    imgp_metrics_roundtrip (metrics, -3);
    imgp_metrics_roundtrip (metrics, NAN);
    imgp_metrics_roundtrip (metrics, INFINITY);
    char *text = s_render (metrics);
    s_check_text (text);
    EXPECT (text,
            {"imgpipe_broker_roundtrip_seconds_bucket{le=\"0.0001\"}", 2},
            {"imgpipe_broker_roundtrip_seconds_bucket{le=\"0.0005\"}", 2},
            {"imgpipe_broker_roundtrip_seconds_bucket{le=\"0.001\"}", 3},
            {"imgpipe_broker_roundtrip_seconds_bucket{le=\"5\"}", 3},
            {"imgpipe_broker_roundtrip_seconds_count", 4});
    //  -3 and NaN count as 0, infinity as the cap of 1e6 s.
    cr_assert_float_eq (s_value (text, "imgpipe_broker_roundtrip_seconds_sum"), 1e6 + 0.001, 1e-6);
    free (text);
    imgp_metrics_destroy (&metrics);
}

//  --------------------------------------------------------------------------
//  The writer

Test (metrics, writer_helpers_write_exact_families)
{
    imgp_metrics_out_t *out = imgp_metrics_out_new ();
    imgp_metrics_out_scalar (out, "broker_queue_depth", IMGP_METRIC_GAUGE, "Jobs queued.", 7);
    imgp_metrics_out_scalar (out, "broker_jobs_total", IMGP_METRIC_COUNTER,
                             "Jobs with a \\ and a\nnewline.", 1e12);
    double bounds [] = {0.1, 1};
    uint64_t counts [] = {2, 0, 3};
    imgp_metrics_out_histogram (out, "broker_job_seconds", "Job time.", bounds, counts, 2, 4.5);
    char *text = imgp_metrics_out_text (&out);
    cr_assert_null (out);
    cr_assert_str_eq (text,
                      "# HELP imgpipe_broker_queue_depth Jobs queued.\n"
                      "# TYPE imgpipe_broker_queue_depth gauge\n"
                      "imgpipe_broker_queue_depth 7\n"
                      "# HELP imgpipe_broker_jobs_total Jobs with a \\\\ and a\\nnewline.\n"
                      "# TYPE imgpipe_broker_jobs_total counter\n"
                      "imgpipe_broker_jobs_total 1000000000000\n"
                      "# HELP imgpipe_broker_job_seconds Job time.\n"
                      "# TYPE imgpipe_broker_job_seconds histogram\n"
                      "imgpipe_broker_job_seconds_bucket{le=\"0.1\"} 2\n"
                      "imgpipe_broker_job_seconds_bucket{le=\"1\"} 2\n"
                      "imgpipe_broker_job_seconds_bucket{le=\"+Inf\"} 5\n"
                      "imgpipe_broker_job_seconds_sum 4.5\n"
                      "imgpipe_broker_job_seconds_count 5\n");
    s_check_text (text);
    free (text);
}

Test (metrics, registry_and_broker_families_share_one_text)
{
    imgp_metrics_t *metrics = imgp_metrics_new ();
    imgp_metrics_request (metrics, IMGP_ROUTE_METRICS, 200, 0.0001);
    imgp_metrics_out_t *out = imgp_metrics_out_new ();
    imgp_metrics_write (metrics, out);
    imgp_metrics_out_scalar (out, "broker_resizers_live", IMGP_METRIC_GAUGE, "Live resizers.", 4);
    uint64_t counts [] = {0};
    imgp_metrics_out_histogram (out, "broker_empty_seconds", "No bounds.", NULL, counts, 0, 0);
    char *text = imgp_metrics_out_text (&out);
    cr_assert_eq (s_check_text (text), 9);
    EXPECT (text,
            {"imgpipe_broker_resizers_live", 4},
            {"imgpipe_broker_empty_seconds_bucket{le=\"+Inf\"}", 0});
    free (text);
    imgp_metrics_out_destroy (&out);
    imgp_metrics_destroy (&metrics);
}

Test (metrics, a_long_text_grows)
{
    imgp_metrics_out_t *out = imgp_metrics_out_new ();
    char help [5000];
    memset (help, 'h', sizeof help - 1);
    help [sizeof help - 1] = 0;
    for (int i = 0; i < 50; i++)
        imgp_metrics_out_scalar (out, "broker_long", IMGP_METRIC_GAUGE, help, i);
    char *text = imgp_metrics_out_text (&out);
    cr_assert (text);
    cr_assert_gt (strlen (text), 50 * 5000);
    free (text);
}

//  --------------------------------------------------------------------------
//  Concurrency

#define THREADS 32
#define UPDATES 20000

static void *
s_updater (void *args)
{
    imgp_metrics_t *metrics = args;
    for (int i = 0; i < UPDATES; i++) {
        imgp_metrics_gauge_add (metrics, IMGP_GAUGE_CONNECTIONS, 1);
        imgp_metrics_request (metrics, (imgp_route_t) (i % IMGP_ROUTE_COUNT), 200, 0.01);
        imgp_metrics_refusal (metrics, IMGP_REFUSAL_QUEUE_FULL);
        imgp_metrics_upload_bytes (metrics, 3);
        imgp_metrics_roundtrip (metrics, 0.002);
        imgp_metrics_gauge_add (metrics, IMGP_GAUGE_CONNECTIONS, -1);
    }
    return NULL;
}

Test (metrics, concurrent_updates_sum_exactly)
{
    imgp_metrics_t *metrics = imgp_metrics_new ();
    pthread_t threads [THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create (&threads [i], NULL, s_updater, metrics);
    for (int i = 0; i < THREADS; i++)
        pthread_join (threads [i], NULL);
    char *text = s_render (metrics);
    s_check_text (text);
    double per_route = (double) THREADS * UPDATES / IMGP_ROUTE_COUNT;
    EXPECT (text,
            {"imgpipe_http_requests_total{route=\"upload\",status=\"200\"}", per_route},
            {"imgpipe_http_requests_total{route=\"other\",status=\"200\"}", per_route},
            {"imgpipe_http_request_duration_seconds_count{route=\"ready\"}", per_route});
    cr_assert_float_eq (
        s_value (text, "imgpipe_http_request_duration_seconds_sum{route=\"ready\"}"),
        per_route * 0.01, 1e-6);
    EXPECT (text,
            {"imgpipe_http_refusals_total{reason=\"queue_full\"}", THREADS * UPDATES},
            {"imgpipe_http_upload_bytes_total", 3.0 * THREADS * UPDATES},
            {"imgpipe_broker_roundtrip_seconds_count", THREADS * UPDATES},
            {"imgpipe_http_connections_open", 0});
    free (text);
    imgp_metrics_destroy (&metrics);
}
