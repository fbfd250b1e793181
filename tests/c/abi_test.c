/*
 * A C consumer of the lms-realtime ABI, compiled against the checked-in header
 * (include/lms_realtime.h) and the built cdylib. It calls every exported function (the event
 * store's and the guards': rate limiter, breakers, slots, rollout, metrics), on its success
 * path and on its error paths (NULL pointers, invalid UTF-8, oversized input, malformed JSON,
 * closed and stale handles, double close and double free), and checks that out-parameters
 * are written only on success. tests/c_abi.rs compiles and runs it, under valgrind when
 * available: it must finish with zero leaks and zero invalid accesses.
 *
 * Usage: abi_test <scratch directory>
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lms_realtime.h"

static int checks = 0;

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        checks++;                                                                           \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "%s:%d: check failed: %s\n  last error: %s\n", __FILE__,        \
                    __LINE__, #cond, last_error());                                         \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

#define EXPECT(call, status)                                                                \
    do {                                                                                    \
        lmsrt_status st_ = (call);                                                          \
        checks++;                                                                           \
        if (st_ != (status)) {                                                              \
            fprintf(stderr, "%s:%d: %s returned %d, expected %s (%d)\n  last error: %s\n",  \
                    __FILE__, __LINE__, #call, (int)st_, #status, (int)(status),            \
                    last_error());                                                          \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

#define OK(call) EXPECT(call, LMSRT_STATUS_OK)
#define S(lit) lit, sizeof(lit) - 1

static const char *last_error(void) {
    static char buf[1024];
    lmsrt_last_error_message(buf, sizeof buf, NULL);
    return buf;
}

/* Takes the text of a buffer (copied into a static) and frees the buffer. */
static const char *take(lmsrt_buf *b) {
    static char text[1 << 16];
    CHECK(b->ptr != NULL);
    CHECK(b->ptr[b->len] == '\0');
    CHECK(b->len < sizeof text);
    memcpy(text, b->ptr, b->len + 1);
    lmsrt_buf_free(b);
    CHECK(b->ptr == NULL && b->len == 0);
    return text;
}

static size_t count(const char *haystack, const char *needle) {
    size_t n = 0;
    for (const char *p = strstr(haystack, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

static int64_t append_simple(lmsrt_store *s, int64_t channel, int64_t ttl_ms) {
    int64_t id = 0;
    OK(lmsrt_store_append(s, S("badge_update"), 0, channel, 0, 0, 1, NULL, 0, ttl_ms, NULL, 0,
                          &id));
    return id;
}

static lmsrt_store *open_store(const char *dir, const char *name, const char *options) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    lmsrt_store *s = NULL;
    OK(lmsrt_store_open(path, strlen(path), options, options ? strlen(options) : 0, &s));
    CHECK(s != NULL);
    return s;
}

static void test_versions(void) {
    CHECK(lmsrt_abi_version() == LMSRT_ABI_VERSION);
    const char *v = lmsrt_version();
    CHECK(v != NULL && strlen(v) >= 5 && strchr(v, '.') != NULL);
}

static void test_last_error(void) {
    lmsrt_store *s = (lmsrt_store *)0x1;
    EXPECT(lmsrt_store_open(NULL, 0, NULL, 0, &s), LMSRT_STATUS_NULL_POINTER);
    CHECK(s == (lmsrt_store *)0x1); /* untouched on failure */
    char small[4];
    size_t n = 99;
    size_t total = lmsrt_last_error_message(small, sizeof small, &n);
    CHECK(total > 3 && n == 3 && small[3] == '\0');
    CHECK(strcmp(small, "pat") == 0); /* "path is NULL" */
    CHECK(lmsrt_last_error_message(NULL, 0, &n) == total && n == 0);
    char full[128];
    CHECK(lmsrt_last_error_message(full, sizeof full, &n) == total && n == total);
    CHECK(strcmp(full, "path is NULL") == 0);
    /* A success clears it. */
    CHECK(lmsrt_abi_version() == LMSRT_ABI_VERSION);
    lmsrt_buf b = {NULL, 0};
    lmsrt_buf_free(&b);
    CHECK(total == lmsrt_last_error_message(NULL, 0, NULL)); /* infallible calls keep it */
}

static void test_open_errors(const char *dir) {
    lmsrt_store *s = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/errors.db", dir);
    EXPECT(lmsrt_store_open(path, strlen(path), NULL, 0, NULL), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_store_open(S("\xff\xfe.db"), NULL, 0, &s), LMSRT_STATUS_INVALID_UTF8);
    EXPECT(lmsrt_store_open(S("a\0b.db"), NULL, 0, &s), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_store_open(path, 0, NULL, 0, &s), LMSRT_STATUS_INVALID_ARGUMENT);
    char *huge = malloc(5000);
    memset(huge, 'a', 5000);
    EXPECT(lmsrt_store_open(huge, 5000, NULL, 0, &s), LMSRT_STATUS_INVALID_ARGUMENT);
    free(huge);
    EXPECT(lmsrt_store_open(path, strlen(path), S("{"), &s), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_store_open(path, strlen(path), S("{\"max_dat_bytes\":1}"), &s),
           LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_store_open(path, strlen(path), S("{\"durability\":\"maybe\"}"), &s),
           LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_store_open(path, strlen(path), S("{\"min_ttl_ms\":5000,\"default_ttl_ms\":10}"),
                            &s),
           LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_store_open(S("/nonexistent-dir/x/y.db"), NULL, 0, &s), LMSRT_STATUS_IO);
    /* NULL options with a length are not "no options". */
    EXPECT(lmsrt_store_open(path, strlen(path), NULL, 5, &s), LMSRT_STATUS_NULL_POINTER);
    /* Out-of-range options: refused, naming the option and its range. */
    const struct {
        const char *options;
        const char *names;
    } ranges[] = {
        {"{\"max_data_bytes\":1000000000000000000}", "max_data_bytes must be 1 to 16777216"},
        {"{\"max_data_bytes\":0}", "max_data_bytes must be 1 to"},
        {"{\"live_tail_window\":-5}", "live_tail_window must be 0 to 9223372036854775807, not -5"},
        {"{\"purge_chunk\":0}", "purge_chunk must be 1 to 100000"},
        {"{\"max_ttl_ms\":18446744073709551615}", "max_ttl (ms) must be 1 to"},
        {"{\"min_ttl_ms\":0}", "min_ttl (ms) must be 1 to"},
        {"{\"purge_interval_ms\":1}", "purge_interval (ms) must be 10 to 86400000"},
    };
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
        EXPECT(lmsrt_store_open(path, strlen(path), ranges[i].options, strlen(ranges[i].options),
                                &s),
               LMSRT_STATUS_INVALID_ARGUMENT);
        CHECK(strstr(last_error(), ranges[i].names) != NULL);
    }
    CHECK(s == NULL);
}

static void test_append(lmsrt_store *s) {
    int64_t id = -7, id2 = 0;
    OK(lmsrt_store_append(s, S("message_create"), 0, 7, 42, 9, 3, S("{\"text\":\"h\xc3\xa9\"}"),
                          0, NULL, 0, &id));
    CHECK(id > 0);
    OK(lmsrt_store_append(s, S("reaction_update"), 4, 7, 42, 0, 3, NULL, 0, 60000, NULL, 0,
                          &id2));
    CHECK(id2 > id);
    /* Idempotency: the same key returns the same id. */
    int64_t k1 = 0, k2 = 0;
    OK(lmsrt_store_append(s, S("message_create"), 0, 8, 1, 0, 1, NULL, 0, 0, S("msg-1"), &k1));
    OK(lmsrt_store_append(s, S("message_create"), 0, 8, 1, 0, 1, NULL, 0, 0, S("msg-1"), &k2));
    CHECK(k1 == k2);
    EXPECT(lmsrt_store_append(s, S("message_delete"), 0, 8, 1, 0, 1, NULL, 0, 0, S("msg-1"), &k2),
           LMSRT_STATUS_IDEMPOTENCY_CONFLICT);

    /* Error paths; *out_id stays untouched. */
    id = -7;
    EXPECT(lmsrt_store_append(NULL, S("a"), 0, 1, 0, 0, 0, NULL, 0, 0, NULL, 0, &id),
           LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_store_append(s, S("a"), 0, 1, 0, 0, 0, NULL, 0, 0, NULL, 0, NULL),
           LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_store_append(s, NULL, 1, 0, 1, 0, 0, 0, NULL, 0, 0, NULL, 0, &id),
           LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_store_append(s, S("Bad-Type"), 0, 1, 0, 0, 0, NULL, 0, 0, NULL, 0, &id),
           LMSRT_STATUS_INVALID_EVENT_TYPE);
    EXPECT(lmsrt_store_append(s, S("a\0b"), 0, 1, 0, 0, 0, NULL, 0, 0, NULL, 0, &id),
           LMSRT_STATUS_INVALID_EVENT_TYPE);
    EXPECT(lmsrt_store_append(s, S("caf\xe9"), 0, 1, 0, 0, 0, NULL, 0, 0, NULL, 0, &id),
           LMSRT_STATUS_INVALID_UTF8);
    char longtype[5000];
    memset(longtype, 'a', sizeof longtype);
    EXPECT(lmsrt_store_append(s, longtype, sizeof longtype, 0, 1, 0, 0, 0, NULL, 0, 0, NULL, 0,
                              &id),
           LMSRT_STATUS_INVALID_EVENT_TYPE);
    EXPECT(lmsrt_store_append(s, S("a"), 9, 1, 0, 0, 0, NULL, 0, 0, NULL, 0, &id),
           LMSRT_STATUS_INVALID_PRIORITY);
    EXPECT(lmsrt_store_append(s, S("a"), -1, 1, 0, 0, 0, NULL, 0, 0, NULL, 0, &id),
           LMSRT_STATUS_INVALID_PRIORITY);
    EXPECT(lmsrt_store_append(s, S("a"), 0, 0, 0, 0, 0, NULL, 0, 0, NULL, 0, &id),
           LMSRT_STATUS_INVALID_CHANNEL);
    EXPECT(lmsrt_store_append(s, S("a"), 0, 1, 0, 0, 0, S("[1,2]"), 0, NULL, 0, &id),
           LMSRT_STATUS_INVALID_DATA);
    EXPECT(lmsrt_store_append(s, S("a"), 0, 1, 0, 0, 0, S("{\"a\":"), 0, NULL, 0, &id),
           LMSRT_STATUS_INVALID_DATA);
    EXPECT(lmsrt_store_append(s, S("a"), 0, 1, 0, 0, 0, S("{\"a\":\"\xff\"}"), 0, NULL, 0, &id),
           LMSRT_STATUS_INVALID_UTF8);
    /* Data a reader could not decode: a lone surrogate escape, nesting past 64 levels. */
    EXPECT(lmsrt_store_append(s, S("a"), 0, 1, 0, 0, 0, S("{\"a\":\"\\ud800\"}"), 0, NULL, 0,
                              &id),
           LMSRT_STATUS_INVALID_DATA);
    CHECK(strstr(last_error(), "lone UTF-16 surrogate") != NULL);
    char deep[600];
    size_t n = 0;
    n += (size_t)snprintf(deep, sizeof deep, "{\"a\":");
    for (int i = 0; i < 64; i++) deep[n++] = '[';
    deep[n++] = '1';
    for (int i = 0; i < 64; i++) deep[n++] = ']';
    deep[n++] = '}';
    EXPECT(lmsrt_store_append(s, S("a"), 0, 1, 0, 0, 0, deep, n, 0, NULL, 0, &id),
           LMSRT_STATUS_INVALID_DATA); /* 65 levels */
    CHECK(strstr(last_error(), "nested more than 64") != NULL);
    /* The store was opened with max_data_bytes 1024. A huge length is refused before any byte
       is read, so the pointer only needs to be valid for what the length would allow. */
    char big[2048];
    memset(big, ' ', sizeof big);
    big[0] = '{';
    big[sizeof big - 1] = '}';
    EXPECT(lmsrt_store_append(s, S("a"), 0, 1, 0, 0, 0, big, sizeof big, 0, NULL, 0, &id),
           LMSRT_STATUS_DATA_TOO_LARGE);
    EXPECT(lmsrt_store_append(s, S("a"), 0, 1, 0, 0, 0, big, (size_t)-1, 0, NULL, 0, &id),
           LMSRT_STATUS_DATA_TOO_LARGE);
    EXPECT(lmsrt_store_append(s, S("a"), 0, 1, 0, 0, 0, NULL, 0, -5, NULL, 0, &id),
           LMSRT_STATUS_INVALID_TTL);
    EXPECT(lmsrt_store_append(s, S("a"), 0, 1, 0, 0, 0, NULL, 0, 10, NULL, 0, &id),
           LMSRT_STATUS_INVALID_TTL); /* below min_ttl */
    EXPECT(lmsrt_store_append(s, S("a"), 0, 1, 0, 0, 0, NULL, 0, 0, S(""), &id),
           LMSRT_STATUS_INVALID_ARGUMENT); /* empty idempotency key */
    EXPECT(lmsrt_store_append(s, S("a"), 0, 1, 0, 0, 0, NULL, 0, 0, longtype, sizeof longtype,
                              &id),
           LMSRT_STATUS_INVALID_ARGUMENT);
    /* NULL with a length is an error, never "absent": NULL data is not read as {}, a NULL key
       is not dropped (a retry would then append a duplicate). */
    EXPECT(lmsrt_store_append(s, S("a"), 0, 1, 0, 0, 0, NULL, 5, 0, NULL, 0, &id),
           LMSRT_STATUS_NULL_POINTER);
    CHECK(strstr(last_error(), "data is NULL with a length of 5") != NULL);
    EXPECT(lmsrt_store_append(s, S("a"), 0, 1, 0, 0, 0, NULL, 0, 0, NULL, 5, &id),
           LMSRT_STATUS_NULL_POINTER);
    CHECK(strstr(last_error(), "idempotency_key is NULL") != NULL);
    CHECK(id == -7);
    /* None of the refused appends reached channel 1. */
    lmsrt_buf b = {NULL, 0};
    OK(lmsrt_store_fetch(s, S("{\"channels\":[1]}"), &b));
    CHECK(count(take(&b), "\"id\":") == 0);
}

static void test_batch_and_fetch(lmsrt_store *s) {
    lmsrt_buf ids = {NULL, 0};
    OK(lmsrt_store_append_batch(
        s,
        S("[{\"type\":\"message_create\",\"channel_id\":20,\"data\":{\"n\":1},\"user_id\":5},"
          "{\"event_type\":\"statistics_update\",\"channel_id\":20,\"thread_id\":3},"
          "{\"type\":\"reaction_update\",\"channel_id\":21,\"priority\":2,\"ttl_ms\":5000}]"),
        &ids));
    const char *t = take(&ids);
    CHECK(t[0] == '[' && count(t, ",") == 2);
    OK(lmsrt_store_append_batch(s, S("[]"), &ids));
    CHECK(strcmp(take(&ids), "[]") == 0);

    lmsrt_buf untouched = {(char *)"sentinel", 8};
    EXPECT(lmsrt_store_append_batch(s, S("[{\"type\":\"a\"}]"), &untouched),
           LMSRT_STATUS_INVALID_ARGUMENT); /* channel_id missing */
    EXPECT(lmsrt_store_append_batch(s, S("{}"), &untouched), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_store_append_batch(
               s, S("[{\"type\":\"a\",\"channel_id\":20},{\"type\":\"a\",\"channel_id\":20,"
                    "\"priority\":7}]"),
               &untouched),
           LMSRT_STATUS_INVALID_PRIORITY);
    CHECK(strstr(last_error(), "event 1") != NULL);
    EXPECT(lmsrt_store_append_batch(s, S("[\"\xc0\"]"), &untouched), LMSRT_STATUS_INVALID_UTF8);
    EXPECT(lmsrt_store_append_batch(s, NULL, 0, &untouched), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_store_append_batch(s, S("[]"), NULL), LMSRT_STATUS_NULL_POINTER);
    CHECK(strcmp(untouched.ptr, "sentinel") == 0 && untouched.len == 8);

    /* Fetch: the failed batch appended nothing; the critical lane comes first. */
    lmsrt_buf batch = {NULL, 0};
    OK(lmsrt_store_fetch(s, S("{\"channels\":[20,21],\"limit\":10}"), &batch));
    t = take(&batch);
    CHECK(count(t, "\"id\":") == 3);
    CHECK(strstr(t, "\"events\":[{\"id\":") == t + 1);
    CHECK(strstr(t, "\"event_type\":\"message_create\"") < strstr(t, "reaction_update"));
    CHECK(strstr(t, "\"data\":{\"n\":1}") != NULL);
    CHECK(strstr(t, "\"gap\":false") != NULL && strstr(t, "\"has_more\":false") != NULL);
    const char *c = strstr(t, "\"cursor\":\"v1.");
    CHECK(c != NULL);

    /* data_as_text: each event's data as a JSON string of its text. */
    OK(lmsrt_store_fetch(s, S("{\"channels\":[20],\"types\":[\"message_create\"],"
                              "\"data_as_text\":true}"),
                         &batch));
    CHECK(strstr(take(&batch), "\"data\":\"{\\\"n\\\":1}\"") != NULL);
    EXPECT(lmsrt_store_fetch(s, S("{\"channels\":[20],\"data_as_text\":1}"), &untouched),
           LMSRT_STATUS_INVALID_ARGUMENT);

    /* Filters, order, legacy cursor. */
    OK(lmsrt_store_fetch(s, S("{\"channels\":[20],\"thread_id\":3,\"types\":[\"statistics_update\"],"
                              "\"order\":\"sequential\",\"cursor\":0}"),
                         &batch));
    CHECK(count(take(&batch), "\"id\":") == 1);
    OK(lmsrt_store_fetch(s, S("{\"channels\":[20,21],\"cursor\":\"999999\"}"), &batch));
    CHECK(count(take(&batch), "\"id\":") == 0);

    /* Error paths. */
    EXPECT(lmsrt_store_fetch(s, S("{\"channels\":[20],\"cursor\":\"v1.zz\"}"), &untouched),
           LMSRT_STATUS_INVALID_CURSOR);
    EXPECT(lmsrt_store_fetch(s, S("{\"channels\":[0]}"), &untouched),
           LMSRT_STATUS_INVALID_CHANNEL);
    EXPECT(lmsrt_store_fetch(s, S("{\"channels\":[]}"), &untouched),
           LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_store_fetch(s, S("{\"channels\":[1],\"limit\":0}"), &untouched),
           LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_store_fetch(s, S("{\"channels\":[1],\"types\":[\"Bad\"]}"), &untouched),
           LMSRT_STATUS_INVALID_EVENT_TYPE);
    EXPECT(lmsrt_store_fetch(s, S("{\"channels\":[1],\"bogus\":1}"), &untouched),
           LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_store_fetch(s, S("not json"), &untouched), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_store_fetch(s, S("{\"channels\":[1],\"cursor\":\"\xff\"}"), &untouched),
           LMSRT_STATUS_INVALID_UTF8);
    size_t huge_len = 2 * 1024 * 1024;
    char *huge = malloc(huge_len);
    memset(huge, ' ', huge_len);
    EXPECT(lmsrt_store_fetch(s, huge, huge_len, &untouched), LMSRT_STATUS_INVALID_ARGUMENT);
    free(huge);
    EXPECT(lmsrt_store_fetch(s, NULL, 0, &untouched), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_store_fetch(s, S("{\"channels\":[1]}"), NULL), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_store_fetch(NULL, S("{\"channels\":[1]}"), &untouched),
           LMSRT_STATUS_NULL_POINTER);
    CHECK(strcmp(untouched.ptr, "sentinel") == 0);
}

static void test_cursors(lmsrt_store *s) {
    lmsrt_buf head = {NULL, 0};
    OK(lmsrt_store_head_cursor(s, &head));
    char cursor[256];
    snprintf(cursor, sizeof cursor, "%s", take(&head));
    CHECK(strncmp(cursor, "v1.", 3) == 0);
    EXPECT(lmsrt_store_head_cursor(s, NULL), LMSRT_STATUS_NULL_POINTER);

    /* Nothing is pending after the head. */
    char req[512];
    snprintf(req, sizeof req, "{\"channels\":[7,8,20,21],\"cursor\":\"%s\"}", cursor);
    lmsrt_buf batch = {NULL, 0};
    OK(lmsrt_store_fetch(s, req, strlen(req), &batch));
    CHECK(count(take(&batch), "\"id\":") == 0);

    lmsrt_buf loaded = {(char *)"sentinel", 8};
    bool found = true;
    OK(lmsrt_store_load_cursor(s, S("php-worker"), &loaded, &found));
    CHECK(!found && loaded.ptr == NULL && loaded.len == 0);
    OK(lmsrt_store_commit_cursor(s, S("php-worker"), cursor, strlen(cursor)));
    OK(lmsrt_store_load_cursor(s, S("php-worker"), &loaded, &found));
    CHECK(found);
    CHECK(strcmp(take(&loaded), cursor) == 0);
    OK(lmsrt_store_commit_cursor(s, S("php-worker"), S("17")));
    OK(lmsrt_store_load_cursor(s, S("php-worker"), &loaded, &found));
    CHECK(found && strncmp(take(&loaded), "v1.", 3) == 0);

    EXPECT(lmsrt_store_commit_cursor(s, S("w"), S("nope")), LMSRT_STATUS_INVALID_CURSOR);
    char longc[300];
    memset(longc, '1', sizeof longc);
    EXPECT(lmsrt_store_commit_cursor(s, S("w"), longc, sizeof longc), LMSRT_STATUS_INVALID_CURSOR);
    EXPECT(lmsrt_store_commit_cursor(s, S(""), S("1")), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_store_commit_cursor(s, S("\xff"), S("1")), LMSRT_STATUS_INVALID_UTF8);
    EXPECT(lmsrt_store_commit_cursor(s, NULL, 0, S("1")), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_store_commit_cursor(s, S("w"), NULL, 0), LMSRT_STATUS_NULL_POINTER);
    loaded.ptr = (char *)"sentinel";
    found = true;
    EXPECT(lmsrt_store_load_cursor(s, S(""), &loaded, &found), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_store_load_cursor(s, S("w"), NULL, &found), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_store_load_cursor(s, S("w"), &loaded, NULL), LMSRT_STATUS_NULL_POINTER);
    CHECK(found && strcmp(loaded.ptr, "sentinel") == 0);
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

struct waiter {
    lmsrt_store *store;
    const char *request;
    uint32_t timeout_ms;
    lmsrt_status status;
    lmsrt_buf batch;
    double waited_ms;
};

static void *wait_thread(void *arg) {
    struct waiter *w = arg;
    double t0 = now_ms();
    w->status = lmsrt_store_wait(w->store, w->request, strlen(w->request), w->timeout_ms,
                                 &w->batch);
    w->waited_ms = now_ms() - t0;
    return NULL;
}

static void test_wait(lmsrt_store *s) {
    lmsrt_buf head = {NULL, 0};
    OK(lmsrt_store_head_cursor(s, &head));
    char req[512];
    snprintf(req, sizeof req, "{\"channels\":[30],\"cursor\":\"%s\"}", take(&head));

    /* A timeout returns an empty batch. */
    lmsrt_buf batch = {NULL, 0};
    double t0 = now_ms();
    OK(lmsrt_store_wait(s, req, strlen(req), 100, &batch));
    CHECK(now_ms() - t0 >= 90);
    CHECK(count(take(&batch), "\"id\":") == 0);

    /* An append from another thread wakes the waiter. */
    struct waiter w = {s, req, 20000, LMSRT_STATUS_INTERNAL, {NULL, 0}, 0};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, wait_thread, &w) == 0);
    sleep_ms(200);
    int64_t id = append_simple(s, 30, 0);
    CHECK(pthread_join(th, NULL) == 0);
    OK(w.status);
    char want[64];
    snprintf(want, sizeof want, "\"id\":%lld,", (long long)id);
    CHECK(strstr(take(&w.batch), want) != NULL);
    CHECK(w.waited_ms < 10000);

    /* Pending events return at once. */
    snprintf(req, sizeof req, "{\"channels\":[30]}");
    t0 = now_ms();
    OK(lmsrt_store_wait(s, req, strlen(req), 20000, &batch));
    CHECK(now_ms() - t0 < 5000);
    CHECK(count(take(&batch), "\"id\":") == 1);

    lmsrt_buf untouched = {(char *)"sentinel", 8};
    EXPECT(lmsrt_store_wait(s, S("{\"channels\":[-3]}"), 10, &untouched),
           LMSRT_STATUS_INVALID_CHANNEL);
    EXPECT(lmsrt_store_wait(s, NULL, 0, 10, &untouched), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_store_wait(s, S("{\"channels\":[1]}"), 10, NULL), LMSRT_STATUS_NULL_POINTER);
    CHECK(strcmp(untouched.ptr, "sentinel") == 0);
}

static void test_purge(const char *dir) {
    lmsrt_store *s = open_store(dir, "purge.db", "{\"min_ttl_ms\":1,\"purge_chunk\":2}");
    for (int i = 0; i < 5; i++) append_simple(s, 40, 1);
    append_simple(s, 40, 600000);
    sleep_ms(30);
    uint64_t deleted = 999;
    OK(lmsrt_store_purge_expired(s, 3, &deleted));
    CHECK(deleted == 3);
    OK(lmsrt_store_purge_expired(s, 100, &deleted));
    CHECK(deleted == 2);
    OK(lmsrt_store_purge_expired(s, 100, &deleted));
    CHECK(deleted == 0);
    deleted = 999;
    EXPECT(lmsrt_store_purge_expired(s, 1, NULL), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_store_purge_expired(NULL, 1, &deleted), LMSRT_STATUS_NULL_POINTER);
    CHECK(deleted == 999);
    /* A client that had not seen the purged events is told about the gap. */
    lmsrt_buf batch = {NULL, 0};
    OK(lmsrt_store_fetch(s, S("{\"channels\":[40]}"), &batch));
    const char *t = take(&batch);
    CHECK(strstr(t, "\"gap\":true") != NULL && count(t, "\"id\":") == 1);
    OK(lmsrt_store_close(&s));
}

static void test_advance_ids(const char *dir) {
    lmsrt_store *s = open_store(dir, "advance.db", NULL);
    int64_t first = append_simple(s, 50, 0);
    CHECK(first == 1);
    /* Past the head: every later append gets a larger id, and readers see no gap. */
    int64_t head = -7;
    OK(lmsrt_store_advance_ids(s, 1000, &head));
    CHECK(head == 1000);
    lmsrt_buf cursor = {NULL, 0};
    OK(lmsrt_store_head_cursor(s, &cursor));
    char after_jump[128];
    snprintf(after_jump, sizeof after_jump, "%s", take(&cursor));
    int64_t next = append_simple(s, 50, 0);
    CHECK(next == 1001);
    lmsrt_buf batch = {NULL, 0};
    OK(lmsrt_store_fetch(s, S("{\"channels\":[50],\"cursor\":1}"), &batch));
    const char *t = take(&batch);
    CHECK(count(t, "\"id\":") == 1 && strstr(t, "\"id\":1001,") != NULL);
    CHECK(strstr(t, "\"gap\":false") != NULL);
    char request[256];
    snprintf(request, sizeof request, "{\"channels\":[50],\"cursor\":\"%s\"}", after_jump);
    OK(lmsrt_store_fetch(s, request, strlen(request), &batch));
    t = take(&batch);
    CHECK(count(t, "\"id\":") == 1 && strstr(t, "\"id\":1001,") != NULL);

    /* Behind or at the head: nothing changes, the head comes back. */
    OK(lmsrt_store_advance_ids(s, 5, &head));
    CHECK(head == 1001);
    OK(lmsrt_store_advance_ids(s, 1001, &head));
    CHECK(head == 1001);

    /* Bad input: an error, nothing changed, the out-parameter untouched. */
    head = -7;
    EXPECT(lmsrt_store_advance_ids(s, -1, &head), LMSRT_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(last_error(), "past") != NULL);
    EXPECT(lmsrt_store_advance_ids(s, INT64_MAX, &head), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_store_advance_ids(s, 2000, NULL), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_store_advance_ids(NULL, 2000, &head), LMSRT_STATUS_NULL_POINTER);
    CHECK(head == -7);
    CHECK(append_simple(s, 50, 0) == 1002);
    OK(lmsrt_store_close(&s));
}

static void test_close(const char *dir) {
    lmsrt_store *s = open_store(dir, "close.db", NULL);
    lmsrt_store *copy = s;

    /* Close while another thread waits: the wait returns CLOSED promptly. */
    struct waiter w = {s, "{\"channels\":[1]}", 30000, LMSRT_STATUS_OK, {NULL, 0}, 0};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, wait_thread, &w) == 0);
    sleep_ms(200);
    OK(lmsrt_store_close(&s));
    CHECK(s == NULL);
    CHECK(pthread_join(th, NULL) == 0);
    EXPECT(w.status, LMSRT_STATUS_CLOSED);
    CHECK(w.batch.ptr == NULL);
    CHECK(w.waited_ms < 10000);

    /* Double close through the NULLed variable: a no-op. */
    OK(lmsrt_store_close(&s));
    EXPECT(lmsrt_store_close(NULL), LMSRT_STATUS_NULL_POINTER);

    /* Every function on a stale copy: CLOSED, never a crash. */
    int64_t id = 0;
    uint64_t n = 0;
    bool found = false;
    lmsrt_buf b = {NULL, 0};
    EXPECT(lmsrt_store_append(copy, S("a"), 0, 1, 0, 0, 0, NULL, 0, 0, NULL, 0, &id),
           LMSRT_STATUS_CLOSED);
    CHECK(strstr(last_error(), "closed") != NULL);
    EXPECT(lmsrt_store_append_batch(copy, S("[]"), &b), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_store_fetch(copy, S("{\"channels\":[1]}"), &b), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_store_wait(copy, S("{\"channels\":[1]}"), 10, &b), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_store_head_cursor(copy, &b), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_store_purge_expired(copy, 1, &n), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_store_advance_ids(copy, 1, &id), LMSRT_STATUS_CLOSED);
    CHECK(id == 0);
    EXPECT(lmsrt_store_commit_cursor(copy, S("w"), S("1")), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_store_load_cursor(copy, S("w"), &b, &found), LMSRT_STATUS_CLOSED);
    CHECK(b.ptr == NULL);
    EXPECT(lmsrt_store_close(&copy), LMSRT_STATUS_CLOSED);
    CHECK(copy == NULL);
    /* A value that was never a handle. */
    lmsrt_store *bogus = (lmsrt_store *)(uintptr_t)0xdeadbeef;
    EXPECT(lmsrt_store_head_cursor(bogus, &b), LMSRT_STATUS_CLOSED);

    /* Buffers: NULL and double free are no-ops. */
    lmsrt_buf_free(NULL);
    lmsrt_buf_free(&b);
    lmsrt_buf_free(&b);

    /* Reopening the same file sees what was appended before. */
    lmsrt_store *again = open_store(dir, "close.db", NULL);
    append_simple(again, 1, 0);
    OK(lmsrt_store_close(&again));
}

static void test_token(void) {
    const char *secret = "0123456789abcdef0123456789abcdef";
    lmsrt_buf t = {NULL, 0};
    OK(lmsrt_token_issue(S("k1"), secret, strlen(secret), 7, S("[3,1]"), 2000000000, S("sess"), &t));
    const char *text = take(&t);
    CHECK(strncmp(text, "v1.", 3) == 0);
    CHECK(count(text, ".") == 2);
    /* Errors leave the buffer untouched. */
    EXPECT(lmsrt_token_issue(S("k1"), S("short"), 7, S("[1]"), 2000000000, S("s"), &t),
           LMSRT_STATUS_INVALID_ARGUMENT);
    CHECK(t.ptr == NULL);
    EXPECT(lmsrt_token_issue(S("k1"), secret, strlen(secret), 7, S("[0]"), 2000000000, S("s"), &t),
           LMSRT_STATUS_INVALID_CHANNEL);
    EXPECT(lmsrt_token_issue(S("k1"), secret, strlen(secret), 7, S("{}"), 2000000000, S("s"), &t),
           LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_token_issue(S("bad id"), secret, strlen(secret), 7, S("[1]"), 2000000000, S("s"), &t),
           LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_token_issue(NULL, 2, secret, strlen(secret), 7, S("[1]"), 2000000000, S("s"), &t),
           LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_token_issue(S("k1"), secret, strlen(secret), 7, S("[1]"), 2000000000, S("s"), NULL),
           LMSRT_STATUS_NULL_POINTER);
    CHECK(t.ptr == NULL);
}

/* ---- guards ------------------------------------------------------------------------------ */

static lmsrt_guards *open_guards(const char *dir, const char *name, const char *config) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    lmsrt_guards *g = NULL;
    OK(lmsrt_guards_open(path, strlen(path), config, config ? strlen(config) : 0, &g));
    CHECK(g != NULL);
    return g;
}

static void test_guards_open_errors(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/gerr.db", dir);
    size_t n = strlen(path);
    lmsrt_guards *g = (lmsrt_guards *)0x1;
    EXPECT(lmsrt_guards_open(NULL, 0, NULL, 0, &g), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_guards_open(path, n, NULL, 0, NULL), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_guards_open(S("\xff.db"), NULL, 0, &g), LMSRT_STATUS_INVALID_UTF8);
    EXPECT(lmsrt_guards_open(S("a\0b.db"), NULL, 0, &g), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_guards_open(path, 0, NULL, 0, &g), LMSRT_STATUS_INVALID_ARGUMENT);
    char *huge = malloc(5000);
    memset(huge, 'a', 5000);
    EXPECT(lmsrt_guards_open(huge, 5000, NULL, 0, &g), LMSRT_STATUS_INVALID_ARGUMENT);
    free(huge);
    EXPECT(lmsrt_guards_open(path, n, S("{"), &g), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_guards_open(path, n, S("[]"), &g), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_guards_open(path, n, S("{\"limit\":{}}"), &g), LMSRT_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(last_error(), "unknown field `limit`") != NULL);
    EXPECT(lmsrt_guards_open(path, n, NULL, 5, &g), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_guards_open(path, n, S("{\"limits\":{\"post\":{\"rate\":0}}}"), &g),
           LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_guards_open(path, n, S("{\"limits\":{\"post\":{\"rate\":1,\"adaptive\":5}}}"), &g),
           LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_guards_open(path, n, S("{\"breaker\":{\"failure_threshold\":0}}"), &g),
           LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_guards_open(path, n, S("{\"slots\":{\"max\":16}}"), &g),
           LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_guards_open(path, n, S("{\"slots\":{\"on_full\":\"drop\"}}"), &g),
           LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_guards_open(path, n, S("{\"metrics\":{\"p99\":1}}"), &g),
           LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_guards_open(path, n, S("{\"x\":\"\xff\"}"), &g), LMSRT_STATUS_INVALID_UTF8);
    EXPECT(lmsrt_guards_open(S("/nonexistent-dir/x/y.db"), NULL, 0, &g), LMSRT_STATUS_IO);
    CHECK(g == (lmsrt_guards *)0x1); /* untouched on failure */
    /* Defaults, blank settings and a full document all open. */
    g = open_guards(dir, "gdefaults.db", NULL);
    OK(lmsrt_guards_close(&g));
    g = open_guards(dir, "gdefaults.db", "  ");
    OK(lmsrt_guards_close(&g));
    g = open_guards(dir, "gdefaults.db",
                    "{\"limits\":{\"post\":{\"rate\":20,\"period_ms\":60000,\"burst\":20,"
                    "\"adaptive\":{\"penalty_permille\":100,\"min_allowance_permille\":250,"
                    "\"recovery_ms\":600000},\"block\":false},"
                    "\"ip\":{\"rate\":600,\"burst\":100,\"block\":{\"base_ms\":60000}}},"
                    "\"limiter\":{\"capacity\":1024},"
                    "\"breaker\":{\"failure_threshold\":5,\"open_ms\":5000},"
                    "\"slots\":{\"max\":3,\"lease_ms\":35000,\"on_full\":\"refuse\"},"
                    "\"metrics\":{\"p99_ms\":100}}");
    OK(lmsrt_guards_close(&g));
}

static lmsrt_decision check_limit(lmsrt_guards *g, const char *action, const char *key) {
    lmsrt_decision d;
    OK(lmsrt_limiter_check(g, action, strlen(action), key, strlen(key), 1, &d));
    return d;
}

struct hammer {
    lmsrt_guards *g;
    int allowed;
};

static void *hammer_thread(void *arg) {
    struct hammer *h = arg;
    for (int i = 0; i < 200; i++) {
        lmsrt_decision d;
        if (lmsrt_limiter_check(h->g, S("once"), S("shared"), 1, &d) != LMSRT_STATUS_OK) {
            h->allowed = -1000;
            return NULL;
        }
        h->allowed += d.allowed;
    }
    return NULL;
}

static void test_limiter(const char *dir) {
    lmsrt_guards *g = open_guards(
        dir, "limiter.db",
        "{\"limits\":{\"t\":{\"rate\":3,\"period_ms\":86400000,\"adaptive\":false},"
        "\"once\":{\"rate\":50,\"period_ms\":86400000,\"adaptive\":false},"
        "\"b\":{\"rate\":1,\"period_ms\":86400000,\"adaptive\":{\"penalty_permille\":1000},"
        "\"block\":{\"base_ms\":60000}}}}");
    for (int i = 0; i < 3; i++) {
        lmsrt_decision d = check_limit(g, "t", "user:7");
        CHECK(d.allowed && d.tracked && !d.blocked);
        CHECK(d.limit == 3 && d.remaining == (uint32_t)(2 - i) && d.retry_after_ms == 0);
        CHECK(d.reputation_permille == 1000);
    }
    /* A refusal is an answer, not an error. */
    lmsrt_decision d = check_limit(g, "t", "user:7");
    CHECK(!d.allowed && !d.blocked && d.remaining == 0);
    CHECK(d.retry_after_ms > 28000000 && d.retry_after_ms <= 28800000); /* a day / 3 */
    CHECK(check_limit(g, "t", "user:8").allowed); /* keys are independent */
    lmsrt_decision p;
    OK(lmsrt_limiter_peek(g, S("t"), S("user:7"), &p));
    CHECK(!p.allowed);
    OK(lmsrt_limiter_reset(g, S("t"), S("user:7")));
    OK(lmsrt_limiter_peek(g, S("t"), S("user:7"), &p));
    CHECK(p.allowed && p.remaining == 3);
    OK(lmsrt_limiter_check(g, S("t"), S("user:7"), 3, &d)); /* cost 3 = the whole burst */
    CHECK(d.allowed && d.remaining == 0);
    /* The default actions are there: post is 20 per minute. */
    for (int i = 0; i < 20; i++) CHECK(check_limit(g, "post", "user:7").allowed);
    d = check_limit(g, "post", "user:7");
    CHECK(!d.allowed && d.retry_after_ms > 2000 && d.retry_after_ms <= 3000);
    CHECK(d.reputation_permille == 900); /* adaptive: the refusal cost 100 per mille */

    /* DDoS guard: refused at zero reputation means blocked. */
    CHECK(check_limit(g, "b", "10.0.0.1").allowed);
    int blocked = 0;
    for (int i = 0; i < 4 && !blocked; i++) {
        d = check_limit(g, "b", "10.0.0.1");
        CHECK(!d.allowed);
        blocked = d.blocked;
    }
    CHECK(blocked && d.retry_after_ms > 50000 && d.retry_after_ms <= 60000);

    /* Two threads sharing the handle share one exact budget. */
    struct hammer h1 = {g, 0}, h2 = {g, 0};
    pthread_t t1, t2;
    CHECK(pthread_create(&t1, NULL, hammer_thread, &h1) == 0);
    CHECK(pthread_create(&t2, NULL, hammer_thread, &h2) == 0);
    CHECK(pthread_join(t1, NULL) == 0 && pthread_join(t2, NULL) == 0);
    CHECK(h1.allowed >= 0 && h2.allowed >= 0 && h1.allowed + h2.allowed == 50);

    /* Error paths; *out stays untouched. */
    lmsrt_decision untouched;
    memset(&untouched, 0x5a, sizeof untouched);
    lmsrt_decision before;
    memcpy(&before, &untouched, sizeof before); /* padding included */
    EXPECT(lmsrt_limiter_check(g, S("nope"), S("k"), 1, &untouched), LMSRT_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(last_error(), "unknown rate-limit action") != NULL);
    EXPECT(lmsrt_limiter_check(g, S("t"), S(""), 1, &untouched), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_limiter_check(g, S("t"), S("k"), 0, &untouched), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_limiter_check(g, S("t"), S("k"), 4, &untouched), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_limiter_check(g, S("t"), S("\xc3"), 1, &untouched), LMSRT_STATUS_INVALID_UTF8);
    EXPECT(lmsrt_limiter_check(g, S("\xff"), S("k"), 1, &untouched), LMSRT_STATUS_INVALID_UTF8);
    EXPECT(lmsrt_limiter_check(g, NULL, 1, S("k"), 1, &untouched), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_limiter_check(g, S("t"), NULL, 1, 1, &untouched), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_limiter_check(g, S("t"), S("k"), 1, NULL), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_limiter_check(NULL, S("t"), S("k"), 1, &untouched), LMSRT_STATUS_NULL_POINTER);
    char longkey[2000];
    memset(longkey, 'k', sizeof longkey);
    EXPECT(lmsrt_limiter_check(g, S("t"), longkey, sizeof longkey, 1, &untouched),
           LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_limiter_peek(g, S("nope"), S("k"), &untouched), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_limiter_peek(g, S("t"), S("k"), NULL), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_limiter_peek(g, S("t"), S("\xff"), &untouched), LMSRT_STATUS_INVALID_UTF8);
    CHECK(memcmp(&untouched, &before, sizeof before) == 0);
    EXPECT(lmsrt_limiter_reset(g, S("nope"), S("k")), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_limiter_reset(g, S("t"), S("")), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_limiter_reset(g, S("t"), NULL, 0), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_limiter_reset(g, S("t"), S("\xff")), LMSRT_STATUS_INVALID_UTF8);
    OK(lmsrt_guards_close(&g));

    /* A second handle on the same database sees the same state (a fresh one starts the
       same file: "t" for user:7 is still spent). */
    g = open_guards(dir, "limiter.db",
                    "{\"limits\":{\"t\":{\"rate\":3,\"period_ms\":86400000,\"adaptive\":false}}}");
    CHECK(!check_limit(g, "t", "user:7").allowed);
    OK(lmsrt_guards_close(&g));
}

static void test_breakers(const char *dir) {
    lmsrt_guards *g = open_guards(
        dir, "breakers.db",
        "{\"breaker\":{\"failure_threshold\":2,\"open_ms\":150,\"max_open_ms\":1000}}");
    lmsrt_breaker_status st;
    OK(lmsrt_breaker_check(g, S("store"), &st));
    CHECK(st.allowed && !st.probe && st.tracked);
    CHECK(st.state == LMSRT_BREAKER_STATE_CLOSED && st.mode == LMSRT_MODE_LONG);
    CHECK(st.wait_ms == 30000 && st.retry_after_ms == 0);
    OK(lmsrt_breaker_record_failure(g, S("store"), &st));
    CHECK(st.state == LMSRT_BREAKER_STATE_CLOSED && st.consecutive_failures == 1);
    CHECK(st.window_failures == 1 && st.window_requests == 1);
    CHECK(st.mode == LMSRT_MODE_MEDIUM && st.wait_ms == 10000); /* half the threshold */
    OK(lmsrt_breaker_record_failure(g, S("store"), &st));
    CHECK(st.state == LMSRT_BREAKER_STATE_OPEN && st.mode == LMSRT_MODE_EMERGENCY);
    /* Open: refused, which is an answer, not an error. */
    OK(lmsrt_breaker_check(g, S("store"), &st));
    CHECK(!st.allowed && st.state == LMSRT_BREAKER_STATE_OPEN && st.wait_ms == 1000);
    CHECK(st.retry_after_ms > 0 && st.retry_after_ms <= 150 && st.open_period_ms == 150);
    OK(lmsrt_breaker_check(g, S("other"), &st)); /* breakers are independent */
    CHECK(st.allowed);
    sleep_ms(200);
    OK(lmsrt_breaker_peek(g, S("store"), &st));
    CHECK(st.state == LMSRT_BREAKER_STATE_HALF_OPEN && st.allowed && !st.probe);
    OK(lmsrt_breaker_check(g, S("store"), &st));
    CHECK(st.allowed && st.probe && st.mode == LMSRT_MODE_SHORT && st.wait_ms == 3000);
    OK(lmsrt_breaker_check(g, S("store"), &st)); /* one probe at a time */
    CHECK(!st.allowed);
    OK(lmsrt_breaker_record_success(g, S("store"), &st));
    CHECK(st.state == LMSRT_BREAKER_STATE_CLOSED && st.mode == LMSRT_MODE_LONG && st.allowed);
    OK(lmsrt_breaker_force_open(g, S("store"), 60000, &st));
    CHECK(st.state == LMSRT_BREAKER_STATE_OPEN && st.retry_after_ms > 59000);
    OK(lmsrt_breaker_reset(g, S("store"), &st));
    CHECK(st.state == LMSRT_BREAKER_STATE_CLOSED && st.consecutive_failures == 0);

    lmsrt_breaker_status untouched;
    memset(&untouched, 0x5a, sizeof untouched);
    lmsrt_breaker_status before;
    memcpy(&before, &untouched, sizeof before); /* padding included */
    EXPECT(lmsrt_breaker_check(g, S(""), &untouched), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_breaker_check(g, S("\xff"), &untouched), LMSRT_STATUS_INVALID_UTF8);
    EXPECT(lmsrt_breaker_check(g, NULL, 0, &untouched), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_breaker_check(g, S("store"), NULL), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_breaker_check(NULL, S("store"), &untouched), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_breaker_peek(g, S(""), &untouched), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_breaker_record_success(g, S("\xff"), &untouched), LMSRT_STATUS_INVALID_UTF8);
    EXPECT(lmsrt_breaker_record_failure(g, S("store"), NULL), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_breaker_reset(g, NULL, 3, &untouched), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_breaker_force_open(g, S(""), 10, &untouched), LMSRT_STATUS_INVALID_ARGUMENT);
    CHECK(memcmp(&untouched, &before, sizeof before) == 0);
    OK(lmsrt_guards_close(&g));
}

/* Field by field: the library does not write padding bytes. */
static bool same_lease(const lmsrt_lease *x, const lmsrt_lease *y) {
    return x->key_hash == y->key_hash && x->token == y->token &&
           x->expires_at_ms == y->expires_at_ms && x->record == y->record &&
           x->index == y->index && x->acquired == y->acquired && x->reclaimed == y->reclaimed;
}

static void test_slots(const char *dir) {
    lmsrt_guards *g = open_guards(dir, "slots.db", "{\"slots\":{\"max\":2}}");
    lmsrt_lease a, b, c;
    OK(lmsrt_slot_acquire(g, S("user:7"), &a));
    OK(lmsrt_slot_acquire(g, S("user:7"), &b));
    CHECK(a.acquired && b.acquired && !a.reclaimed && a.token != 0 && a.token != b.token);
    CHECK(a.expires_at_ms > 1700000000000LL);
    /* Full: refused, not an error. */
    memset(&c, 0x5a, sizeof c);
    OK(lmsrt_slot_acquire(g, S("user:7"), &c));
    CHECK(!c.acquired && c.token == 0 && c.record == 0 && c.expires_at_ms == 0);
    uint32_t n = 99;
    OK(lmsrt_slot_count(g, S("user:7"), &n));
    CHECK(n == 2);
    OK(lmsrt_slot_count(g, S("user:8"), &n));
    CHECK(n == 0);
    bool held = false, renewed = false;
    OK(lmsrt_slot_is_held(g, &a, &held));
    CHECK(held);
    lmsrt_lease old = a;
    OK(lmsrt_slot_renew(g, &a, &renewed));
    CHECK(renewed && a.token != old.token && a.expires_at_ms >= old.expires_at_ms);
    OK(lmsrt_slot_release(g, &old, &held));
    CHECK(!held); /* the pre-renewal copy no longer names the lease */
    OK(lmsrt_slot_release(g, &a, &held));
    CHECK(held);
    OK(lmsrt_slot_release(g, &a, &held));
    CHECK(!held);
    OK(lmsrt_slot_is_held(g, &a, &held));
    CHECK(!held);
    renewed = true;
    lmsrt_lease gone = a;
    OK(lmsrt_slot_renew(g, &gone, &renewed));
    CHECK(!renewed && same_lease(&gone, &a)); /* a lost lease is left unchanged */
    OK(lmsrt_slot_release(g, &c, &held)); /* a refused lease holds nothing */
    CHECK(!held);
    OK(lmsrt_slot_acquire(g, S("user:7"), &c));
    CHECK(c.acquired);
    OK(lmsrt_slot_count(g, S("user:7"), &n));
    CHECK(n == 2);
    /* A lease rebuilt from its numbers (another handle, another request) still releases. */
    lmsrt_guards *g2 = open_guards(dir, "slots.db", "{\"slots\":{\"max\":2}}");
    lmsrt_lease rebuilt;
    memset(&rebuilt, 0, sizeof rebuilt);
    rebuilt.record = c.record;
    rebuilt.index = c.index;
    rebuilt.token = c.token;
    OK(lmsrt_slot_release(g2, &rebuilt, &held));
    CHECK(held);
    OK(lmsrt_guards_close(&g2));
    OK(lmsrt_slot_release(g, &b, &held));
    CHECK(held);

    /* Error paths. */
    lmsrt_lease untouched;
    memset(&untouched, 0x5a, sizeof untouched);
    lmsrt_lease before;
    memcpy(&before, &untouched, sizeof before); /* padding included */
    EXPECT(lmsrt_slot_acquire(g, S(""), &untouched), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_slot_acquire(g, S("\xff"), &untouched), LMSRT_STATUS_INVALID_UTF8);
    EXPECT(lmsrt_slot_acquire(g, NULL, 0, &untouched), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_slot_acquire(g, S("k"), NULL), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_slot_acquire(NULL, S("k"), &untouched), LMSRT_STATUS_NULL_POINTER);
    CHECK(memcmp(&untouched, &before, sizeof before) == 0);
    /* A lease of garbage is simply not held (bounds are checked), never a crash. */
    OK(lmsrt_slot_release(g, &untouched, &held));
    CHECK(!held);
    OK(lmsrt_slot_renew(g, &untouched, &renewed));
    CHECK(!renewed && memcmp(&untouched, &before, sizeof before) == 0);
    EXPECT(lmsrt_slot_release(g, NULL, &held), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_slot_release(g, &a, NULL), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_slot_renew(g, NULL, &renewed), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_slot_renew(g, &a, NULL), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_slot_is_held(g, NULL, &held), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_slot_is_held(g, &a, NULL), LMSRT_STATUS_NULL_POINTER);
    n = 99;
    EXPECT(lmsrt_slot_count(g, S(""), &n), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_slot_count(g, S("\xff"), &n), LMSRT_STATUS_INVALID_UTF8);
    EXPECT(lmsrt_slot_count(g, S("k"), NULL), LMSRT_STATUS_NULL_POINTER);
    CHECK(n == 99);
    OK(lmsrt_guards_close(&g));

    /* evict_oldest: the N+1th takes over the oldest lease, whose holder finds out. */
    g = open_guards(dir, "evict.db", "{\"slots\":{\"max\":1,\"on_full\":\"evict_oldest\"}}");
    OK(lmsrt_slot_acquire(g, S("u"), &a));
    OK(lmsrt_slot_acquire(g, S("u"), &b));
    CHECK(a.acquired && b.acquired && b.reclaimed);
    OK(lmsrt_slot_is_held(g, &a, &held));
    CHECK(!held);
    OK(lmsrt_slot_renew(g, &a, &renewed));
    CHECK(!renewed);
    OK(lmsrt_slot_release(g, &b, &held));
    CHECK(held);
    OK(lmsrt_guards_close(&g));
}

static void test_rollout(void) {
    /* The pinned buckets of src/guards/rollout.rs. */
    const char *users[] = {"1", "2", "42", "user-7"};
    const uint32_t buckets[] = {9532, 810, 3230, 6887};
    int32_t cohort = -1;
    uint32_t bucket = 0;
    for (int i = 0; i < 4; i++) {
        OK(lmsrt_rollout_cohort(5, S("lms"), NULL, 0, users[i], strlen(users[i]), &cohort,
                                &bucket));
        CHECK(bucket == buckets[i] && cohort == LMSRT_COHORT_CONTROL);
        OK(lmsrt_rollout_cohort(100, S("lms"), S(""), users[i], strlen(users[i]), &cohort,
                                &bucket));
        CHECK(bucket == buckets[i] && cohort == LMSRT_COHORT_ROLLOUT);
    }
    EXPECT(lmsrt_rollout_cohort(33, S("lms"), NULL, 3, S("42"), &cohort, &bucket),
           LMSRT_STATUS_NULL_POINTER);
    OK(lmsrt_rollout_cohort(33, S("lms"), NULL, 0, S("42"), &cohort, &bucket));
    CHECK(cohort == LMSRT_COHORT_ROLLOUT); /* 3230 < 3300 */
    OK(lmsrt_rollout_cohort(32, S("lms"), NULL, 0, S("42"), &cohort, &bucket));
    CHECK(cohort == LMSRT_COHORT_CONTROL);
    OK(lmsrt_rollout_cohort(0, S("lms"), S("[\"x\", 42]"), S("42"), &cohort, &bucket));
    CHECK(cohort == LMSRT_COHORT_BETA && bucket == 3230);
    OK(lmsrt_rollout_cohort(0, S("lms"), S("[\"x\", 42]"), S("x"), &cohort, &bucket));
    CHECK(cohort == LMSRT_COHORT_BETA);
    OK(lmsrt_rollout_cohort(0, S("other"), NULL, 0, S("42"), &cohort, &bucket));
    CHECK(bucket != 3230 && bucket < 10000); /* another salt, another draw */

    cohort = -7;
    bucket = 77;
    EXPECT(lmsrt_rollout_cohort(101, S("lms"), NULL, 0, S("1"), &cohort, &bucket),
           LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_rollout_cohort(5, S("lms"), S("{\"a\":1}"), S("1"), &cohort, &bucket),
           LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_rollout_cohort(5, S("lms"), S("[1.5]"), S("1"), &cohort, &bucket),
           LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_rollout_cohort(5, S("lms"), S("[\"\xff\"]"), S("1"), &cohort, &bucket),
           LMSRT_STATUS_INVALID_UTF8);
    EXPECT(lmsrt_rollout_cohort(5, NULL, 0, NULL, 0, S("1"), &cohort, &bucket),
           LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_rollout_cohort(5, S("lms"), NULL, 0, NULL, 0, &cohort, &bucket),
           LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_rollout_cohort(5, S("lms"), NULL, 0, S("\xff"), &cohort, &bucket),
           LMSRT_STATUS_INVALID_UTF8);
    EXPECT(lmsrt_rollout_cohort(5, S("lms"), NULL, 0, S("1"), NULL, &bucket),
           LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_rollout_cohort(5, S("lms"), NULL, 0, S("1"), &cohort, NULL),
           LMSRT_STATUS_NULL_POINTER);
    CHECK(cohort == -7 && bucket == 77);
}

static void test_metrics(const char *dir) {
    lmsrt_guards *g = open_guards(dir, "metrics.db", NULL);
    OK(lmsrt_metrics_incr(g, S("appends"), 5));
    OK(lmsrt_metrics_incr(g, S("deliveries"), 0));
    for (int i = 0; i < 10; i++) OK(lmsrt_metrics_record_us(g, S("append"), 250));
    OK(lmsrt_metrics_set_gauge(g, S("connections"), 10));
    OK(lmsrt_metrics_add_gauge(g, S("connections"), -3));
    OK(lmsrt_metrics_add_gauge(g, S("active_waits"), 2));
    CHECK(check_limit(g, "post", "m").allowed); /* the guards count into the same file */
    lmsrt_buf b = {NULL, 0};
    OK(lmsrt_metrics_snapshot(g, &b));
    const char *t = take(&b);
    CHECK(t[0] == '{');
    CHECK(strstr(t, "\"appends\":{\"total\":5,\"window\":5}") != NULL);
    CHECK(strstr(t, "\"connections\":7") != NULL && strstr(t, "\"active_waits\":2") != NULL);
    CHECK(strstr(t, "\"append\":{\"count\":10,\"sum_us\":2500") != NULL);
    CHECK(strstr(t, "\"limiter_allowed\":{\"total\":1") != NULL);
    CHECK(strstr(t, "\"health\":{\"status\":\"ok\",\"reasons\":[]}") != NULL);
    OK(lmsrt_metrics_prometheus(g, &b));
    t = take(&b);
    CHECK(strstr(t, "lmsrt_appends_total 5\n") != NULL);
    CHECK(strstr(t, "lmsrt_connections 7\n") != NULL);
    CHECK(strstr(t, "lmsrt_healthy 1\n") != NULL);
    OK(lmsrt_metrics_health(g, &b));
    CHECK(strcmp(take(&b), "{\"status\":\"ok\",\"reasons\":[]}") == 0);
    /* 20 failed appends of 25: degraded, with the reason. */
    OK(lmsrt_metrics_incr(g, S("appends"), 20));
    OK(lmsrt_metrics_incr(g, S("append_errors"), 20));
    OK(lmsrt_metrics_health(g, &b));
    t = take(&b);
    CHECK(strstr(t, "\"status\":\"degraded\"") != NULL && strstr(t, "error rate") != NULL);
    OK(lmsrt_metrics_prometheus(g, &b));
    CHECK(strstr(take(&b), "lmsrt_healthy 0\n") != NULL);
    /* Another handle (another process, in production) sees the same figures. */
    lmsrt_guards *g2 = open_guards(dir, "metrics.db", NULL);
    OK(lmsrt_metrics_snapshot(g2, &b));
    CHECK(strstr(take(&b), "\"appends\":{\"total\":25,") != NULL);
    OK(lmsrt_guards_close(&g2));

    /* Counters and latency sums saturate at UINT64_MAX instead of wrapping. */
    OK(lmsrt_metrics_incr(g, S("deliveries"), UINT64_MAX - 1));
    OK(lmsrt_metrics_incr(g, S("deliveries"), 5));
    OK(lmsrt_metrics_incr(g, S("deliveries"), UINT64_MAX));
    OK(lmsrt_metrics_record_us(g, S("delivery"), UINT64_MAX));
    OK(lmsrt_metrics_record_us(g, S("delivery"), UINT64_MAX));
    OK(lmsrt_metrics_snapshot(g, &b));
    t = take(&b);
    CHECK(strstr(t, "\"deliveries\":{\"total\":18446744073709551615,"
                    "\"window\":18446744073709551615}") != NULL);
    CHECK(strstr(t, "\"delivery\":{\"count\":2,\"sum_us\":18446744073709551615") != NULL);
    OK(lmsrt_metrics_prometheus(g, &b));
    CHECK(strstr(take(&b), "lmsrt_deliveries_total 18446744073709551615\n") != NULL);

    lmsrt_buf untouched = {(char *)"sentinel", 8};
    EXPECT(lmsrt_metrics_incr(g, S("nope"), 1), LMSRT_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(last_error(), "appends") != NULL); /* the message lists the names */
    EXPECT(lmsrt_metrics_incr(g, S("append"), 1), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_metrics_incr(g, NULL, 0, 1), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_metrics_incr(g, S("\xff"), 1), LMSRT_STATUS_INVALID_UTF8);
    EXPECT(lmsrt_metrics_record_us(g, S("appends"), 1), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_metrics_record_us(g, NULL, 0, 1), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_metrics_set_gauge(g, S("nope"), 1), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_metrics_set_gauge(g, S("\xff"), 1), LMSRT_STATUS_INVALID_UTF8);
    EXPECT(lmsrt_metrics_add_gauge(g, S("nope"), 1), LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_metrics_add_gauge(g, NULL, 0, 1), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_metrics_snapshot(g, NULL), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_metrics_prometheus(g, NULL), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_metrics_health(g, NULL), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_metrics_snapshot(NULL, &untouched), LMSRT_STATUS_NULL_POINTER);
    CHECK(strcmp(untouched.ptr, "sentinel") == 0);
    OK(lmsrt_guards_close(&g));
}

static void test_guards_close(const char *dir) {
    lmsrt_guards *g = open_guards(dir, "gclose.db", NULL);
    lmsrt_guards *copy = g;
    lmsrt_lease lease;
    OK(lmsrt_slot_acquire(g, S("u"), &lease));
    OK(lmsrt_guards_close(&g));
    CHECK(g == NULL);
    OK(lmsrt_guards_close(&g)); /* double close through the NULLed variable: a no-op */
    EXPECT(lmsrt_guards_close(NULL), LMSRT_STATUS_NULL_POINTER);

    /* Every function on a stale copy: CLOSED, never a crash; out-params untouched. */
    lmsrt_decision d;
    lmsrt_breaker_status st;
    lmsrt_buf b = {NULL, 0};
    bool held = true;
    uint32_t n = 99;
    EXPECT(lmsrt_limiter_check(copy, S("post"), S("k"), 1, &d), LMSRT_STATUS_CLOSED);
    CHECK(strstr(last_error(), "guards handle is closed") != NULL);
    EXPECT(lmsrt_limiter_peek(copy, S("post"), S("k"), &d), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_limiter_reset(copy, S("post"), S("k")), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_breaker_check(copy, S("s"), &st), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_breaker_peek(copy, S("s"), &st), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_breaker_record_success(copy, S("s"), &st), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_breaker_record_failure(copy, S("s"), &st), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_breaker_reset(copy, S("s"), &st), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_breaker_force_open(copy, S("s"), 10, &st), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_slot_acquire(copy, S("u"), &lease), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_slot_release(copy, &lease, &held), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_slot_renew(copy, &lease, &held), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_slot_is_held(copy, &lease, &held), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_slot_count(copy, S("u"), &n), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_metrics_incr(copy, S("appends"), 1), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_metrics_record_us(copy, S("append"), 1), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_metrics_set_gauge(copy, S("connections"), 1), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_metrics_add_gauge(copy, S("connections"), 1), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_metrics_snapshot(copy, &b), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_metrics_prometheus(copy, &b), LMSRT_STATUS_CLOSED);
    EXPECT(lmsrt_metrics_health(copy, &b), LMSRT_STATUS_CLOSED);
    CHECK(b.ptr == NULL && held && n == 99);
    EXPECT(lmsrt_guards_close(&copy), LMSRT_STATUS_CLOSED);
    CHECK(copy == NULL);
    /* A value that was never a handle, and a store handle in place of guards. */
    lmsrt_guards *bogus = (lmsrt_guards *)(uintptr_t)0xdeadbeef;
    EXPECT(lmsrt_metrics_health(bogus, &b), LMSRT_STATUS_CLOSED);
    lmsrt_store *s = open_store(dir, "gclose-store.db", NULL);
    EXPECT(lmsrt_slot_count((const lmsrt_guards *)s, S("u"), &n), LMSRT_STATUS_CLOSED);
    lmsrt_guards *as_guards = (lmsrt_guards *)s;
    EXPECT(lmsrt_guards_close(&as_guards), LMSRT_STATUS_CLOSED);
    OK(lmsrt_store_close(&s));

    /* The lease outlives the handle: another handle on the same database releases it. */
    g = open_guards(dir, "gclose.db", NULL);
    OK(lmsrt_slot_count(g, S("u"), &n));
    CHECK(n == 1);
    OK(lmsrt_slot_release(g, &lease, &held));
    CHECK(held);
    OK(lmsrt_guards_close(&g));
}

/* Overwrites a b-tree leaf page of the events table (page type 0x0D, past the middle of the
 * file, where only the events' rows live) with garbage; returns its page number. */
static long damage_leaf_page(const char *path) {
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    unsigned char header[100];
    CHECK(fread(header, 1, sizeof header, f) == sizeof header);
    long page_size = (header[16] << 8) | header[17];
    if (page_size == 1) page_size = 65536;
    CHECK(fseek(f, 0, SEEK_END) == 0);
    long pages = ftell(f) / page_size;
    CHECK(pages > 100);
    for (long page = pages / 2; page <= pages; page++) {
        unsigned char type = 0;
        CHECK(fseek(f, (page - 1) * page_size, SEEK_SET) == 0);
        CHECK(fread(&type, 1, 1, f) == 1);
        if (type != 0x0D) continue;
        char *garbage = malloc((size_t)page_size);
        memset(garbage, 0xA5, (size_t)page_size);
        CHECK(fseek(f, (page - 1) * page_size, SEEK_SET) == 0);
        CHECK(fwrite(garbage, 1, (size_t)page_size, f) == (size_t)page_size);
        free(garbage);
        CHECK(fclose(f) == 0);
        return page;
    }
    CHECK(!"no table leaf page past the middle of the file");
    return 0;
}

static void test_check_and_salvage(const char *dir) {
    char path[4096], dest[4096];
    snprintf(path, sizeof path, "%s/damaged.db", dir);
    snprintf(dest, sizeof dest, "%s/salvaged.db", dir);
    lmsrt_store *s = open_store(dir, "damaged.db", NULL);
    /* 2,000 events of 600 bytes: some 300 pages of rows. */
    static char batch[256 * 1024];
    char pad[601];
    memset(pad, 'x', 600);
    pad[600] = '\0';
    for (int chunk = 0; chunk < 20; chunk++) {
        size_t n = 0;
        n += (size_t)snprintf(batch + n, sizeof batch - n, "[");
        for (int i = 0; i < 100; i++) {
            n += (size_t)snprintf(batch + n, sizeof batch - n,
                                  "%s{\"type\":\"message_create\",\"channel_id\":%d,"
                                  "\"data\":{\"pad\":\"%s\"}}",
                                  i ? "," : "", 1 + i % 3, pad);
        }
        n += (size_t)snprintf(batch + n, sizeof batch - n, "]");
        lmsrt_buf ids = {NULL, 0};
        OK(lmsrt_store_append_batch(s, batch, n, &ids));
        lmsrt_buf_free(&ids);
    }
    OK(lmsrt_store_commit_cursor(s, S("reader"), S("10")));
    /* The last connection to close checkpoints the WAL into the main file. */
    OK(lmsrt_store_close(&s));

    lmsrt_buf out = {NULL, 0};
    OK(lmsrt_store_check(path, strlen(path), &out));
    CHECK(strstr(take(&out), "\"ok\":true") != NULL);
    damage_leaf_page(path);
    OK(lmsrt_store_check(path, strlen(path), &out));
    const char *t = take(&out);
    CHECK(strstr(t, "\"ok\":false") != NULL && strstr(t, "\"problems\":[\"") != NULL);

    /* A reader that crosses the damaged page gets CORRUPT, not STORAGE: one of four readers,
     * each covering a quarter of the ids, crosses it. */
    static const char *quarters[] = {
        "{\"channels\":[1,2,3],\"limit\":500,\"order\":\"sequential\",\"cursor\":\"0\"}",
        "{\"channels\":[1,2,3],\"limit\":500,\"order\":\"sequential\",\"cursor\":\"500\"}",
        "{\"channels\":[1,2,3],\"limit\":500,\"order\":\"sequential\",\"cursor\":\"1000\"}",
        "{\"channels\":[1,2,3],\"limit\":500,\"order\":\"sequential\",\"cursor\":\"1500\"}",
    };
    s = open_store(dir, "damaged.db", NULL);
    int corrupt = 0;
    for (int q = 0; q < 4; q++) {
        lmsrt_buf fetched = {(char *)"sentinel", 8};
        lmsrt_status st = lmsrt_store_fetch(s, quarters[q], strlen(quarters[q]), &fetched);
        if (st == LMSRT_STATUS_OK) {
            lmsrt_buf_free(&fetched);
            continue;
        }
        EXPECT(st, LMSRT_STATUS_CORRUPT);
        CHECK(strstr(last_error(), "corrupt") != NULL);
        CHECK(strcmp(fetched.ptr, "sentinel") == 0);
        corrupt++;
    }
    CHECK(corrupt >= 1); /* two when the page straddles a quarter boundary */
    OK(lmsrt_store_close(&s));

    OK(lmsrt_store_salvage(path, strlen(path), dest, strlen(dest), &out));
    t = take(&out);
    CHECK(strstr(t, "\"dest_ok\":true") != NULL && strstr(t, "\"lost_exact\":true") != NULL);
    CHECK(strstr(t, "\"sequence\":2000") != NULL && strstr(t, "\"cursors_copied\":1") != NULL);
    CHECK(strstr(t, "\"events_lost\":0") == NULL);
    OK(lmsrt_store_check(dest, strlen(dest), &out));
    CHECK(strstr(take(&out), "\"ok\":true") != NULL);
    /* The salvaged store reads every quarter; the one that crossed the damage reports a gap. */
    s = open_store(dir, "salvaged.db", NULL);
    int gaps = 0;
    for (int q = 0; q < 4; q++) {
        lmsrt_buf fetched = {NULL, 0};
        OK(lmsrt_store_fetch(s, quarters[q], strlen(quarters[q]), &fetched));
        /* Too long for take()'s buffer; the library NUL-terminates every buffer. */
        gaps += strstr(fetched.ptr, "\"gap\":true") != NULL;
        lmsrt_buf_free(&fetched);
    }
    CHECK(gaps == corrupt);
    OK(lmsrt_store_close(&s));

    /* Error paths: out-params untouched. */
    lmsrt_buf untouched = {(char *)"sentinel", 8};
    EXPECT(lmsrt_store_salvage(path, strlen(path), dest, strlen(dest), &untouched),
           LMSRT_STATUS_INVALID_ARGUMENT); /* dest exists */
    EXPECT(lmsrt_store_check(NULL, 0, &untouched), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_store_check(path, strlen(path), NULL), LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_store_check(S("\xff.db"), &untouched), LMSRT_STATUS_INVALID_UTF8);
    EXPECT(lmsrt_store_check(S("/nonexistent-dir/x.db"), &untouched),
           LMSRT_STATUS_INVALID_ARGUMENT);
    EXPECT(lmsrt_store_salvage(path, strlen(path), NULL, 3, &untouched),
           LMSRT_STATUS_NULL_POINTER);
    EXPECT(lmsrt_store_salvage(path, 0, dest, strlen(dest), &untouched),
           LMSRT_STATUS_INVALID_ARGUMENT);
    CHECK(strcmp(untouched.ptr, "sentinel") == 0 && untouched.len == 8);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s <scratch directory>\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    test_versions();
    test_last_error();
    test_token();
    test_open_errors(dir);
    lmsrt_store *s = open_store(dir, "main.db", "{\"max_data_bytes\":1024,\"min_ttl_ms\":1000}");
    test_append(s);
    test_batch_and_fetch(s);
    test_cursors(s);
    test_wait(s);
    OK(lmsrt_store_close(&s));
    test_purge(dir);
    test_advance_ids(dir);
    test_close(dir);
    test_check_and_salvage(dir);
    test_guards_open_errors(dir);
    test_limiter(dir);
    test_breakers(dir);
    test_slots(dir);
    test_rollout();
    test_metrics(dir);
    test_guards_close(dir);
    printf("abi_test: %d checks passed\n", checks);
    return 0;
}
