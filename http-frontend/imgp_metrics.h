/*  imgp_metrics — the frontend's Prometheus metrics: counters, gauges and
    histograms with fixed label sets, and the writer of the text exposition
    format 0.0.4 that GET /metrics serves.

    Why: operators need request rates by route and status, latencies,
    refusals by reason, open connections and busy workers, and the broker's
    own figures on the same page. Every request updates several series
    from one of thousands of worker threads, so each update is one relaxed
    atomic add on a fixed array: no lock, no allocation, no lookup by name.
    The label sets are closed enums, so a client cannot create series.

    The writer (imgp_metrics_out_*) is the one place that writes the text
    format: the frontend's families and the broker's (`imgpipe_broker_*`,
    fetched over ZeroMQ) both go through it, so escaping, HELP/TYPE lines
    and cumulative buckets are right in one place. Names are given without
    the `imgpipe_` prefix, which the writer adds.

    Never: lock or allocate on an update path, or make a label value from
    request data.
*/
#ifndef IMGP_METRICS_H_INCLUDED
#define IMGP_METRICS_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

//  Label `route` of the request series.
typedef enum {
    IMGP_ROUTE_UPLOAD,          //  POST /v1/images, POST /images
    IMGP_ROUTE_STATUS,          //  GET /v1/images/{id}
    IMGP_ROUTE_THUMBNAIL,       //  GET .../thumbnail
    IMGP_ROUTE_HEALTH,          //  GET /healthz
    IMGP_ROUTE_READY,           //  GET /readyz
    IMGP_ROUTE_METRICS,         //  GET /metrics
    IMGP_ROUTE_CLUSTER,         //  GET /v1/cluster
    IMGP_ROUTE_OTHER,           //  anything else (the page, openapi, 404s)
    IMGP_ROUTE_COUNT
} imgp_route_t;

//  Label `reason` of imgpipe_http_refusals_total.
typedef enum {
    IMGP_REFUSAL_RATE_LIMITED,  //  429, a bucket was empty
    IMGP_REFUSAL_CONN_LIMIT,    //  503, too many connections from one address
    IMGP_REFUSAL_TOO_LARGE,     //  413
    IMGP_REFUSAL_QUEUE_FULL,    //  503 from the broker's queue bound
    IMGP_REFUSAL_BROKER_DOWN,   //  503, the broker did not answer
    IMGP_REFUSAL_UNAUTHORIZED,  //  401, no key or a wrong one
    IMGP_REFUSAL_HEAD_TIMEOUT,  //  408, the request head came too slowly
    IMGP_REFUSAL_UPLOAD_TIMEOUT,//  408, the body came too slowly
    IMGP_REFUSAL_POOL_CROWDED,  //  a keep-alive connection closed: few workers free
    IMGP_REFUSAL_COUNT
} imgp_refusal_t;

//  The gauges.
typedef enum {
    IMGP_GAUGE_CONNECTIONS,     //  imgpipe_http_connections_open
    IMGP_GAUGE_WORKERS_BUSY,    //  imgpipe_http_workers_busy
    IMGP_GAUGE_COUNT
} imgp_gauge_t;

//  Family types for imgp_metrics_out_scalar.
typedef enum {
    IMGP_METRIC_COUNTER,
    IMGP_METRIC_GAUGE
} imgp_metric_type_t;

typedef struct _imgp_metrics_t imgp_metrics_t;
typedef struct _imgp_metrics_out_t imgp_metrics_out_t;

//  --------------------------------------------------------------------------
//  The frontend's registry

//  A registry with every series at 0. Returns NULL when out of memory.
imgp_metrics_t *imgp_metrics_new (void);

//  Free the registry. Safe on NULL and twice.
void imgp_metrics_destroy (imgp_metrics_t **self_p);

//  One request answered: counts imgpipe_http_requests_total{route,status}
//  (a status outside the table of codes we send counts as "other") and
//  observes imgpipe_http_request_duration_seconds{route}.
void imgp_metrics_request (imgp_metrics_t *self, imgp_route_t route, int status, double seconds);

//  One request refused: imgpipe_http_refusals_total{reason}.
void imgp_metrics_refusal (imgp_metrics_t *self, imgp_refusal_t reason);

//  Move a gauge by `delta` (+1 when a connection opens, -1 when it closes).
void imgp_metrics_gauge_add (imgp_metrics_t *self, imgp_gauge_t gauge, int64_t delta);

//  One broker call's round trip: imgpipe_broker_roundtrip_seconds.
void imgp_metrics_roundtrip (imgp_metrics_t *self, double seconds);

//  Upload bytes received: imgpipe_http_upload_bytes_total.
void imgp_metrics_upload_bytes (imgp_metrics_t *self, uint64_t bytes);

//  Append every family of the registry to `out` (GET /metrics then adds
//  the broker's families to the same writer).
void imgp_metrics_write (imgp_metrics_t *self, imgp_metrics_out_t *out);

//  --------------------------------------------------------------------------
//  The writer

//  An empty text. Returns NULL when out of memory.
imgp_metrics_out_t *imgp_metrics_out_new (void);

//  Free the text unread. Safe on NULL and twice.
void imgp_metrics_out_destroy (imgp_metrics_out_t **self_p);

//  One family with a single unlabelled sample:
//      # HELP imgpipe_NAME HELP
//      # TYPE imgpipe_NAME counter|gauge
//      imgpipe_NAME VALUE
//  `name` without the prefix, [a-z0-9_] (a counter's ends in _total).
void imgp_metrics_out_scalar (imgp_metrics_out_t *self, const char *name, imgp_metric_type_t type,
                              const char *help, double value);

//  One histogram family without labels, from `size` ascending upper
//  bounds and `size + 1` per-bucket counts (not cumulative; the last is
//  the count above the largest bound), and the sum of the observations.
//  Writes the cumulative _bucket lines with le="+Inf", then _sum, _count.
void imgp_metrics_out_histogram (imgp_metrics_out_t *self, const char *name, const char *help,
                                 const double *bounds, const uint64_t *counts, size_t size,
                                 double sum);

//  Take the text (the caller frees it) and destroy the writer. NULL when
//  any append ran out of memory.
char *imgp_metrics_out_text (imgp_metrics_out_t **self_p);

#endif
