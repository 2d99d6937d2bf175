/* SPDX-License-Identifier: MIT */
/* include/uslab.h compiles alone, first and only, in strict C11 (built with
 * -pedantic-errors -Werror); its macros expand to valid code. */
#include "uslab.h"

struct item {
	long key;
	char name[12];
};

USLAB_DEFINE_TYPED(item, item_cache)

int main(void)
{
	item_cache = USLAB_CACHE(item, USLAB_NOMAGAZINE);
	if (item_cache == NULL)
		return 1;
	struct item *it = item_alloc();
	if (it == NULL)
		return 1;
	it->key = 1;
	item_free(it);
	return uslab_cache_destroy(item_cache) == 0 ? 0 : 1;
}
