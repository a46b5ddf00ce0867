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

//  The next element of a comma-separated header list at *value: its
//  start, and its length without the spaces around it; *value moves past
//  it. Returns NULL when the list has no more. (Commas inside quoted
//  strings are not special: no element we look for holds one.)
static const char *
s_list_next (const char **value, size_t *len)
{
    const char *item = *value + strspn (*value, " \t,");
    if (!*item)
        return NULL;
    size_t n = strcspn (item, ",");
    *value = item + n;
    while (n > 0 && (item [n - 1] == ' ' || item [n - 1] == '\t'))
        n--;
    *len = n;
    return item;
}

//  True when the comma-separated header `value` lists `token`, in any case.
static bool
s_has_token (const char *value, const char *token)
{
    size_t len = strlen (token), n;
    for (const char *item; (item = s_list_next (&value, &n)); )
        if (n == len && strncasecmp (item, token, len) == 0)
            return true;
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

    s_head_t head = { .size = 0 };
    //  HTTP/1.0 clients get 1.0; everyone else, even one that asked for
    //  HTTP/9.9, gets what we speak.
    bool v10 = version && strcmp (version, "1.0") == 0;
    s_head_add (&head, "HTTP/%s %d %s\r\nDate: %s\r\n", v10 ? "1.0" : "1.1", status,
                mg_get_response_code_text (conn, status), date);
    s_head_add (&head, "Content-Type: %s\r\nContent-Length: %zu\r\n", type, size);
    if (self->location [0])
        s_head_add (&head, "Location: %s\r\n", self->location);
    if (self->allow)
        s_head_add (&head, "Allow: %s\r\n", self->allow);
    if (self->retry_after > 0)
        s_head_add (&head, "Retry-After: %d\r\n", self->retry_after);
    if (self->authenticate)
        s_head_add (&head, "WWW-Authenticate: %s\r\n", self->authenticate);
    if (self->etag)
        s_head_add (&head, "ETag: %s\r\n", self->etag);
    if (self->cache_control)
        s_head_add (&head, "Cache-Control: %s\r\n", self->cache_control);
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
    //  A HEAD or 304 response says the length of the body it does not carry.
    if (strcmp (self->method, "HEAD") == 0 || status == 304)
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

//  The opaque part of an entity tag: `tag` without a leading W/, into
//  *start and *len. Returns false when it is not a quoted tag.
static bool
s_opaque_tag (const char *tag, size_t size, const char **start, size_t *len)
{
    if (size >= 2 && tag [0] == 'W' && tag [1] == '/') {
        tag += 2;
        size -= 2;
    }
    if (size < 2 || tag [0] != '"' || tag [size - 1] != '"')
        return false;
    *start = tag;
    *len = size;
    return true;
}

bool
imgp_reply_not_modified (imgp_reply_t *self, const char *etag)
{
    assert (self && etag);
    const char *value = mg_get_header (self->conn, "If-None-Match");
    const char *want;
    size_t want_len;
    if (!value || !s_opaque_tag (etag, strlen (etag), &want, &want_len))
        return false;
    size_t n, len;
    for (const char *item, *tag; (item = s_list_next (&value, &n)); )
        if ((n == 1 && *item == '*')
        ||  (s_opaque_tag (item, n, &tag, &len) && len == want_len
             && memcmp (tag, want, len) == 0))
            return true;
    return false;
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

