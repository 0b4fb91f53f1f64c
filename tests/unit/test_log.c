/* Log tests: text the host prints besides the log (dead-letter reasons, status) is cleaned like
 * log lines: registered secrets masked, bytes that are not valid UTF-8 replaced; a plugin's last
 * error line is captured while the host waits for its init. */
#include "../../host/base/log.c"

#include <unistd.h>

#include "test.h"

static void test_redact_secrets(void)
{
    px_log_clear_secrets();
    PX_ASSERT(px_log_redact("nothing to hide") == NULL);
    PX_ASSERT(px_log_redact(NULL) == NULL);
    PX_ASSERT(px_log_redact("") == NULL);
    px_log_add_secret("s3cr3t-value");
    px_log_add_secret("");
    char *out = px_log_redact("Bearer s3cr3t-value and s3cr3t-value again");
    PX_ASSERT_STR_EQ(out, "Bearer *** and *** again");
    free(out);
    PX_ASSERT(px_log_redact("s3cr3t-val") == NULL);
    px_log_clear_secrets();
    PX_ASSERT(px_log_redact("s3cr3t-value") == NULL);
}

/* A value shorter than PX_SECRET_MIN_LEN is not registered: it would mask the same letters in
 * unrelated text ("MessageId" under a one-letter secret). */
static void test_short_secret_masks_nothing(void)
{
    px_log_clear_secrets();
    px_log_add_secret("s");
    px_log_add_secret("guest");
    px_log_add_secret("1234567");
    PX_ASSERT(px_log_redact("MessageId guest 1234567") == NULL);
    px_log_add_secret("12345678");
    char *out = px_log_redact("MessageId guest 12345678");
    PX_ASSERT_STR_EQ(out, "MessageId guest ***");
    free(out);
    px_log_clear_secrets();
}

static void test_redact_json_values(void)
{
    px_log_clear_secrets();
    px_log_add_secret("tok-5ecret");
    json_t *j = json_pack("{s:s, s:[s, i, {s:s}], s:s}", "a", "Bearer tok-5ecret", "list",
                          "tok-5ecret", 7, "tok-5ecret-key", "x tok-5ecret", "plain", "nothing");
    px_log_redact_json(j);
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    /* values masked, keys kept */
    PX_ASSERT_STR_EQ(text, "{\"a\":\"Bearer ***\",\"list\":[\"***\",7,{\"tok-5ecret-key\":\"x ***\"}],"
                           "\"plain\":\"nothing\"}");
    free(text);
    json_decref(j);
    px_log_clear_secrets();
}

/* Runs fn with stderr sent to a temporary file, so that the test output stays readable. */
static void quietly(void (*fn)(void))
{
    char path[] = "/tmp/px_test_log_XXXXXX";
    int fd = mkstemp(path);
    PX_ASSERT(fd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fd);
    unlink(path);
}

static char *captured[3];

static void log_during_capture(void)
{
    px_log_add_secret("c4pture-secret");
    px_log_capture_begin("out");
    PX_LOG_ERR("out", "first error");
    PX_LOG_ERR("out", "cannot open path=/x: Not a directory key=%s", "c4pture-secret");
    PX_LOG_WARN("out", "a warning is not a reason");
    PX_LOG_ERR("other", "another instance's error");
    captured[0] = px_log_capture_end();
    PX_LOG_ERR("out", "after the capture");
    px_log_capture_begin("out");
    PX_LOG_INFO("out", "nothing wrong");
    captured[1] = px_log_capture_end();
    captured[2] = px_log_capture_end(); /* no capture running */
    px_log_clear_secrets();
}

static void test_capture_keeps_the_last_error_of_the_module(void)
{
    quietly(log_during_capture);
    PX_ASSERT_STR_EQ(captured[0], "cannot open path=/x: Not a directory key=***");
    PX_ASSERT(captured[1] == NULL);
    PX_ASSERT(captured[2] == NULL);
    free(captured[0]);
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
    px_log_add_secret("k3y-k3y-k3y");
    out = px_log_redact("k3y-k3y-k3y \xff");
    PX_ASSERT_STR_EQ(out, "*** ?");
    free(out);
    px_log_clear_secrets();
}

PX_TEST_MAIN(PX_TEST(test_redact_secrets), PX_TEST(test_short_secret_masks_nothing),
             PX_TEST(test_redact_json_values), PX_TEST(test_redact_utf8),
             PX_TEST(test_capture_keeps_the_last_error_of_the_module))
