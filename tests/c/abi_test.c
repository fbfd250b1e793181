/*
 * A C consumer of the lms-realtime ABI, compiled against the checked-in header
 * (include/lms_realtime.h) and the built cdylib. It calls every exported function, on its
 * success path and on its error paths (NULL pointers, invalid UTF-8, oversized input, malformed
 * JSON, closed and stale handles, double close and double free), and checks that out-parameters
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
    CHECK(id == -7);
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
    test_close(dir);
    printf("abi_test: %d checks passed\n", checks);
    return 0;
}
