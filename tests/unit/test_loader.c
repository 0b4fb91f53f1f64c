/* Loader: every ABI refusal gives one line naming the file and both versions; a good plugin
 * loads; PX_HAS reads only what a struct's size covers. */
#include "../../host/runtime/loader.c"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"

static px_host_api api = {.abi_major = PX_SDK_ABI_MAJOR, .abi_minor = PX_SDK_ABI_MINOR,
                          .size = sizeof(px_host_api)};

static char *fixture(const char *name)
{
    return px_xasprintf("%s/%s.so", PX_TEST_PLUGIN_DIR, name);
}

/* Loads fixture `name` expecting refusal rc with a message containing every needle. */
static int refused(const char *name, int rc_want, const char *n1, const char *n2, const char *n3)
{
    char *file = fixture(name);
    char err[512] = "";
    px_plugin_lib *lib = NULL;
    int rc = px_loader_open(file, NULL, &api, PX_TRUST_STRICT, &lib, err, sizeof(err));
    int ok = rc == rc_want && lib == NULL && strstr(err, file) && strchr(err, '\n') == NULL &&
             (!n1 || strstr(err, n1)) && (!n2 || strstr(err, n2)) && (!n3 || strstr(err, n3));
    if (!ok) {
        fprintf(stderr, "  %s: rc=%d err=%s\n", name, rc, err);
    }
    free(file);
    return ok;
}

static void test_loads_good_plugin(void)
{
    char *file = fixture("abi_ok");
    char err[512] = "";
    px_plugin_lib *lib = NULL;
    int rc = px_loader_open(file, NULL, &api, PX_TRUST_STRICT, &lib, err, sizeof(err));
    free(file);
    PX_ASSERT_INT_EQ(rc, 0);
    PX_ASSERT(lib != NULL);
    PX_ASSERT_STR_EQ(lib->desc->name, "abi_ok");
    PX_ASSERT_INT_EQ(lib->desc->abi_major, PX_SDK_ABI_MAJOR);
    px_loader_close(lib);
}

static void test_refuses_other_major_symbol(void)
{
    PX_ASSERT(refused("abi_wrong_major", PX_EABI, "built for plugin ABI 2.x", "host speaks ABI 1.2",
                      NULL));
}

static void test_refuses_other_major_field(void)
{
    PX_ASSERT(refused("abi_major_field", PX_EABI, "built for plugin ABI 2.",
                      "host speaks ABI 1.2", NULL));
}

static void test_refuses_newer_minor(void)
{
    PX_ASSERT(refused("abi_newer_minor", PX_EABI, "built for plugin ABI 1.3",
                      "newer than this host's ABI 1.2", NULL));
}

static void test_refuses_small_struct(void)
{
    PX_ASSERT(refused("abi_small_struct", PX_EABI, "descriptor is 24 bytes", "needs at least",
                      "ABI 1.2"));
}

static void test_refuses_other_jansson(void)
{
    PX_ASSERT(refused("abi_bad_jansson", PX_EABI, "built with jansson 3.x",
                      "this host uses jansson 2.x", "plugin ABI 1.2"));
}

static void test_refuses_wrong_name(void)
{
    PX_ASSERT(refused("abi_wrong_name", PX_EPLUGIN, "names itself \"something_else\"",
                      "expected \"abi_wrong_name\"", NULL));
}

static void test_refuses_missing_entry(void)
{
    PX_ASSERT(refused("abi_no_entry", PX_EABI, "no entry symbol px_plugin_entry_v1",
                      "host ABI 1.2", NULL));
}

static void test_refuses_missing_callback(void)
{
    PX_ASSERT(refused("abi_no_init", PX_EPLUGIN, "lacks the mandatory callback init", NULL,
                      NULL));
    PX_ASSERT(refused("abi_no_destroy", PX_EPLUGIN, "lacks the mandatory callback destroy",
                      NULL, NULL));
}

/* Loads fixture name with table h; returns the library (owned) or NULL, err filled. */
static px_plugin_lib *load_with(const px_host_api *h, const char *name, char *err, size_t len)
{
    char *file = fixture(name);
    px_plugin_lib *lib = NULL;
    err[0] = '\0';
    if (px_loader_open(file, NULL, h, PX_TRUST_STRICT, &lib, err, len) < 0) {
        lib = NULL;
    }
    free(file);
    return lib;
}

/* Plugins built as 1.0 and 1.1 (the 1.0 descriptor, without option_size: what lies past their
 * size is garbage) load, and their options are read by the 1.0 px_option. */
static void test_loads_1_0_and_1_1_plugins(void)
{
    const char *names[] = {"abi_v10", "abi_v11"};
    for (unsigned minor = 0; minor < 2; minor++) {
        char err[512];
        px_plugin_lib *lib = load_with(&api, names[minor], err, sizeof(err));
        if (!lib) {
            fprintf(stderr, "  %s: %s\n", names[minor], err);
        }
        PX_ASSERT(lib != NULL);
        PX_ASSERT_INT_EQ(lib->desc->abi_minor, minor);
        PX_ASSERT_INT_EQ(lib->desc->size, PX_PLUGIN_DESC_V1_0_SIZE);
        PX_ASSERT(!PX_HAS(px_plugin_desc, lib->desc, option_size));
        PX_ASSERT_STR_EQ(lib->options[0].name, "first");
        PX_ASSERT_STR_EQ(lib->options[1].name, "second");
        PX_ASSERT_STR_EQ(lib->options[1].default_value, "2");
        PX_ASSERT(lib->options[2].name == NULL);
        px_loader_close(lib);
    }
}

/* A plugin whose px_option is larger than this host's (a later minor's, declaring an older
 * minor it needs) is walked by its option_size; a size smaller than 1.0's is refused. */
static void test_walks_options_by_option_size(void)
{
    char err[512];
    px_plugin_lib *lib = load_with(&api, "abi_big_options", err, sizeof(err));
    PX_ASSERT(lib != NULL);
    PX_ASSERT(lib->desc->option_size > sizeof(px_option));
    PX_ASSERT_STR_EQ(lib->options[0].name, "first");
    PX_ASSERT_STR_EQ(lib->options[0].doc, "the first option");
    PX_ASSERT_STR_EQ(lib->options[1].name, "second");
    PX_ASSERT_INT_EQ(lib->options[1].type, PX_OPT_INT);
    PX_ASSERT(lib->options[2].name == NULL);
    px_loader_close(lib);
    PX_ASSERT(refused("abi_bad_option_size", PX_EABI, "option_size is 3 bytes", "at least",
                      NULL));
}

/* A host of ABI 1.1 (its table ends at event_payload_text) refuses a plugin built for 1.2 that
 * calls kv_cas, with one line naming both versions, before any of its code but the entry runs;
 * the 1.0 and 1.1 plugins load there. */
static void test_host_1_1_refuses_a_1_2_plugin(void)
{
    px_host_api api11 = {.abi_major = 1, .abi_minor = 1,
                         .size = (uint32_t)offsetof(px_host_api, set_error)};
    PX_ASSERT(!PX_HAS(px_host_api, &api11, kv_cas));
    char err[512];
    px_plugin_lib *lib = load_with(&api11, "abi_needs_cas", err, sizeof(err));
    PX_ASSERT(lib == NULL);
    PX_ASSERT_STR_HAS(err, "abi_needs_cas.so: built for plugin ABI 1.2, newer than this host's "
                           "ABI 1.1; upgrade the host");
    PX_ASSERT(strchr(err, '\n') == NULL);
    lib = load_with(&api11, "abi_v11", err, sizeof(err));
    PX_ASSERT(lib != NULL);
    px_loader_close(lib);
    lib = load_with(&api11, "abi_v10", err, sizeof(err));
    PX_ASSERT(lib != NULL);
    px_loader_close(lib);
}

static void test_refuses_unloadable_file(void)
{
    char dir[] = "/tmp/px-loader-XXXXXX"; /* /tmp itself is writable by everyone */
    PX_ASSERT(mkdtemp(dir) != NULL);
    char *path = px_xasprintf("%s/x.so", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    PX_ASSERT(fd >= 0);
    PX_ASSERT(write(fd, "not an ELF file", 15) == 15);
    close(fd);
    char err[512] = "";
    px_plugin_lib *lib = NULL;
    int rc = px_loader_open(path, "x", &api, PX_TRUST_STRICT, &lib, err, sizeof(err));
    unlink(path);
    rmdir(dir);
    PX_ASSERT_INT_EQ(rc, PX_EPLUGIN);
    PX_ASSERT_STR_HAS(err, "cannot load");
    PX_ASSERT_STR_HAS(err, path);
    free(path);
}

/* A copy of fixture abi_ok in a new private folder dir (a mkdtemp template); stores the file in
 * *file (owned by caller). */
static void private_copy_of_ok(char *dir, char **file)
{
    PX_ASSERT(mkdtemp(dir) != NULL);
    char *src = fixture("abi_ok");
    char *dst = px_xasprintf("%s/abi_ok.so", dir);
    int in = open(src, O_RDONLY), out = open(dst, O_WRONLY | O_CREAT | O_EXCL, 0755);
    PX_ASSERT(in >= 0 && out >= 0);
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof(buf))) > 0) {
        PX_ASSERT(write(out, buf, (size_t)n) == n);
    }
    close(in);
    close(out);
    free(src);
    *file = dst;
}

/* A file or folder anyone may write is refused before dlopen, with the fix in the line;
 * permissive trust loads it and hands the refusal back as a warning. */
static void test_trust_refuses_writable_file_and_folder(void)
{
    char dir[] = "/tmp/px-trust-XXXXXX";
    char *file = NULL;
    private_copy_of_ok(dir, &file);
    PX_ASSERT(file != NULL);
    char err[768] = "";
    px_plugin_lib *lib = NULL;
    PX_ASSERT_INT_EQ(px_loader_open(file, NULL, &api, PX_TRUST_STRICT, &lib, err, sizeof(err)), 0);
    PX_ASSERT_STR_EQ(err, "");
    px_loader_close(lib);
    lib = NULL;

    PX_ASSERT(chmod(file, 0777) == 0);
    PX_ASSERT_INT_EQ(px_loader_open(file, NULL, &api, PX_TRUST_STRICT, &lib, err, sizeof(err)),
                     PX_EPLUGIN);
    PX_ASSERT(lib == NULL);
    PX_ASSERT_STR_HAS(err, file);
    PX_ASSERT_STR_HAS(err, "writable by everyone (mode 0777)");
    PX_ASSERT_STR_HAS(err, "fix: chmod go-w");
    PX_ASSERT(strchr(err, '\n') == NULL);

    PX_ASSERT_INT_EQ(px_loader_open(file, NULL, &api, PX_TRUST_PERMISSIVE, &lib, err,
                                    sizeof(err)), 0);
    PX_ASSERT(lib != NULL);
    PX_ASSERT(strncmp(err, "warning: plugin ", 16) == 0);
    px_loader_close(lib);
    lib = NULL;

    PX_ASSERT(chmod(file, 0755) == 0 && chmod(dir, 0777) == 0);
    PX_ASSERT_INT_EQ(px_loader_open(file, NULL, &api, PX_TRUST_STRICT, &lib, err, sizeof(err)),
                     PX_EPLUGIN);
    PX_ASSERT_STR_HAS(err, "plugin folder");
    PX_ASSERT_STR_HAS(err, "writable by everyone");

    if (geteuid() == 0) { /* only root can give a file away */
        PX_ASSERT(chmod(dir, 0700) == 0 && chown(file, 65534, (gid_t)-1) == 0);
        PX_ASSERT_INT_EQ(px_loader_open(file, NULL, &api, PX_TRUST_STRICT, &lib, err,
                                        sizeof(err)), PX_EPLUGIN);
        PX_ASSERT_STR_HAS(err, "owned by uid 65534");
    }
    unlink(file);
    rmdir(dir);
    free(file);
}

static void test_find_on_path(void)
{
    char *dirs[] = {"/nonexistent-dir", PX_TEST_PLUGIN_DIR};
    char *file = NULL;
    PX_ASSERT_INT_EQ(px_loader_find(dirs, 2, "testsink", &file), 0);
    PX_ASSERT_STR_HAS(file, "/testsink.so");
    free(file);
    PX_ASSERT_INT_EQ(px_loader_find(dirs, 2, "nope", &file), PX_ENOTFOUND);
}

static int scanned, scanned_refused;

static void on_scan(const char *file, const px_plugin_lib *lib, const char *err, void *arg)
{
    (void)file, (void)arg;
    if (lib) {
        scanned++;
    } else if (err) {
        scanned_refused++;
    }
}

static void test_scan_lists_and_refuses(void)
{
    char *dirs[] = {PX_TEST_PLUGIN_DIR};
    scanned = scanned_refused = 0;
    px_loader_scan(dirs, 1, &api, PX_TRUST_STRICT, on_scan, NULL);
    PX_ASSERT(scanned >= 3);          /* abi_ok, abi_init_fails, testsink, testsource */
    PX_ASSERT(scanned_refused >= 9);  /* every broken fixture */
}

/* A host built with a 1.0 table must look like "no field" to a plugin asking for a later one. */
typedef struct host_v11 {
    px_host_api v10;
    void (*later)(void);
} host_v11;

static void test_px_has_respects_size(void)
{
    host_v11 h = {0};
    h.v10.size = sizeof(px_host_api);
    const host_v11 *p = &h;
    PX_ASSERT(!PX_HAS(host_v11, &p->v10, later));
    PX_ASSERT(PX_HAS(px_host_api, &p->v10, drained));
    h.v10.size = sizeof(host_v11);
    PX_ASSERT(PX_HAS(host_v11, &p->v10, later));
    px_plugin_desc d = {PX_PLUGIN_DESC_INIT};
    PX_ASSERT(PX_HAS(px_plugin_desc, &d, import_state));
    d.size = (uint32_t)offsetof(px_plugin_desc, destroy);
    PX_ASSERT(!PX_HAS(px_plugin_desc, &d, destroy));
}

PX_TEST_MAIN(PX_TEST(test_loads_good_plugin), PX_TEST(test_refuses_other_major_symbol),
             PX_TEST(test_refuses_other_major_field), PX_TEST(test_refuses_newer_minor),
             PX_TEST(test_refuses_small_struct), PX_TEST(test_refuses_other_jansson),
             PX_TEST(test_refuses_wrong_name), PX_TEST(test_refuses_missing_entry),
             PX_TEST(test_refuses_missing_callback), PX_TEST(test_loads_1_0_and_1_1_plugins),
             PX_TEST(test_walks_options_by_option_size),
             PX_TEST(test_host_1_1_refuses_a_1_2_plugin), PX_TEST(test_refuses_unloadable_file),
             PX_TEST(test_trust_refuses_writable_file_and_folder),
             PX_TEST(test_find_on_path), PX_TEST(test_scan_lists_and_refuses),
             PX_TEST(test_px_has_respects_size))
