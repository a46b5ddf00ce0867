/*  fuzz_frames — the byte framing that turns one libFuzzer input into the
    frames of one ZeroMQ message, and back (for the seed generator).

    Why: imgp_msg_decode takes a multi-frame zmsg, libFuzzer hands us one
    flat buffer. The framing is the simplest one that lets the fuzzer reach
    every frame count: a frame is a 2-byte big-endian length L followed by
    L bytes, fewer when the input ends first. So a length of 0xFFFF means
    "to the end of the input", which is how the seeds write their last
    frame: mutations that grow or shrink it keep the framing intact.

    Never: reject an input. Every byte string maps to some message (zero
    frames included); what is not a valid message is the decoder's to find.
*/
#ifndef FUZZ_FRAMES_H_INCLUDED
#define FUZZ_FRAMES_H_INCLUDED

#include <czmq.h>
#include <stddef.h>
#include <stdint.h>

//  More frames than the codec allows (2), so the frame-count check is hit;
//  bytes after the last of these frames, or a lone trailing byte, are ignored.
#define FUZZ_FRAMES_MAX 4

//  Split `size` bytes of `data` into a new zmsg (the caller's). Never NULL.
zmsg_t *fuzz_frames_split (const uint8_t *data, size_t size);

//  Write the frames of `zmsg` to `path` in that framing, the last frame's
//  length as 0xFFFF. Returns 0, or -1 when a non-last frame is over 65535
//  bytes or the file cannot be written.
int fuzz_frames_write (zmsg_t *zmsg, const char *path);

#endif
