/* Crash marker tests: the handler in a child process that dies (abort, SIGSEGV, nested frames,
 * no frame), parsing of marker lines, and start-up recovery charging a spool. */
#define _XOPEN_SOURCE 700
#include "../../host/store/crash.c"
#include "../../host/store/keyset.c"
#include "../../host/store/spool.c"
#include "../../host/store/state.c"
#include "../../host/store/store_sqlite.c"
#include "../../host/store/store_local.c"

#include <ftw.h>
#include <pthread.h>
#include <sys/wait.h>

#include "test.h"

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return NULL;
    }
    static char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Forks a child that installs the handlers, enters frames and dies by `how`. Returns the signal
 * that killed it, or -1. */
static int die_in_child(const char *dir, const char *how)
{
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, STDERR_FILENO);
        px_crash_install(dir);
        px_crash_frame outer, inner;
        if (strcmp(how, "none") != 0) {
            px_crash_enter(&outer, "timer", "src", 0, NULL);
            px_crash_enter(&inner, "deliver", "out", 42, "ev \"1\"\n");
        }
        if (strcmp(how, "left") == 0) {
            px_crash_leave(&inner);
        }
        if (strcmp(how, "segv") == 0) {
            raise(SIGSEGV);
        }
        abort();
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid || !WIFSIGNALED(st)) {
        return -1;
    }
    return WTERMSIG(st);
}

static void test_handler_writes_marker(void)
{
    char dir[] = "/tmp/px_crash_XXXXXX";
    PX_ASSERT(mkdtemp(dir) != NULL);
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, PX_CRASH_MARKER);

    PX_ASSERT_INT_EQ(die_in_child(dir, "abort"), SIGABRT); /* default action kept */
    PX_ASSERT_INT_EQ(die_in_child(dir, "segv"), SIGSEGV);
    PX_ASSERT_INT_EQ(die_in_child(dir, "left"), SIGABRT);
    PX_ASSERT_INT_EQ(die_in_child(dir, "none"), SIGABRT);
    char *text = read_file(path);
    PX_ASSERT(text != NULL);
    /* one appended line per crash, the innermost frame, unsafe characters replaced */
    char *lines[4];
    char *save = NULL;
    int n = 0;
    for (char *l = strtok_r(text, "\n", &save); l && n < 4; l = strtok_r(NULL, "\n", &save)) {
        lines[n++] = l;
    }
    PX_ASSERT_INT_EQ(n, 4);
    px_crash_record r;
    PX_ASSERT_INT_EQ(px_crash_parse_line(lines[0], &r), 0);
    PX_ASSERT_INT_EQ(r.signo, SIGABRT);
    PX_ASSERT_STR_EQ(r.call, "deliver");
    PX_ASSERT_STR_EQ(r.instance, "out");
    PX_ASSERT_INT_EQ(r.delivery_id, 42);
    PX_ASSERT_STR_EQ(r.event, "ev__1__");
    PX_ASSERT_INT_EQ(r.loop_thread, 1);
    PX_ASSERT(r.pid > 0 && r.at_ms > 1600000000000);
    PX_ASSERT_INT_EQ(px_crash_parse_line(lines[1], &r), 0);
    PX_ASSERT_INT_EQ(r.signo, SIGSEGV);
    PX_ASSERT_INT_EQ(px_crash_parse_line(lines[2], &r), 0);
    PX_ASSERT_STR_EQ(r.call, "timer"); /* the outer frame after the inner one left */
    PX_ASSERT_STR_EQ(r.instance, "src");
    PX_ASSERT_INT_EQ(r.delivery_id, 0);
    PX_ASSERT_INT_EQ(px_crash_parse_line(lines[3], &r), 0);
    PX_ASSERT_STR_EQ(r.call, "");
    char *why = px_crash_reason(&r);
    PX_ASSERT_STR_EQ(why, "crash: SIGABRT outside plugin calls");
    free(why);
    rm_rf(dir);
}

static void test_parse_line(void)
{
    px_crash_record r;
    PX_ASSERT_INT_EQ(px_crash_parse_line("crash v=1 signal=11 pid=7 at_ms=5 thread=other call=http "
                                         "instance=hook delivery=0 event= future=x\n", &r), 0);
    PX_ASSERT_INT_EQ(r.signo, 11);
    PX_ASSERT_INT_EQ(r.loop_thread, 0);
    PX_ASSERT_STR_EQ(r.call, "http");
    char *why = px_crash_reason(&r);
    PX_ASSERT_STR_EQ(why, "crash: SIGSEGV in http of instance hook");
    free(why);
    PX_ASSERT_INT_EQ(px_crash_parse_line("crash v=2 signal=11", &r), PX_EINVAL);
    PX_ASSERT_INT_EQ(px_crash_parse_line("crash v=1 pid=3", &r), PX_EINVAL);
    PX_ASSERT_INT_EQ(px_crash_parse_line("crash v=1 signal=x", &r), PX_EINVAL);
    PX_ASSERT_INT_EQ(px_crash_parse_line("crash v=1 signal=6 delivery=-4", &r), PX_EINVAL);
    PX_ASSERT_INT_EQ(px_crash_parse_line("crash v=1 signal=6 junk", &r), PX_EINVAL);
    PX_ASSERT_INT_EQ(px_crash_parse_line("", &r), PX_EINVAL);
}

static void on_put(int status, void *arg)
{
    *(int *)arg = status + 1;
}

static void note_unstored(const char *instance, void *arg)
{
    snprintf(arg, 32, "%s", instance);
}

static void test_recover_charges_spool(void)
{
    char dir[] = "/tmp/px_crash_XXXXXX";
    PX_ASSERT(mkdtemp(dir) != NULL);
    uv_loop_t loop;
    uv_loop_init(&loop);
    px_store *s = NULL;
    char err[256];
    PX_ASSERT_INT_EQ(px_store_open_sqlite(&loop, dir, NULL, &s, err, sizeof(err)), 0);
    px_store_event ev = {.id = "e1", .type = "t", .source = "src", .payload = "{}",
                         .payload_len = 2};
    px_store_row row = {.pipeline = "p", .sink = "out"};
    int done = 0;
    PX_ASSERT_INT_EQ(px_store_put(s, &ev, &row, 1, on_put, &done), 0);
    while (!done) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    PX_ASSERT_INT_EQ(done, 1);

    /* no marker: nothing to do */
    PX_ASSERT_INT_EQ(px_crash_recover(s, dir, 2, NULL, NULL), 0);
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, PX_CRASH_MARKER);
    FILE *f = fopen(path, "w");
    PX_ASSERT(f != NULL);
    fprintf(f, "crash v=1 signal=6 pid=1 at_ms=1 thread=loop call=deliver instance=out "
               "delivery=%lld event=e1\n", (long long)row.id);
    fprintf(f, "garbage\n");
    fprintf(f, "crash v=1 signal=11 pid=2 at_ms=2 thread=loop call=timer instance=src "
               "delivery=0 event=\n");
    fclose(f);
    PX_ASSERT_INT_EQ(px_crash_recover(s, dir, 2, NULL, NULL), 2);
    PX_ASSERT(access(path, F_OK) != 0); /* removed once handled */
    json_t *list = NULL;
    PX_ASSERT_INT_EQ(px_store_dlq_list(s, NULL, 0, 0, &list), 0);
    PX_ASSERT_INT_EQ(json_array_size(list), 0);
    json_decref(list);

    /* the second crash of the same delivery reaches max_crashes = 2 */
    f = fopen(path, "w");
    PX_ASSERT(f != NULL);
    fprintf(f, "crash v=1 signal=11 pid=3 at_ms=3 thread=loop call=deliver instance=out "
               "delivery=%lld event=e1\n", (long long)row.id);
    fclose(f);
    PX_ASSERT_INT_EQ(px_crash_recover(s, dir, 2, NULL, NULL), 1);
    PX_ASSERT_INT_EQ(px_store_dlq_list(s, NULL, 0, 0, &list), 0);
    PX_ASSERT_INT_EQ(json_array_size(list), 1);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(json_array_get(list, 0), "reason")),
                     "crashed the host 2 times; last: crash: SIGSEGV in deliver of instance out");
    json_decref(list);

    /* a delivery the spool does not hold (done, or tried before its commit) cannot be charged:
     * the instance is named to the caller instead */
    f = fopen(path, "w");
    PX_ASSERT(f != NULL);
    fprintf(f, "crash v=1 signal=11 pid=4 at_ms=4 thread=loop call=deliver instance=out "
               "delivery=%lld event=e1\n", (long long)row.id);
    fclose(f);
    char unstored[32] = "";
    PX_ASSERT_INT_EQ(px_crash_recover(s, dir, 2, note_unstored, unstored), 1);
    PX_ASSERT_STR_EQ(unstored, "out");
    PX_ASSERT(access(path, F_OK) != 0);
    px_store_close(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    PX_ASSERT_INT_EQ(uv_loop_close(&loop), 0);
    rm_rf(dir);
}

/* A callback is charged to the delivery its plugin was handling when it set the callback up:
 * that is the innermost frame's cause, and only when that frame is a call into the same
 * generation. */
static void test_cause_of_innermost_frame(void)
{
    int gen_a = 0, gen_b = 0; /* only their addresses matter */
    PX_ASSERT(px_crash_cause(&gen_a) == 0);
    PX_ASSERT_STR_EQ(px_crash_instance(), "");
    px_crash_frame outer, inner, plain;
    px_crash_enter(&outer, "deliver", "a", 7, "e7");
    PX_ASSERT(px_crash_cause(&gen_a) == 0); /* entered without a cause */
    px_crash_set_cause(&outer, &gen_a, 42);
    PX_ASSERT(px_crash_cause(&gen_a) == 42);
    PX_ASSERT(px_crash_cause(&gen_b) == 0);
    PX_ASSERT(px_crash_cause(NULL) == 0);
    /* a delivery to b inside a's call (a's complete pumping b's queue): b's own cause */
    px_crash_enter(&inner, "deliver", "b", 8, "e8");
    px_crash_set_cause(&inner, &gen_b, 43);
    PX_ASSERT(px_crash_cause(&gen_a) == 0);
    PX_ASSERT(px_crash_cause(&gen_b) == 43);
    PX_ASSERT_STR_EQ(px_crash_instance(), "b");
    px_crash_leave(&inner);
    PX_ASSERT(px_crash_cause(&gen_a) == 42);
    /* a frame entered again reuses nothing of an earlier use of its memory */
    px_crash_enter(&plain, "timer", "a", 0, NULL);
    PX_ASSERT(px_crash_cause(&gen_a) == 0);
    px_crash_leave(&plain);
    px_crash_leave(&outer);
    PX_ASSERT(px_crash_cause(&gen_a) == 0);
    PX_ASSERT_STR_EQ(px_crash_instance(), "");
}

/* Frames are per thread: a plugin's worker thread has no cause, whatever the loop is doing. */
static void *cause_on_thread(void *arg)
{
    *(uint64_t *)arg = px_crash_cause(&test_cause_of_innermost_frame) + 1;
    return NULL;
}

static void test_no_cause_on_other_threads(void)
{
    px_crash_frame f;
    px_crash_enter(&f, "deliver", "a", 7, "e7");
    px_crash_set_cause(&f, &test_cause_of_innermost_frame, 42);
    uint64_t seen = 0;
    pthread_t t;
    PX_ASSERT_INT_EQ(pthread_create(&t, NULL, cause_on_thread, &seen), 0);
    pthread_join(t, NULL);
    PX_ASSERT(seen == 1);
    PX_ASSERT(px_crash_cause(&test_cause_of_innermost_frame) == 42);
    px_crash_leave(&f);
}

PX_TEST_MAIN(PX_TEST(test_handler_writes_marker), PX_TEST(test_parse_line),
             PX_TEST(test_recover_charges_spool), PX_TEST(test_cause_of_innermost_frame),
             PX_TEST(test_no_cause_on_other_threads))
