/*  imgp_static — the files of http-frontend/static/ (the upload page,
    the OpenAPI document), built into the frontend and served from memory.

    Why: `GET /` and `GET /v1/openapi.json` must work from any frontend on
    any host with nothing beside the binary: no document root to install,
    no path from a request ever reaching the file system. meson runs
    imgp_static_embed.py over the files at build time; the generated
    table holds each file's bytes, Content-Type and entity tag (the SHA-1
    of its bytes; imgp_reply_cache makes the ETag header of it).

    Responses carry the ETag and `Cache-Control: no-cache`: a browser keeps
    its copy but asks each time, and a frontend upgraded with a new page
    answers with the new one, an unchanged one with 304.

    Never: serve a path that is not listed in imgp_static.c (s_served):
    no directory listing, no lookup by a name taken from the request.
*/
#ifndef IMGP_STATIC_H_INCLUDED
#define IMGP_STATIC_H_INCLUDED

#include <stddef.h>

#include "imgp_reply.h"

//  One embedded file. Everything is static data of the program.
typedef struct {
    const char *name;           //  base name under static/, "index.html"
    const char *type;           //  Content-Type
    const unsigned char *data;  //  its bytes
    size_t size;                //  number of bytes
    const char *etag;           //  SHA-1 of the bytes, lowercase hex, unquoted
} imgp_static_file_t;

//  Every embedded file, ending with an entry whose name is NULL
//  (generated: imgp_static_files.c in the build directory).
extern const imgp_static_file_t imgp_static_files [];

//  The file served at request path `path` ("/" is index.html), or NULL
//  when that path serves none. Borrowed, static.
const imgp_static_file_t *imgp_static_find (const char *path);

//  Answer with `file`: 200 with its ETag and Cache-Control: no-cache (a
//  HEAD gets the head only), or 304 when If-None-Match names its ETag.
void imgp_static_send (imgp_reply_t *reply, const imgp_static_file_t *file);

#endif
