/* SPDX-License-Identifier: MIT */
/* include/uslab.h compiles alone as C++ (extern "C", no C-only syntax
 * outside the C macros), built with -pedantic-errors -Werror. */
#include "uslab.h"

int main()
{
	const char *mode = uslab_mode();
	struct uslab_cache_conf conf = {};
	conf.flags = USLAB_NOMAGAZINE;
	struct uslab_cache *c = uslab_cache_create("cxx", 16, &conf);
	if (mode == nullptr || c == nullptr)
		return 1;
	return uslab_cache_destroy(c) == 0 ? 0 : 1;
}
