# tests/bench/dispatch.awk — from a broker log, how long each job waited
# for its start, and how much of that wait some resizer slot stood free.
#
# Input: the broker's stderr at INFO level (lines "TIMESTAMP PROGRAM LEVEL
# key=value..."). Read by key, not position, so new keys and events (READY,
# CLUSTER...) pass through; the events used are
#   worker=W event=joined|ready [slots=S]   a resizer is there, S slots (1 if not said)
#   worker=W event=lost|left|gone           it is gone
#   job=J event=accepted                    the wait starts
#   job=J event=started worker=W            the wait ends; W has one slot less
#   job=J event=done|failed|requeued|result_refused   J's slot is free again
# A slot is free from its job's end (or its resizer's join) until the next
# STARTED on it, as the broker sees them. "idle wait" is the part of
# [accepted, first started] during which at least one slot was free: the
# time a job waited that fair dispatch could have saved. (Wait and free
# time both include the JOB's and the STARTED's trip through the sockets,
# so even a perfect dispatcher shows a few ms.)
#
# Variables: skip=N ignores jobs accepted on the first N lines (a warm-up;
# workers and slots are still followed there).
# Output, one line per job that started:  J idle_ms wait_ms worker bytes
# and at the end lines "# key value" with counts (see dispatch.sh).

function seconds(stamp,    day, h, m, s) {
    # 2026-12-06T06:12:49.123Z; days counted only as changes of the date
    day = substr(stamp, 1, 10)
    if (day != last_day) {
        if (last_day != "")
            day_offset += 86400
        last_day = day
    }
    h = substr(stamp, 12, 2) + 0
    m = substr(stamp, 15, 2) + 0
    s = substr(stamp, 18, 6) + 0
    return day_offset + h * 3600 + m * 60 + s
}

function value(key,    i) {
    for (i = 2; i <= NF; i++)
        if (index($i, key "=") == 1)
            return substr($i, length(key) + 2)
    return ""
}

function is_free(w) {
    return (w in slots) && busy[w] < slots[w]
}

# Change W's busy count by DELTA (or add it), keeping free_workers right.
function move(w, delta) {
    if (!(w in slots)) {
        slots[w] = 1
        busy[w] = 0
        free_workers++
    }
    if (is_free(w))
        free_workers--
    busy[w] += delta
    if (busy[w] < 0)
        busy[w] = 0
    if (is_free(w))
        free_workers++
}

function release(j) {
    if (j in held_by) {
        if (held_by[j] in slots)
            move(held_by[j], -1)
        delete held_by[j]
    }
}

$1 ~ /^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T/ {
    t = seconds($1)
    if (started_clock == "")
        last_t = t
    started_clock = 1
    # The free-slot clock runs while any slot is free, up to this event.
    if (free_workers > 0 && t > last_t)
        free_time += t - last_t
    if (t > last_t)
        last_t = t

    event = value("event")
    job = value("job")
    worker = value("worker")

    if (job == "" && worker != "") {
        if (event == "joined" || event == "ready") {
            n = value("slots") + 0
            move(worker, 0)
            if (is_free(worker))
                free_workers--
            slots[worker] = n > 0 ? n : 1
            if (is_free(worker))
                free_workers++
        } else if (event == "lost" || event == "left" || event == "gone") {
            if (is_free(worker))
                free_workers--
            delete slots[worker]
            delete busy[worker]
        }
        next
    }
    if (job == "")
        next

    if (event == "accepted" && NR > skip) {
        accepted_at[job] = t
        size_of[job] = value("bytes") + 0
        free_at_accept[job] = free_time
        accepted++
    } else if (event == "started" && worker != "") {
        release(job)                    # an earlier attempt's slot, if still held
        if ((job in accepted_at) && !(job in first_start)) {
            first_start[job] = t
            printf "%s %.0f %.0f %s %d\n", job, (free_time - free_at_accept[job]) * 1000,
                (t - accepted_at[job]) * 1000, worker, size_of[job]
        }
        move(worker, 1)
        held_by[job] = worker
        ran_on[job] = worker
    } else if (event == "done" || event == "failed") {
        release(job)
        if (job in accepted_at) {
            ended[event]++
            w = value("worker") != "" ? value("worker") : ran_on[job]
            if (event == "done")
                done_by[w]++
        }
    } else if (event == "requeued" || event == "result_refused") {
        release(job)
        if (job in accepted_at)
            ended[event]++
    }
}

END {
    printf "# accepted %d\n", accepted
    printf "# done %d\n# failed %d\n# requeued %d\n# result_refused %d\n", ended["done"],
        ended["failed"], ended["requeued"], ended["result_refused"]
    for (w in done_by)
        printf "# worker %s %d\n", w, done_by[w]
}
