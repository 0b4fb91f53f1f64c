/* Retry-After values and HTTP dates (see retry_after.h). */
#include "retry_after.h"

#include <ctype.h>
#include <string.h>
#include <time.h>

static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

static const char *skip_blanks(const char *p)
{
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    return p;
}

/* Reads exactly n digits at *p into *out. */
static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i])) {
            return 0;
        }
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 1;
}

static int month(const char **p, int *out)
{
    for (int i = 0; i < 12; i++) {
        if (strncmp(*p, months[i], 3) == 0) {
            *p += 3;
            *out = i;
            return 1;
        }
    }
    return 0;
}

static int expect(const char **p, char c)
{
    if (**p != c) {
        return 0;
    }
    (*p)++;
    return 1;
}

/* "HH:MM:SS" */
static int clock_time(const char **p, struct tm *tm)
{
    return digits(p, 2, &tm->tm_hour) && expect(p, ':') && digits(p, 2, &tm->tm_min) &&
           expect(p, ':') && digits(p, 2, &tm->tm_sec) && tm->tm_hour < 24 && tm->tm_min < 60 &&
           tm->tm_sec <= 60;
}

/* After the weekday: " 06 Nov 1994 08:49:37 GMT" (IMF-fixdate), " 06-Nov-94 08:49:37 GMT"
 * (RFC 850), or " Nov  6 08:49:37 1994" (asctime). */
static int rest_of_date(const char *p, int comma, struct tm *tm)
{
    int day = 0, year = 0;
    if (comma && expect(&p, ' ') && digits(&p, 2, &day)) {
        if (*p == ' ') { /* IMF-fixdate */
            p++;
            if (!month(&p, &tm->tm_mon) || !expect(&p, ' ') || !digits(&p, 4, &year)) {
                return 0;
            }
        } else { /* RFC 850: two-digit year, read as the nearest century (RFC 9110 says within
                    50 years of now; dates of interest here are near). */
            if (!expect(&p, '-') || !month(&p, &tm->tm_mon) || !expect(&p, '-') ||
                !digits(&p, 2, &year)) {
                return 0;
            }
            year += year < 70 ? 2000 : 1900;
        }
        if (!expect(&p, ' ') || !clock_time(&p, tm) || strncmp(p, " GMT", 4) != 0) {
            return 0;
        }
        p += 4;
    } else if (!comma && expect(&p, ' ') && month(&p, &tm->tm_mon) && expect(&p, ' ')) {
        if (*p == ' ') {
            p++;
            if (!digits(&p, 1, &day)) {
                return 0;
            }
        } else if (!digits(&p, 2, &day)) {
            return 0;
        }
        if (!expect(&p, ' ') || !clock_time(&p, tm) || !expect(&p, ' ') || !digits(&p, 4, &year)) {
            return 0;
        }
    } else {
        return 0;
    }
    if (*skip_blanks(p) != '\0' || day < 1 || day > 31) {
        return 0;
    }
    tm->tm_mday = day;
    tm->tm_year = year - 1900;
    return 1;
}

int64_t px_http_date_ms(const char *value)
{
    if (!value) {
        return -1;
    }
    const char *p = skip_blanks(value);
    const char *w = p;
    while (isalpha((unsigned char)*p)) {
        p++;
    }
    if (p - w < 3) {
        return -1;
    }
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    int comma = *p == ',';
    if (!rest_of_date(comma ? p + 1 : p, comma, &tm)) {
        return -1;
    }
    time_t t = timegm(&tm);
    if (t == (time_t)-1) {
        return -1;
    }
    return (int64_t)t * 1000;
}

int64_t px_retry_after_ms(const char *value, int64_t now_ms)
{
    if (!value) {
        return -1;
    }
    const char *p = skip_blanks(value);
    if (isdigit((unsigned char)*p)) {
        int64_t s = 0;
        while (isdigit((unsigned char)*p)) {
            if (s < PX_RETRY_AFTER_MAX_MS / 1000) {
                s = s * 10 + (*p - '0');
            }
            p++;
        }
        if (*skip_blanks(p) != '\0') {
            return -1;
        }
        int64_t ms = s * 1000;
        return ms > PX_RETRY_AFTER_MAX_MS ? PX_RETRY_AFTER_MAX_MS : ms;
    }
    int64_t at = px_http_date_ms(p);
    if (at < 0) {
        return -1;
    }
    int64_t ms = at - now_ms;
    return ms < 0 ? 0 : ms > PX_RETRY_AFTER_MAX_MS ? PX_RETRY_AFTER_MAX_MS : ms;
}
