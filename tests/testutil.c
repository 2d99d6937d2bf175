/* SPDX-License-Identifier: MIT */
/* The main() shared by every Check test program. */
#include <stdlib.h>

#include "testutil.h"

int main(void)
{
	SRunner *sr = srunner_create(NULL);

	for (size_t i = 0; test_suites[i] != NULL; i++)
		srunner_add_suite(sr, test_suites[i]());
	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
