/* State store tests: set/get/overwrite/delete, persistence across reopen, isolation between
 * instances, and sharing the database file with the spool in either opening order. */
#define _XOPEN_SOURCE 700
#include "../../host/store/keyset.c"
#include "../../host/store/spool.c"
#include "../../host/store/state.c"

#include <ftw.h>
#include <unistd.h>

#include "test.h"

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int mk_tmp(char *dir, size_t len)
{
    snprintf(dir, len, "/tmp/px_state_XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static void test_set_get_overwrite_delete(void)
{
    char dir[64];
    PX_ASSERT_INT_EQ(mk_tmp(dir, sizeof(dir)), 0);
    px_state *st = NULL;
    PX_ASSERT_INT_EQ(px_state_open(dir, &st), 0);
    PX_ASSERT(px_state_get(st, "amo", "token") == NULL);

    json_t *v = json_pack("{s:s,s:i}", "access", "abc", "expires", 3600);
    PX_ASSERT_INT_EQ(px_state_set(st, "amo", "token", v), 0);
    json_decref(v);
    json_t *got = px_state_get(st, "amo", "token");
    PX_ASSERT(got != NULL);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(got, "access")), "abc");
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(got, "expires")), 3600);
    json_decref(got);

    /* overwrite with a non-object value */
    v = json_string("rotated");
    PX_ASSERT_INT_EQ(px_state_set(st, "amo", "token", v), 0);
    json_decref(v);
    got = px_state_get(st, "amo", "token");
    PX_ASSERT_STR_EQ(json_string_value(got), "rotated");
    json_decref(got);

    v = json_integer(7);
    PX_ASSERT_INT_EQ(px_state_set(st, "amo", "count", v), 0);
    json_decref(v);

    /* delete */
    PX_ASSERT_INT_EQ(px_state_set(st, "amo", "token", NULL), 0);
    PX_ASSERT(px_state_get(st, "amo", "token") == NULL);
    PX_ASSERT_INT_EQ(px_state_set(st, "amo", "missing", NULL), 0); /* deleting nothing is fine */
    got = px_state_get(st, "amo", "count");
    PX_ASSERT_INT_EQ(json_integer_value(got), 7);
    json_decref(got);

    PX_ASSERT_INT_EQ(px_state_set(st, NULL, "k", NULL), PX_EINVAL);
    PX_ASSERT(px_state_get(st, "amo", NULL) == NULL);
    px_state_close(st);
    px_state_close(NULL);
    rm_rf(dir);
}

static void test_persists_and_isolated(void)
{
    char dir[64];
    PX_ASSERT_INT_EQ(mk_tmp(dir, sizeof(dir)), 0);
    char sub[96];
    snprintf(sub, sizeof(sub), "%s/nested/var", dir); /* created when missing */
    px_state *st = NULL;
    PX_ASSERT_INT_EQ(px_state_open(sub, &st), 0);
    json_t *a = json_pack("[i,i]", 1, 2), *b = json_true();
    PX_ASSERT_INT_EQ(px_state_set(st, "one", "k", a), 0);
    PX_ASSERT_INT_EQ(px_state_set(st, "two", "k", b), 0);
    json_decref(a);
    json_decref(b);
    px_state_close(st);

    st = NULL;
    PX_ASSERT_INT_EQ(px_state_open(sub, &st), 0);
    json_t *g1 = px_state_get(st, "one", "k"), *g2 = px_state_get(st, "two", "k");
    PX_ASSERT(json_is_array(g1) && json_array_size(g1) == 2);
    PX_ASSERT(json_is_true(g2));
    json_decref(g1);
    json_decref(g2);
    PX_ASSERT_INT_EQ(px_state_set(st, "one", "k", NULL), 0);
    g2 = px_state_get(st, "two", "k");
    PX_ASSERT(json_is_true(g2)); /* deleting one instance's key leaves the other's */
    json_decref(g2);
    PX_ASSERT(px_state_get(st, "three", "k") == NULL);
    px_state_close(st);
    rm_rf(dir);
}

/* The spool and the state store share spool.db: opening in either order works and neither
 * disturbs the other's data. */
static void test_shares_file_with_spool(void)
{
    char dir[64];
    PX_ASSERT_INT_EQ(mk_tmp(dir, sizeof(dir)), 0);
    px_state *st = NULL;
    PX_ASSERT_INT_EQ(px_state_open(dir, &st), 0);
    json_t *v = json_string("before");
    PX_ASSERT_INT_EQ(px_state_set(st, "x", "k", v), 0);
    json_decref(v);

    uv_loop_t loop;
    uv_loop_init(&loop);
    px_spool *sp = NULL;
    char err[256] = "";
    PX_ASSERT_INT_EQ(px_spool_open(&loop, dir, NULL, &sp, err, sizeof(err)), 0);
    v = json_string("during");
    PX_ASSERT_INT_EQ(px_state_set(st, "x", "k2", v), 0);
    json_decref(v);
    px_spool_close(sp);
    uv_run(&loop, UV_RUN_DEFAULT);
    px_state_close(st);

    /* spool first, then state */
    sp = NULL;
    PX_ASSERT_INT_EQ(px_spool_open(&loop, dir, NULL, &sp, err, sizeof(err)), 0);
    st = NULL;
    PX_ASSERT_INT_EQ(px_state_open(dir, &st), 0);
    json_t *g = px_state_get(st, "x", "k");
    PX_ASSERT_STR_EQ(json_string_value(g), "before");
    json_decref(g);
    g = px_state_get(st, "x", "k2");
    PX_ASSERT_STR_EQ(json_string_value(g), "during");
    json_decref(g);
    px_state_close(st);
    px_spool_close(sp);
    uv_run(&loop, UV_RUN_DEFAULT);
    PX_ASSERT_INT_EQ(uv_loop_close(&loop), 0);
    rm_rf(dir);
}

PX_TEST_MAIN(PX_TEST(test_set_get_overwrite_delete), PX_TEST(test_persists_and_isolated),
             PX_TEST(test_shares_file_with_spool))
