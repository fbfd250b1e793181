/* A separate process that appends through the C ABI, as a PHP worker does: used by
 * tests/daemon_process.rs (one append waking a waiting poll) and by lms-loadgen
 * (`--publish c`: appends at a given rate, each event carrying its sequence number and the
 * wall-clock time of the append in microseconds, so the receiver can measure latency).
 *
 * usage: publisher <db path> <channels> <count> <events per second, 0 = as fast as possible>
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lms_realtime.h"

static long long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static long long mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s <db> <channels> <count> <rate>\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    long channels = atol(argv[2]);
    long count = atol(argv[3]);
    double rate = atof(argv[4]);
    if (channels < 1 || count < 0) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    struct lmsrt_store *store = NULL;
    if (lmsrt_store_open(path, strlen(path), NULL, 0, &store) != LMSRT_STATUS_OK) {
        char msg[512];
        size_t n = 0;
        lmsrt_last_error_message(msg, sizeof msg, &n);
        fprintf(stderr, "open failed: %s\n", msg);
        return 1;
    }
    long long start = mono_ns();
    for (long i = 0; i < count; i++) {
        if (rate > 0) {
            long long due = start + (long long)((double)i * 1e9 / rate);
            long long now = mono_ns();
            if (due > now) {
                struct timespec d = {(time_t)((due - now) / 1000000000LL), (long)((due - now) % 1000000000LL)};
                nanosleep(&d, NULL);
            }
        }
        char data[96];
        int len = snprintf(data, sizeof data, "{\"seq\":%ld,\"t\":%lld}", i, now_us());
        int64_t id = 0;
        const char *type = "message_create";
        int32_t st = lmsrt_store_append(store, type, strlen(type), 0, 1 + i % channels, i + 1, 0, 0,
                                        data, (size_t)len, 0, NULL, 0, &id);
        if (st != LMSRT_STATUS_OK) {
            char msg[512];
            size_t n = 0;
            lmsrt_last_error_message(msg, sizeof msg, &n);
            fprintf(stderr, "append %ld failed (%d): %s\n", i, st, msg);
            lmsrt_store_close(&store);
            return 1;
        }
    }
    printf("published %ld\n", count);
    lmsrt_store_close(&store);
    return 0;
}
