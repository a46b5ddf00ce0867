/*  fuzz_frames — see fuzz_frames.h. Test-only code.
*/
#include "fuzz_frames.h"

#include <stdio.h>

#define S_LEN_TO_END 0xFFFF

zmsg_t *
fuzz_frames_split (const uint8_t *data, size_t size)
{
    zmsg_t *zmsg = zmsg_new ();
    size_t at = 0;
    for (int frames = 0; frames < FUZZ_FRAMES_MAX && size - at >= 2; frames++) {
        size_t len = (size_t) data [at] << 8 | data [at + 1];
        at += 2;
        if (len > size - at)
            len = size - at;
        zmsg_addmem (zmsg, data + at, len);
        at += len;
    }
    return zmsg;
}

int
fuzz_frames_write (zmsg_t *zmsg, const char *path)
{
    FILE *file = fopen (path, "wb");
    if (!file)
        return -1;
    int rc = 0;
    size_t left = zmsg_size (zmsg);
    for (zframe_t *frame = zmsg_first (zmsg); frame && rc == 0; frame = zmsg_next (zmsg)) {
        size_t len = zframe_size (frame);
        size_t mark = --left == 0 ? S_LEN_TO_END : len;
        if (mark > S_LEN_TO_END)
            rc = -1;
        else {
            uint8_t prefix [2] = { (uint8_t) (mark >> 8), (uint8_t) mark };
            if (fwrite (prefix, 1, 2, file) != 2 || fwrite (zframe_data (frame), 1, len, file) != len)
                rc = -1;
        }
    }
    if (fclose (file) != 0)
        rc = -1;
    return rc;
}
