/*  imgp_static — see imgp_static.h. */
#include "imgp_static.h"

#include <assert.h>
#include <string.h>

//  Which file each URL path serves: the only paths this module answers.
static const struct {
    const char *path;           //  request path
    const char *name;           //  file under static/
} s_served [] = {
    { "/", "index.html" },
    { "/v1/openapi.json", "openapi.json" },
};
#define S_SERVED (sizeof s_served / sizeof s_served [0])

const imgp_static_file_t *
imgp_static_find (const char *path)
{
    assert (path);
    for (size_t i = 0; i < S_SERVED; i++) {
        if (strcmp (path, s_served [i].path) != 0)
            continue;
        for (const imgp_static_file_t *file = imgp_static_files; file->name; file++)
            if (strcmp (file->name, s_served [i].name) == 0)
                return file;
    }
    return NULL;
}

void
imgp_static_send (imgp_reply_t *reply, const imgp_static_file_t *file)
{
    assert (reply && file);
    //  no-cache: kept, but asked for again each time (a 304 when unchanged).
    imgp_reply_cache (reply, file->etag, -1);
    imgp_reply_send (reply, 200, file->type, file->data, file->size);
}
