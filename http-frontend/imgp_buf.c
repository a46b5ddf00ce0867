/*  imgp_buf — see imgp_buf.h. The block is [header][bytes]; the header is
    padded to max_align_t so the bytes stay aligned for any use. The counter
    is atomic because libzmq frees from its I/O thread.
*/
#include "imgp_buf.h"

#include <assert.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>

typedef struct {
    alignas (max_align_t) atomic_int refs;  //  holders of the buffer
    size_t size;                            //  bytes after the header
} s_header_t;

static s_header_t *
s_header (void *buf)
{
    return (s_header_t *) ((char *) buf - sizeof (s_header_t));
}

uint8_t *
imgp_buf_new (size_t size)
{
    if (size > SIZE_MAX - sizeof (s_header_t))
        return NULL;
    s_header_t *header = malloc (sizeof (s_header_t) + size);
    if (!header)
        return NULL;
    atomic_init (&header->refs, 1);
    header->size = size;
    return (uint8_t *) header + sizeof (s_header_t);
}

int
imgp_buf_resize (uint8_t **buf_p, size_t size)
{
    assert (atomic_load (&s_header (*buf_p)->refs) == 1);
    if (size > SIZE_MAX - sizeof (s_header_t))
        return -1;
    uint8_t *block = realloc (s_header (*buf_p), sizeof (s_header_t) + size);
    if (!block)
        return -1;
    //  The block lives on through the pointer to its bytes.
    ((s_header_t *) block)->size = size;
    *buf_p = block + sizeof (s_header_t);
    return 0;   // cppcheck-suppress memleak
}

size_t
imgp_buf_size (const uint8_t *buf)
{
    return s_header ((void *) buf)->size;
}

uint8_t *
imgp_buf_ref (uint8_t *buf)
{
    atomic_fetch_add (&s_header (buf)->refs, 1);
    return buf;
}

void
imgp_buf_unref (void *buf, void *hint)
{
    (void) hint;
    if (!buf)
        return;
    s_header_t *header = s_header (buf);
    if (atomic_fetch_sub (&header->refs, 1) == 1)
        free (header);
}

void
imgp_buf_destroy (uint8_t **buf_p)
{
    if (buf_p && *buf_p) {
        imgp_buf_unref (*buf_p, NULL);
        *buf_p = NULL;
    }
}
