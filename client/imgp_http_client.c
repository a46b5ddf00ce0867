/*  imgp_http_client — see imgp_http_client.h.

    One connection per request: connect, send the head and the body, wait
    for the response head with a timeout, copy the headers we keep (the
    civetweb connection and its header strings die with the request), then
    read the body into one growing buffer bounded by max_body.
    Only plain http: civetweb's client does not verify server certificates,
    so offering https here would look safer than it is.
*/
#include "imgp_http_client.h"

#include <assert.h>
#include <civetweb.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_HOST_MAX 256
#define S_PREFIX_MAX 512
#define S_READ_CHUNK 65536

typedef struct {
    char *name;                     //  header name as the server sent it
    char *value;                    //  header value
} s_header_t;

struct _imgp_http_client_t {
    char host [S_HOST_MAX];         //  server host name or IPv4 address
    int port;                       //  server TCP port
    char prefix [S_PREFIX_MAX];     //  path prefix from the URL, no trailing '/'
    int timeout_ms;                 //  wait for the response head
    size_t max_body;                //  largest response body accepted
    int status;                     //  last response status, 0 when none
    s_header_t headers [MG_MAX_HEADERS];  //  last response headers (owned)
    int header_count;               //  entries used in headers
    char *body;                     //  last response body + NUL (owned)
    size_t body_size;               //  bytes in body, NUL not counted
    char error [256];               //  last transport error
    bool connected;                 //  the last request got a connection
};

static void
s_reset (imgp_http_client_t *self)
{
    for (int i = 0; i < self->header_count; i++) {
        free (self->headers [i].name);
        free (self->headers [i].value);
    }
    self->header_count = 0;
    free (self->body);
    self->body = NULL;
    self->body_size = 0;
    self->status = 0;
    self->error [0] = 0;
    self->connected = false;
}

static int
s_fail (imgp_http_client_t *self, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    vsnprintf (self->error, sizeof self->error, format, args);
    va_end (args);
    return -1;
}

//  Split "http://host[:port][/prefix]" into the client. Returns 0 or -1
//  with a message in `error`.
static int
s_parse_url (imgp_http_client_t *self, const char *url, char *error, size_t error_size)
{
    const char *scheme = "http://";
    if (!url || strncasecmp (url, scheme, strlen (scheme)) != 0) {
        snprintf (error, error_size, "URL '%s' must start with http://", url ? url : "");
        return -1;
    }
    const char *host = url + strlen (scheme);
    size_t host_len = strcspn (host, ":/?#");
    if (host_len == 0 || host_len >= sizeof self->host) {
        snprintf (error, error_size, "URL '%s' has no usable host name", url);
        return -1;
    }
    memcpy (self->host, host, host_len);
    self->host [host_len] = 0;

    const char *rest = host + host_len;
    self->port = 80;
    if (*rest == ':') {
        char *end = NULL;
        errno = 0;
        long port = strtol (rest + 1, &end, 10);
        if (end == rest + 1 || errno || port < 1 || port > 65535 || (*end && *end != '/')) {
            snprintf (error, error_size, "URL '%s' has a bad port (1..65535)", url);
            return -1;
        }
        self->port = (int) port;
        rest = end;
    }
    if (*rest && *rest != '/') {
        snprintf (error, error_size, "URL '%s' may not hold a query or fragment", url);
        return -1;
    }
    size_t prefix_len = strlen (rest);
    while (prefix_len > 0 && rest [prefix_len - 1] == '/')
        prefix_len--;
    if (prefix_len >= sizeof self->prefix || strcspn (rest, "?# \t\r\n") < strlen (rest)) {
        snprintf (error, error_size, "URL '%s' has an unusable path", url);
        return -1;
    }
    memcpy (self->prefix, rest, prefix_len);
    self->prefix [prefix_len] = 0;
    return 0;
}

imgp_http_client_t *
imgp_http_client_new (const char *url, char *error, size_t error_size)
{
    assert (error && error_size > 0);
    imgp_http_client_t *self = calloc (1, sizeof *self);
    if (!self) {
        snprintf (error, error_size, "out of memory");
        return NULL;
    }
    if (s_parse_url (self, url, error, error_size) != 0) {
        free (self);
        return NULL;
    }
    self->timeout_ms = 30000;
    self->max_body = (size_t) 64 * 1024 * 1024;
    //  Reference-counted inside civetweb; paired with mg_exit_library in
    //  destroy.
    mg_init_library (0);
    return self;
}

void
imgp_http_client_destroy (imgp_http_client_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        s_reset (*self_p);
        free (*self_p);
        *self_p = NULL;
        mg_exit_library ();
    }
}

void
imgp_http_client_set_timeout (imgp_http_client_t *self, int timeout_ms)
{
    assert (self);
    self->timeout_ms = timeout_ms;
}

void
imgp_http_client_set_max_body (imgp_http_client_t *self, size_t max_body)
{
    assert (self);
    self->max_body = max_body;
}

//  Write the request line, headers and body. Returns 0 or -1.
static int
s_send (imgp_http_client_t *self, struct mg_connection *conn, const char *method,
        const char *path, const char *content_type, const void *body, size_t body_size)
{
    int rc = mg_printf (conn,
        "%s %s%s HTTP/1.1\r\n"
        "Host: %s:%d\r\n"
        "User-Agent: imgpipe/" IMGP_VERSION "\r\n"
        "Accept: */*\r\n"
        "Connection: close\r\n",
        method, self->prefix, path, self->host, self->port);
    if (rc > 0 && (body || content_type))
        rc = mg_printf (conn, "Content-Type: %s\r\nContent-Length: %zu\r\n",
                        content_type ? content_type : "application/octet-stream", body_size);
    if (rc > 0)
        rc = mg_printf (conn, "\r\n");
    if (rc <= 0)
        return s_fail (self, "cannot send the request to %s:%d", self->host, self->port);
    //  A server may answer early (413, 415) and close before reading the
    //  whole body; the response is still worth reading, so a short write
    //  is not an error here: mg_get_response tells.
    if (body && body_size > 0)
        mg_write (conn, body, body_size);
    return 0;
}

//  Keep copies of the response headers; civetweb's strings die with conn.
static int
s_keep_headers (imgp_http_client_t *self, const struct mg_response_info *info)
{
    for (int i = 0; i < info->num_headers && i < MG_MAX_HEADERS; i++) {
        const char *name = info->http_headers [i].name;
        const char *value = info->http_headers [i].value;
        s_header_t *h = &self->headers [self->header_count];
        h->name = strdup (name ? name : "");
        h->value = strdup (value ? value : "");
        self->header_count++;
        if (!h->name || !h->value)
            return s_fail (self, "out of memory");
    }
    return 0;
}

//  Read the body into self->body, never more than max_body bytes: the
//  buffer grows to at most max_body + 2 so one byte too many is seen.
static int
s_read_body (imgp_http_client_t *self, struct mg_connection *conn, long long length)
{
    if (length >= 0 && (unsigned long long) length > self->max_body)
        return s_fail (self, "response body of %lld bytes is over the limit of %zu",
                       length, self->max_body);
    size_t capacity = length >= 0 ? (size_t) length + 2 : S_READ_CHUNK;
    self->body = malloc (capacity);
    if (!self->body)
        return s_fail (self, "out of memory");
    while (true) {
        if (capacity - self->body_size < 2) {
            size_t bigger = capacity * 2 < self->max_body + 2 ? capacity * 2
                                                              : self->max_body + 2;
            char *grown = realloc (self->body, bigger);
            if (!grown)
                return s_fail (self, "out of memory");
            self->body = grown;
            capacity = bigger;
        }
        int n = mg_read (conn, self->body + self->body_size,
                         capacity - 1 - self->body_size);
        if (n < 0)
            return s_fail (self, "connection to %s:%d broke while reading the response",
                           self->host, self->port);
        if (n == 0)
            break;
        self->body_size += (size_t) n;
        if (self->body_size > self->max_body)
            return s_fail (self, "response body is over the limit of %zu bytes",
                           self->max_body);
    }
    if (length >= 0 && self->body_size != (size_t) length)
        return s_fail (self, "response body cut short: %zu of %lld bytes",
                       self->body_size, length);
    self->body [self->body_size] = 0;
    return 0;
}

//  The exchange on an open connection: send, wait for the head, keep it,
//  read the body. Returns 0 or -1 (error set).
static int
s_exchange (imgp_http_client_t *self, struct mg_connection *conn, const char *method,
            const char *path, const char *content_type, const void *body, size_t body_size)
{
    if (s_send (self, conn, method, path, content_type, body, body_size) != 0)
        return -1;
    char ebuf [256] = "";
    if (mg_get_response (conn, ebuf, sizeof ebuf, self->timeout_ms) < 0)
        return s_fail (self, "no response from %s:%d within %d ms: %s", self->host,
                       self->port, self->timeout_ms, ebuf [0] ? ebuf : "timeout");
    const struct mg_response_info *info = mg_get_response_info (conn);
    if (!info)
        return s_fail (self, "malformed response from %s:%d", self->host, self->port);
    if (s_keep_headers (self, info) != 0 || s_read_body (self, conn, info->content_length) != 0)
        return -1;
    self->status = info->status_code;
    return 0;
}

int
imgp_http_client_request (imgp_http_client_t *self, const char *method, const char *path,
                          const char *content_type, const void *body, size_t body_size)
{
    assert (self && method && path && path [0] == '/');
    s_reset (self);
    char ebuf [256] = "";
    struct mg_connection *conn = mg_connect_client (self->host, self->port, 0,
                                                    ebuf, sizeof ebuf);
    if (!conn)
        return s_fail (self, "cannot connect to %s:%d: %s", self->host, self->port,
                       ebuf [0] ? ebuf : "connection failed");
    self->connected = true;
    int rc = s_exchange (self, conn, method, path, content_type, body, body_size);
    mg_close_connection (conn);
    if (rc != 0) {
        //  No half response survives a failure; the error text does.
        char keep [sizeof self->error];
        memcpy (keep, self->error, sizeof keep);
        s_reset (self);
        memcpy (self->error, keep, sizeof keep);
        self->connected = true;
    }
    return rc;
}

int
imgp_http_client_status (imgp_http_client_t *self)
{
    assert (self);
    return self->status;
}

const char *
imgp_http_client_header (imgp_http_client_t *self, const char *name)
{
    assert (self && name);
    for (int i = 0; i < self->header_count; i++)
        if (strcasecmp (self->headers [i].name, name) == 0)
            return self->headers [i].value;
    return NULL;
}

const char *
imgp_http_client_body (imgp_http_client_t *self, size_t *size)
{
    assert (self);
    if (size)
        *size = self->body_size;
    return self->body;
}

const char *
imgp_http_client_error (imgp_http_client_t *self)
{
    assert (self);
    return self->error;
}

bool
imgp_http_client_connected (imgp_http_client_t *self)
{
    assert (self);
    return self->connected;
}

void
imgp_http_client_test (bool verbose)
{
    char error [256];
    const char *bad [] = { "ftp://x", "http://", "http://h:0", "http://h:99999",
                           "http://h:80x", "http://h?q=1", "https://h", NULL };
    for (int i = 0; bad [i]; i++) {
        imgp_http_client_t *c = imgp_http_client_new (bad [i], error, sizeof error);
        assert (c == NULL);
        if (verbose)
            printf ("  %s -> %s\n", bad [i], error);
    }
    imgp_http_client_t *c = imgp_http_client_new ("http://127.0.0.1:1/api/", error,
                                                  sizeof error);
    assert (c);
    assert (c->port == 1 && strcmp (c->prefix, "/api") == 0);
    assert (strcmp (c->host, "127.0.0.1") == 0);
    //  Port 1 on loopback refuses: a transport error, not a status.
    int rc = imgp_http_client_request (c, "GET", "/healthz", NULL, NULL, 0);
    assert (rc == -1);
    (void) rc;
    assert (imgp_http_client_status (c) == 0);
    assert (*imgp_http_client_error (c));
    assert (!imgp_http_client_connected (c));
    imgp_http_client_destroy (&c);
    imgp_http_client_destroy (&c);
    assert (c == NULL);
}
