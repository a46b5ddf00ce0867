/*  imgp_reply — see imgp_reply.h. */
#include "imgp_reply.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "imgp_msg.h"

//  True when the request may have body bytes we did not read: then the
//  connection cannot carry another request.
static bool
s_body_pending (imgp_reply_t *self)
{
    if (self->body_read)
        return false;
    long long length = mg_get_request_info (self->conn)->content_length;
    if (length > 0 || mg_get_header (self->conn, "Transfer-Encoding"))
        return true;
    //  A POST without a length: whatever follows is not a request.
    return length < 0 && strcmp (self->method, "POST") == 0;
}

//  True when the comma-separated header `value` lists `token`, in any case.
static bool
s_has_token (const char *value, const char *token)
{
    size_t len = strlen (token);
    while (*value) {
        value += strspn (value, " \t,");
        size_t n = strcspn (value, ",");
        size_t end = n;
        while (end > 0 && (value [end - 1] == ' ' || value [end - 1] == '\t'))
            end--;
        if (end == len && strncasecmp (value, token, len) == 0)
            return true;
        value += n;
    }
    return false;
}

//  True when the connection must close after this response: a request
//  civetweb could not parse, or body bytes still unread.
static bool
s_must_close (imgp_reply_t *self)
{
    return self->must_close || s_body_pending (self);
}

//  Keep-alive as civetweb 1.15 will act after the handler
//  (should_keep_alive: the client's Connection header, else keep-alive
//  for HTTP/1.1 only), for the Connection header of a response.
static bool
s_keep_alive (imgp_reply_t *self)
{
    const char *asked = mg_get_header (self->conn, "Connection");
    const char *version = mg_get_request_info (self->conn)->http_version;
    return asked ? s_has_token (asked, "keep-alive") : version && strcmp (version, "1.1") == 0;
}

//  Skip optional whitespace and empty list elements (RFC 9110 5.6.1).
static const char *
s_list_skip (const char *text)
{
    return text + strspn (text, " \t,");
}

bool
imgp_reply_etag_match (const char *field, const char *etag)
{
    assert (field && etag);
    //  The opaque-tag of ours: the weak comparison ignores W/.
    const char *ours = strncmp (etag, "W/", 2) == 0 ? etag + 2 : etag;
    size_t ours_len = strlen (ours);
    for (const char *at = s_list_skip (field); *at; at = s_list_skip (at)) {
        if (*at == '*')
            return true;        //  we have a current representation
        if (strncmp (at, "W/", 2) == 0)
            at += 2;
        //  entity-tag = [ W/ ] DQUOTE *etagc DQUOTE; etagc excludes DQUOTE
        //  (a comma inside the quotes is part of the tag).
        const char *close = *at == '"' ? strchr (at + 1, '"') : NULL;
        if (!close)
            return false;       //  malformed: match nothing
        size_t len = (size_t) (close - at) + 1;
        if (ours_len && len == ours_len && memcmp (at, ours, len) == 0)
            return true;
        at = close + 1;
        at += strspn (at, " \t");
        if (*at && *at != ',')
            return false;       //  junk after a tag
    }
    return false;
}

void
imgp_reply_cache (imgp_reply_t *self, const char *etag, int max_age_s)
{
    assert (self && etag);
    self->cacheable = true;
    if (*etag && strlen (etag) + 3 <= sizeof self->etag)
        snprintf (self->etag, sizeof self->etag, "\"%s\"", etag);
    else
        self->etag [0] = '\0';
    if (max_age_s >= 0)
        snprintf (self->cache_control, sizeof self->cache_control,
                  "public, max-age=%d, immutable", max_age_s);
    else
        snprintf (self->cache_control, sizeof self->cache_control, "no-cache");
}

//  True when a 200 about to be sent answers a conditional GET or HEAD whose
//  If-None-Match matches the representation's tag: then it is a 304. Every
//  If-None-Match line counts (a list may be split over several lines).
static bool
s_not_modified (imgp_reply_t *self, int status)
{
    if (status != 200 || !self->cacheable
    ||  (strcmp (self->method, "GET") != 0 && strcmp (self->method, "HEAD") != 0))
        return false;
    const struct mg_request_info *info = mg_get_request_info (self->conn);
    for (int i = 0; i < info->num_headers; i++)
        if (strcasecmp (info->http_headers [i].name, "If-None-Match") == 0
        &&  info->http_headers [i].value
        &&  imgp_reply_etag_match (info->http_headers [i].value, self->etag))
            return true;
    return false;
}

//  A response head, with room for a small body after it, so most
//  responses leave in one write.
typedef struct {
    char text [4096];           //  head, then maybe the body
    size_t size;                //  bytes used
} s_head_t;

static void
s_head_add (s_head_t *head, const char *format, ...) __attribute__ ((format (printf, 2, 3)));

static void
s_head_add (s_head_t *head, const char *format, ...)
{
    size_t room = sizeof head->text - head->size;
    va_list args;
    va_start (args, format);
    int n = vsnprintf (head->text + head->size, room, format, args);
    va_end (args);
    assert (n >= 0 && (size_t) n < room);   //  our own headers are short
    head->size += (size_t) n;
}

void
imgp_reply_send (imgp_reply_t *self, int status, const char *type, const void *body, size_t size)
{
    struct mg_connection *conn = self->conn;
    const char *version = mg_get_request_info (conn)->http_version;
    char date [64];
    time_t now = time (NULL);
    struct tm tm;
    strftime (date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", gmtime_r (&now, &tm));

    //  A 304 has no content: no Content-Type or Content-Length either
    //  (RFC 9110 15.4.5), but every header a 200 would have had for caches.
    bool not_modified = s_not_modified (self, status);
    if (not_modified) {
        status = 304;
        size = 0;
    }
    s_head_t head = { .size = 0 };
    //  HTTP/1.0 clients get 1.0; everyone else, even one that asked for
    //  HTTP/9.9, gets what we speak.
    bool v10 = version && strcmp (version, "1.0") == 0;
    s_head_add (&head, "HTTP/%s %d %s\r\nDate: %s\r\n", v10 ? "1.0" : "1.1", status,
                mg_get_response_code_text (conn, status), date);
    if (!not_modified)
        s_head_add (&head, "Content-Type: %s\r\nContent-Length: %zu\r\n", type, size);
    if (self->etag [0])
        s_head_add (&head, "ETag: %s\r\n", self->etag);
    if (self->cache_control [0])
        s_head_add (&head, "Cache-Control: %s\r\n", self->cache_control);
    if (self->vary)
        s_head_add (&head, "Vary: %s\r\n", self->vary);
    if (self->location [0])
        s_head_add (&head, "Location: %s\r\n", self->location);
    if (self->allow)
        s_head_add (&head, "Allow: %s\r\n", self->allow);
    if (self->retry_after > 0)
        s_head_add (&head, "Retry-After: %d\r\n", self->retry_after);
    if (self->authenticate)
        s_head_add (&head, "WWW-Authenticate: %s\r\n", self->authenticate);
    if (self->rate_headers)
        s_head_add (&head, "RateLimit-Limit: %lld\r\nRateLimit-Remaining: %lld\r\n"
                    "RateLimit-Reset: %lld\r\n", (long long) self->rate_limit,
                    (long long) self->rate_remaining, (long long) self->rate_reset);
    //  No client may guess a type other than the one we say.
    s_head_add (&head, "X-Content-Type-Options: nosniff\r\n");
    //  When the pool runs low, even a well-behaved keep-alive client gives
    //  its worker back after this response.
    bool close = s_must_close (self) || !s_keep_alive (self) || self->crowded;
    if (close)
        mg_disable_connection_keep_alive (conn);
    s_head_add (&head, "Connection: %s\r\n\r\n", close ? "close" : "keep-alive");
    //  A HEAD response says the length of the body it does not carry.
    if (strcmp (self->method, "HEAD") == 0)
        size = 0;
    else
    if (size && size <= sizeof head.text - head.size) {
        memcpy (head.text + head.size, body, size);
        head.size += size;
        size = 0;
    }
    mg_write (conn, head.text, head.size);
    if (size)
        mg_write (conn, body, size);
    self->status = status;
}

void
imgp_reply_json (imgp_reply_t *self, int status, json_t *body)
{
    char *text = body ? json_dumps (body, JSON_COMPACT) : NULL;
    json_decref (body);
    if (!text) {
        static const char oom [] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        imgp_reply_send (self, 500, "application/json", oom, strlen (oom));
        return;
    }
    imgp_reply_send (self, status, "application/json", text, strlen (text));
    free (text);
}

void
imgp_reply_error (imgp_reply_t *self, int status, const char *code, const char *format, ...)
{
    char message [IMGP_MESSAGE_MAX + 1];
    va_list args;
    va_start (args, format);
    vsnprintf (message, sizeof message, format, args);
    va_end (args);
    imgp_reply_json (self, status, json_pack ("{s:{s:s,s:s}}", "error", "code", code,
                                          "message", message));
}

