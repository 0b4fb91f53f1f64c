/* Log tests: text leaving the process (dead-letter reasons, event metadata) is cleaned like log
 * lines: registered secrets masked, bytes that are not valid UTF-8 replaced. */
#include "../../host/log.c"

#include "test.h"

static void test_redact_secrets(void)
{
    px_log_clear_secrets();
    PX_ASSERT(px_log_redact("nothing to hide") == NULL);
    PX_ASSERT(px_log_redact(NULL) == NULL);
    PX_ASSERT(px_log_redact("") == NULL);
    px_log_add_secret("s3cr3t");
    px_log_add_secret("");
    char *out = px_log_redact("Bearer s3cr3t and s3cr3t again");
    PX_ASSERT_STR_EQ(out, "Bearer *** and *** again");
    free(out);
    PX_ASSERT(px_log_redact("s3cr") == NULL);
    px_log_clear_secrets();
    PX_ASSERT(px_log_redact("s3cr3t") == NULL);
}

static void test_redact_utf8(void)
{
    px_log_clear_secrets();
    PX_ASSERT(px_log_redact("Дизайн ok \xf0\x9f\x99\x82") == NULL); /* valid: untouched */
    char *out = px_log_redact("bad \x8d""In\x8a\x9d""lid");
    PX_ASSERT_STR_EQ(out, "bad ?In??lid");
    free(out);
    out = px_log_redact("overlong \xc0\xaf surrogate \xed\xa0\x80 cut \xe2\x82");
    PX_ASSERT_STR_EQ(out, "overlong ?? surrogate ??? cut ??");
    free(out);
    px_log_add_secret("k3y");
    out = px_log_redact("k3y \xff");
    PX_ASSERT_STR_EQ(out, "*** ?");
    free(out);
    px_log_clear_secrets();
}

PX_TEST_MAIN(PX_TEST(test_redact_secrets), PX_TEST(test_redact_utf8))
