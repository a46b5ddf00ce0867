/*  fuzz_magic — libFuzzer target for imgp_magic_read/imgp_magic_check, the
    check the broker runs on a resizer's thumbnail bytes before storing them.

    Why: those bytes come from a peer on the network; a read past the end
    here is an overflow in the broker. The input is one byte choosing the
    format (its value modulo 4, as imgp_format_t), then the image bytes, in
    an exact-size heap copy so ASan sees any read past them. The promises
    checked: a refusal has a reason; an accepted image has dimensions in
    1..INT_MAX, passes imgp_magic_check with them and fails it with others.

    Never: keep state across inputs.
*/
#include "imgp_magic.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    imgp_format_t format = (imgp_format_t) (data [0] % 4);
    size_t length = size - 1;
    uint8_t *copy = malloc (length ? length : 1);
    if (!copy)
        return 0;
    memcpy (copy, data + 1, length);
    const char *reason = NULL;
    int w = 0, h = 0;
    int rc = imgp_magic_read (copy, length, format, &w, &h, &reason);
    if (rc != 0 && !(reason && *reason)) {
        fprintf (stderr, "fuzz_magic: refused without a reason\n");
        abort ();
    }
    if (rc == 0 && (w < 1 || h < 1 || imgp_magic_check (copy, length, format, w, h, NULL) != 0
                    || imgp_magic_check (copy, length, format, w, h == INT_MAX ? 1 : h + 1,
                                         NULL) == 0)) {
        fprintf (stderr, "fuzz_magic: read %dx%d as %s, check disagrees\n", w, h,
                 imgp_format_name (format));
        abort ();
    }
    free (copy);
    return 0;
}
