/*
 * Unit tests of what the monitor keeps per generation (src/monitor.c):
 * monitor_forget drops the generations no pipeline runs any more, so that
 * its fixed tables (lag numbers, last errors recorded, events/s) keep room
 * for the new generations of rebuild after rebuild.
 */
#include <stdbool.h>
#include <string.h>

#include <criterion/criterion.h>

#include "esbridge/monitor.h"
#include "esbridge/projection.h"

#include "support.h"

#define SLOTS 128 /* the monitor's MAX_GENS */

/* An entry as the monitor's tables have them: the generation first. */
struct entry {
	struct monitor_gen key;
	long value;
};

static const struct projection *products, *orders;

static void setup(void)
{
	products = projection_find("products");
	orders = projection_find("orders");
	cr_assert(products && orders && products != orders);
}

TestSuite(monitor, .init = setup, .fini = test_leak_check);

Test(monitor, forget_keeps_the_live_in_order)
{
	struct entry t[] = {
		{ { products, 1 }, 10 }, { { orders, 1 }, 11 }, { { products, 2 }, 12 },
		{ { orders, 2 }, 13 },   { { products, 3 }, 14 },
	};
	const struct monitor_gen live[] = { { products, 3 }, { orders, 1 }, { products, 2 }, { orders, 9 } };
	int n = monitor_forget(t, sizeof(t[0]), 5, live, 4);

	cr_assert_eq(n, 3);
	cr_assert(t[0].key.proj == orders && t[0].key.gen == 1 && t[0].value == 11);
	cr_assert(t[1].key.proj == products && t[1].key.gen == 2 && t[1].value == 12);
	cr_assert(t[2].key.proj == products && t[2].key.gen == 3 && t[2].value == 14);
	/* the same generation number of another projection is another generation */
	cr_assert_eq(monitor_forget(t, sizeof(t[0]), 3, (const struct monitor_gen[]){ { orders, 2 } }, 1), 0);
}

Test(monitor, forget_with_nothing_live_or_nothing_kept)
{
	struct entry t[2] = { { { products, 1 }, 1 }, { { products, 2 }, 2 } };
	const struct monitor_gen live[] = { { products, 1 }, { products, 2 } };

	cr_assert_eq(monitor_forget(t, sizeof(t[0]), 0, live, 2), 0);
	cr_assert_eq(monitor_forget(t, sizeof(t[0]), 2, live, 2), 2);
	cr_assert(t[0].value == 1 && t[1].value == 2);
	cr_assert_eq(monitor_forget(t, sizeof(t[0]), 2, NULL, 0), 0);
}

/* The entry of `g`, added if absent and there is room (as the monitor's tables do); NULL if full. */
static struct entry *slot(struct entry *t, int *n, struct monitor_gen g)
{
	for (int i = 0; i < *n; i++)
		if (t[i].key.proj == g.proj && t[i].key.gen == g.gen)
			return &t[i];
	if (*n == SLOTS)
		return NULL;
	t[*n].key = g;
	t[*n].value = 0;
	return &t[(*n)++];
}

/*
 * 300 rebuilds of two projections, each a tick with both generations and a
 * tick with the new one only, as the monitor's tick sees them: every live
 * generation keeps an entry of its own (without forgetting, generation 65 of
 * each projection found the table full).
 */
Test(monitor, room_for_generations_rebuild_after_rebuild)
{
	static struct entry t[SLOTS];
	int n = 0;

	for (int gen = 1; gen <= 300; gen++) {
		for (int step = 0; step < 2; step++) {
			struct monitor_gen live[4];
			int n_live = 0;
			for (int k = 0; k < 2; k++) {
				const struct projection *p = k ? orders : products;
				if (gen > 1 && step == 0)
					live[n_live++] = (struct monitor_gen){ p, gen - 1 };
				live[n_live++] = (struct monitor_gen){ p, gen };
			}
			n = monitor_forget(t, sizeof(t[0]), n, live, n_live);
			cr_assert_leq(n, n_live);
			for (int i = 0; i < n_live; i++) {
				struct entry *e = slot(t, &n, live[i]);
				cr_assert_not_null(e, "no room for %s generation %d after %d rebuilds", live[i].proj->name,
						   live[i].gen, gen - 1);
				e->value++;
			}
		}
		/* the new generation's entry was its own from its first tick: two ticks counted */
		for (int i = 0; i < n; i++)
			if (t[i].key.gen == gen)
				cr_assert_eq(t[i].value, 2, "%s generation %d counted %ld ticks", t[i].key.proj->name, gen,
					     t[i].value);
	}
}
