/* Minimal unit-test kit: cases are `static void test_<what>(void)` listed in a table;
 * PX_ASSERT* report file:line and mark the case failed, then return from it. A case that cannot
 * run on this machine calls PX_SKIP("why"): it is counted as skipped, never as passed. */
#ifndef PX_TEST_H
#define PX_TEST_H

#include <stdio.h>
#include <string.h>

static int px_test_failed;
static const char *px_test_skipped; /* why the current case was skipped, or NULL */

/* Ends the current case as skipped, with a reason (a string literal). */
#define PX_SKIP(why)                                                                          \
    do {                                                                                      \
        px_test_skipped = (why);                                                              \
        return;                                                                               \
    } while (0)

#define PX_ASSERT(c)                                                                          \
    do {                                                                                      \
        if (!(c)) {                                                                           \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #c);         \
            px_test_failed = 1;                                                               \
            return;                                                                           \
        }                                                                                     \
    } while (0)

#define PX_ASSERT_INT_EQ(a, b)                                                                \
    do {                                                                                      \
        long long a_ = (long long)(a), b_ = (long long)(b);                                   \
        if (a_ != b_) {                                                                       \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a,  \
                    #b, a_, b_);                                                              \
            px_test_failed = 1;                                                               \
            return;                                                                           \
        }                                                                                     \
    } while (0)

#define PX_ASSERT_STR_EQ(a, b)                                                                \
    do {                                                                                      \
        const char *a_ = (a), *b_ = (b);                                                      \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                              \
            fprintf(stderr, "%s:%d: %s == %s failed:\n  got:      %s\n  expected: %s\n",      \
                    __FILE__, __LINE__, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");      \
            px_test_failed = 1;                                                               \
            return;                                                                           \
        }                                                                                     \
    } while (0)

/* Asserts that string a contains b. */
#define PX_ASSERT_STR_HAS(a, b)                                                               \
    do {                                                                                      \
        const char *a_ = (a), *b_ = (b);                                                      \
        if (!a_ || !strstr(a_, b_)) {                                                         \
            fprintf(stderr, "%s:%d: %s does not contain %s:\n  got: %s\n", __FILE__, __LINE__, \
                    #a, #b, a_ ? a_ : "(null)");                                              \
            px_test_failed = 1;                                                               \
            return;                                                                           \
        }                                                                                     \
    } while (0)

typedef struct px_test_case {
    const char *name;
    void (*fn)(void);
} px_test_case;

#define PX_TEST(fn) {#fn, fn}

/* Runs every case (or only those named in argv), prints one line per case and the closing
 * "N passed, N failed, N skipped", returns the exit status for meson: 0 when none failed. */
static inline int px_test_run(const px_test_case *cases, size_t n, int argc, char **argv)
{
    int failed = 0, passed = 0, skipped = 0;
    for (size_t i = 0; i < n; i++) {
        if (argc > 1) {
            int want = 0;
            for (int a = 1; a < argc; a++) {
                want |= strcmp(argv[a], cases[i].name) == 0;
            }
            if (!want) {
                continue;
            }
        }
        px_test_failed = 0;
        px_test_skipped = NULL;
        cases[i].fn();
        if (px_test_failed) {
            printf("FAIL %s\n", cases[i].name);
            failed++;
        } else if (px_test_skipped) {
            printf("skip %s: %s\n", cases[i].name, px_test_skipped);
            skipped++;
        } else {
            printf("ok   %s\n", cases[i].name);
            passed++;
        }
        fflush(stdout);
    }
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}

#define PX_TEST_MAIN(...)                                                                     \
    int main(int argc, char **argv)                                                           \
    {                                                                                         \
        static const px_test_case cases_[] = {__VA_ARGS__};                                   \
        return px_test_run(cases_, sizeof(cases_) / sizeof(cases_[0]), argc, argv);           \
    }

#endif
