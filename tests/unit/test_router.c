#include "test.h"
static void test_placeholder(void) { PX_ASSERT(1); }
PX_TEST_MAIN(PX_TEST(test_placeholder))
